"""--evaluate: a trained model measured on the user's own labelled digits (DIR/0/ ... DIR/9/), with
the same report as a training run's test set: the per-digit table, the most confused pairs, the
confusion matrix, the mistakes (each original beside what the network saw) and metrics.json.

The model is passed in; Matplotlib (through digits.pictures) loads only to draw.
"""

import sys
from typing import NamedTuple

import numpy as np

from digits import evaluation, folders, outputs
from digits.errors import InputError, percent, printable
from digits.photos import read_image


class Measured(NamedTuple):
    """What --evaluate measured: the images read, the model's Evaluation of them, and the metrics."""

    read: folders.FolderImages
    result: evaluation.Evaluation
    metrics: dict


def measure(model, folder, files, model_path):
    """Read the listed files (folders.list_labelled), report each one left out on stderr, and evaluate
    the model on the rest. Raises InputError when none could be read."""
    read = folders.read_labelled(folder, files)
    for skipped in read.skipped:
        print(f"{printable(skipped.path)}: error: {skipped.reason}", file=sys.stderr)
    if not len(read.labels):
        raise InputError(f"none of the {len(files):,} images in {folder} could be read (each is listed above): "
                         f"give images of one digit each, any format --predict reads")
    result = evaluation.evaluate(model, read.images, read.labels)
    per_class = evaluation.per_class_report(result.confusion)
    metrics = {
        "test_accuracy": result.accuracy,
        "test_loss": result.loss,
        "images": len(read.labels),
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in read.skipped],
        "per_class": per_class,
        "most_confused": evaluation.most_confused(result.confusion),
        "confusion_matrix": result.confusion.tolist(),
        "folder": str(folder),
        "model": str(model_path),
        "predictions": [{"path": str(path), "label": int(label), "predicted": int(predicted),
                         "confidence": round(float(probabilities[predicted]), 6)}
                        for path, label, predicted, probabilities
                        in zip(read.paths, read.labels, result.predicted, result.probabilities)],
    }
    return Measured(read, result, metrics)


def plot_mistakes(read, result, path, limit=24):
    """The misclassified images, most confident mistakes first: each original, in its own colours, beside
    the 28x28 image the network saw, four pairs a row."""
    import matplotlib.pyplot as plt

    from digits.pictures import save_figure, short_name  # Matplotlib, only to draw

    predicted, probabilities = result.predicted, result.probabilities
    wrong = np.flatnonzero(predicted != read.labels)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")]
    shown = wrong[:limit]
    columns = max(1, min(4, len(shown)))
    rows = max(1, -(-len(shown) // columns))
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(3.2 * columns + 0.4, 2.0 * rows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    for i, (left, right) in zip(shown, axes.reshape(rows * columns, 2)):
        try:
            preview = read_image(read.paths[i])[1]  # read again: only the shown ones are kept in memory
        except InputError:  # changed on disk since: show what the network saw only
            preview = np.full((8, 8, 3), 255, np.uint8)
        left.imshow(preview)
        left.set_title(short_name(read.paths[i], 20), fontsize=8)
        right.imshow(read.images[i], cmap="gray", vmin=0, vmax=255)
        sure = percent(probabilities[i, predicted[i]], 0)
        right.set_title(f"true {read.labels[i]}, sees {predicted[i]}\n{sure} sure", fontsize=8, color="#990000")
    total = len(wrong)
    if total == 0:
        title = f"No mistakes on your {len(read.labels):,} digits"
    else:
        first = f"; the {limit} most confident" if total > limit else ", most confident first"
        title = (f"{total} of your {len(read.labels):,} digits misread{first}\n"
                 f"each image beside the 28x28 digit the model saw")
    fig.suptitle(title)
    save_figure(fig, path)


def report(measured, output_dir):
    """Print the per-digit table, the most confused pairs and the accuracy, and publish the confusion
    matrix, the mistakes and metrics.json together, or none of them. Returns the exit status: 1 if one
    could not be written."""
    from digits import pictures  # Matplotlib and Seaborn: loaded only now

    read, result, metrics = measured
    reports = [
        ("confusion_matrix.png", lambda p: pictures.plot_confusion_matrix(result.confusion, result.accuracy, p)),
        ("misclassified.png", lambda p: plot_mistakes(read, result, p)),
        ("metrics.json", lambda p: outputs.write_json(metrics, p)),
    ]
    print(evaluation.format_report(metrics["per_class"], metrics["most_confused"]))
    if read.skipped:
        print(f"Left out: {len(read.skipped)} image{'s' * (len(read.skipped) != 1)} that could not be read "
              f"or held no digit (each named on stderr, with its error)")  # this line is on stdout
    print(f"Images: {len(read.labels):,} of your digits")
    print(f"Test accuracy: {result.accuracy:.4f}")
    try:
        with outputs.staging_folder(output_dir) as staging:
            published = outputs.publish(staging, output_dir, outputs.write_outputs(reports, staging))
    except outputs.NotSaved as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("Saved: " + ", ".join(printable(path) for path in published.done))
    return 0
