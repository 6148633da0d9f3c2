"""The pictures of a run: confusion matrix, training curves, misclassified digits, learned
filters, and the predictions on the user's own images. Files only, no window."""

import warnings
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")  # files only, no window: runs on servers and in CI

import matplotlib.pyplot as plt
import numpy as np

from digits.errors import IMAGE_SIZE, NUM_CLASSES, percent, printable


def save_figure(fig, path):
    """Save the figure as a PNG and free it, whatever happens. A file name in a script the font lacks
    is drawn as boxes, without a warning on the terminal, which shows it."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Glyph .* missing from font", UserWarning)
            fig.savefig(path, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_confusion_matrix(confusion, accuracy, path):
    """Counts in every cell; colour only for the mistakes, so the off-diagonal cells stand out."""
    save_figure(confusion_figure(confusion, accuracy), path)


def confusion_figure(confusion, accuracy, ax=None, title=None):
    """The confusion matrix's figure (drawn on `ax`, where given; `title` in place of the usual one);
    its colour bar is a share of the true digit's images, in per cent."""
    import seaborn as sns
    from matplotlib.ticker import PercentFormatter  # SciPy's statistics come with it: loaded only for this picture

    support = confusion.sum(axis=1, keepdims=True)
    error_share = 100 * confusion / np.maximum(support, 1)
    diagonal = np.eye(NUM_CLASSES, dtype=bool)
    labels = np.where(confusion > 0, confusion.astype(str), "")
    fig, ax = plt.subplots(figsize=(9, 7.5)) if ax is None else (ax.figure, ax)
    sns.heatmap(error_share, mask=diagonal, annot=labels, fmt="", cmap="Reds", vmin=0,
                vmax=max(error_share[~diagonal].max(), 0.5), linewidths=0.5, linecolor="#dddddd",
                cbar_kws={"label": "share of the true digit's images predicted as this digit"}, ax=ax)
    sns.heatmap(confusion, mask=~diagonal, annot=labels, fmt="", cmap=["#d9ead3"], cbar=False,
                annot_kws={"color": "#274e13", "weight": "bold"}, linewidths=0.5, linecolor="#dddddd", ax=ax)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(title or f"Confusion matrix: test accuracy {accuracy:.2%} on {int(confusion.sum()):,} images\n"
                          f"green diagonal = correct; red = mistakes, darker = a larger share of that digit",
                 fontsize=11)
    ax.tick_params(axis="y", rotation=0)
    colour_bar = ax.collections[0].colorbar
    colour_bar.ax.yaxis.set_major_formatter(PercentFormatter(decimals=None))  # 0.5%, not a 0.5 read as half
    return fig


def plot_before_after(before, after, mnist_before, mnist_after, path):
    """--adapt's picture: your held-out digits' accuracy per digit before and after (bars), and the
    confusion matrices before and after side by side, with MNIST's test accuracy before and after."""
    fig, axes = plt.subplots(1, 3, figsize=(22, 6.5), layout="constrained", width_ratios=[1, 1.15, 1.15])
    per_digit = [np.diag(e.confusion) / np.maximum(e.confusion.sum(axis=1), 1) for e in (before, after)]
    digits = np.arange(NUM_CLASSES)
    for offset, share, colour, name in ((-0.2, per_digit[0], "#bbbbbb", "before"),
                                        (0.2, per_digit[1], "#3d78d8", "after")):
        axes[0].bar(digits + offset, 100 * share, width=0.4, color=colour, label=name)
    axes[0].set(xticks=digits, ylim=(0, 105), xlabel="Digit", ylabel="Held-out images read right (%)")
    axes[0].legend(loc="lower right")
    axes[0].set_title(f"Your held-out digits: {before.accuracy:.1%} -> {after.accuracy:.1%}\n"
                      f"MNIST test: {mnist_before:.2%} -> {mnist_after:.2%}", fontsize=11)
    held = int(before.confusion.sum())
    for ax, evaluation, when in ((axes[1], before, "Before"), (axes[2], after, "After")):
        confusion_figure(evaluation.confusion, evaluation.accuracy, ax, f"{when}: {evaluation.accuracy:.1%} of your "
                         f"{held} held-out digits\ngreen diagonal = correct; red = mistakes")
    fig.suptitle("Adapted to your handwriting: measured on your digits it never trained on", fontsize=13)
    save_figure(fig, path)


def plot_training_curves(history, watched, path):
    """Loss and accuracy per epoch, training and the watched set ('test' or 'validation': the history's
    `test_loss` or `val_loss`, digits.training.watched_names)."""
    epochs = np.arange(1, len(history["loss"]) + 1)
    label = ("validation (held-out training images)" if watched == "validation"
             else "test (watched only, never used to tune)")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[metric], "o-", label="training")
        ax.plot(epochs, history[f"{'test' if watched == 'test' else 'val'}_{metric}"], "s--", label=label)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves")
    save_figure(fig, path)


def plot_misclassified(x_test, y_test, evaluation, path, limit=36):
    """The misclassified test digits, most confident mistakes first, at most `limit`."""
    predicted, probabilities = evaluation.predicted, evaluation.probabilities
    wrong = np.flatnonzero(predicted != y_test)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:limit]  # most confident first
    columns = 6
    rows = max(1, -(-len(wrong) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 2.0 * rows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(x_test[i], cmap="gray_r")
        ax.set_title(f"true {y_test[i]}, pred {predicted[i]}\n{percent(probabilities[i, predicted[i]], 0)} sure",
                     fontsize=9, color="#990000")
    total = int((predicted != y_test).sum())
    if total == 0:
        title = "No misclassified test digits"
    elif total == len(wrong):
        title = f"{total} misclassified test digit{'s' if total > 1 else ''}, most confident first"
    else:
        title = f"{total} misclassified test digits; the {len(wrong)} most confident mistakes"
    fig.suptitle(title)
    save_figure(fig, path)


def grid_shape(count, most_columns=16):
    """(rows, columns) for `count` small images, at most `most_columns` a row."""
    columns = min(most_columns, count)
    return -(-count // columns), columns


def plot_filters(model, digit, path, most=64):
    """The first convolution's learned kernels, and one digit seen through the first two convolutions.

    Any architecture: the first two Conv2D layers in the model's order, whatever their channel counts
    (a model with one convolution shows one). Where the first convolution reads several input
    channels, its kernels for channel 0 are shown; beyond `most` channels, the first `most`.
    """
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][:2]
    weights = convs[0].get_weights()[0]  # (height, width, input channels, filters)
    kernels = weights[:, :, 0, :]
    outputs = keras.Model(model.inputs, [conv.output for conv in convs]).predict(digit[None], verbose=0)
    maps = [np.asarray(m[0], np.float32) for m in (outputs if isinstance(outputs, list) else [outputs])]

    def shown(count, what):
        return f"{count} {what}" if count <= most else f"the first {most} of {count} {what}"

    channel = " for input channel 0" if weights.shape[2] > 1 else ""
    kernel_size = f"{weights.shape[0]}x{weights.shape[1]}"
    learned = shown(weights.shape[-1], f"learned {kernel_size} kernels")
    sections = [(kernels, f"First convolution: {learned}{channel} (red positive, blue negative)")]
    for m, name in zip(maps, ("The digit through the first convolution", "Through the second convolution")):
        sections.append((m, f"{name} ({shown(m.shape[-1], 'feature maps')}, {m.shape[0]}x{m.shape[1]})"))
    limit = np.abs(kernels).max() or 1  # one colour scale for all kernels, zero in white
    shapes = [grid_shape(min(images.shape[-1], most)) for images, _ in sections]
    cell = 0.75  # inches for each small image
    widest = max(columns for _, columns in shapes) + 1  # + 1: the input digit beside the first feature maps
    heights = [rows * cell + 0.45 for rows, _ in shapes]  # + room for the section's title
    # Each section one image, its small images tiled with a gap: a few axes draw much faster than a hundred.
    fig = plt.figure(figsize=(max(8, widest * cell), sum(heights)), layout="constrained")
    grid = fig.add_gridspec(len(sections), widest, height_ratios=heights)
    for k, ((images, title), (_, columns)) in enumerate(zip(sections, shapes)):
        images = np.moveaxis(images[..., : min(images.shape[-1], most)], -1, 0)
        if k == 0:
            tiles, style = images / limit, {"cmap": "RdBu_r", "vmin": -1, "vmax": 1}
        else:  # each map on its own scale, as imshow would give it alone
            low = images.min(axis=(1, 2), keepdims=True)
            tiles, style = (images - low) / np.maximum(images.max(axis=(1, 2), keepdims=True) - low, 1e-12), {}
        ax = fig.add_subplot(grid[k, 1 : columns + 1] if k == 1 else grid[k, :columns])
        ax.imshow(mosaic(tiles, columns), interpolation="nearest", **({"cmap": "viridis"} | style))
        ax.set_axis_off()
        ax.set_title(title, fontsize=11)
        if k == 1:
            first = fig.add_subplot(grid[k, 0])
            first.imshow(digit[:, :, 0], cmap="gray_r")
            first.set_title("input", fontsize=9)
            first.set_axis_off()
    save_figure(fig, path)


def mosaic(images, columns, gap=1):
    """(count, height, width) images tiled `columns` a row, `gap` blank pixels between (NaN: not drawn)."""
    count, height, width = images.shape
    rows = -(-count // columns)
    tiled = np.full((rows * (height + gap) - gap, columns * (width + gap) - gap), np.nan, np.float32)
    for i, image in enumerate(images):
        top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
        tiled[top : top + height, left : left + width] = image
    return tiled


def short_name(path, width=24):
    """The file's name, its stem shortened with an ellipsis so that the extension always shows;
    characters that do not print (a newline, an escape) as repr writes them."""
    name = printable(Path(path).name)
    if len(name) <= width:
        return name
    suffix = printable(Path(path).suffix[:8])
    return printable(Path(path).stem)[: max(1, width - len(suffix) - 1)] + "\u2026" + suffix


def plot_predictions(results, path, limit=24):
    """Each input, in its own colours, with a box around each digit found and the digit read above
    it, beside the 28x28 images the model saw, left to right; four pairs a row.

    `results` are digits.predict.Prediction.
    """
    from matplotlib.patches import Rectangle

    shown = results[:limit]
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(3.2 * columns, 1.9 * rows + 0.5), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    pairs = axes.reshape(rows * columns, 2)
    for result, (left, right) in zip(shown, pairs):
        left.imshow(result.preview)
        left.set_title(short_name(result.name), fontsize=8)
        scale_y, scale_x = (result.preview.shape[k] / result.size[k] for k in (0, 1))
        several = len(result.labels) > 1
        for (x0, y0, x1, y1), label in zip(result.boxes, result.labels):
            if several:  # one digit: its box would only frame the picture
                left.add_patch(Rectangle((x0 * scale_x - 0.5, y0 * scale_y - 0.5), (x1 - x0) * scale_x,
                                         (y1 - y0) * scale_y, fill=False, edgecolor="#d62728", linewidth=1))
                left.text((x0 + x1) / 2 * scale_x, y0 * scale_y - 1, str(label), color="#d62728", fontsize=8,
                          ha="center", va="bottom", weight="bold", clip_on=False)
        gap = np.full((IMAGE_SIZE, 2), 0.5, np.float32)  # a grey line between the digits
        strip = np.concatenate([part for digit in result.digits for part in (gap, digit)][1:], axis=1)
        right.imshow(strip, cmap="gray", vmin=0, vmax=1)
        sees = (f"{result.number}" if several else f"{result.labels[0]} ({percent(result.confidences[0], 0)})")
        right.set_title(f"sees: {sees}", fontsize=8)
    more = f" (the first {limit} of {len(results)})" if len(results) > limit else ""
    fig.suptitle(f"Your images, the digits found in them, and the 28x28 digits the model saw{more}")
    save_figure(fig, path)
