"""Evaluation: predict every test image once; the loss, the accuracy, the confusion matrix and the
per-digit report all come from those predictions. NumPy only: the model is passed in."""

from typing import NamedTuple

import numpy as np

from digits.data import preprocess
from digits.errors import NUM_CLASSES
from digits.settings import EVAL_BATCH_SIZE


class Evaluation(NamedTuple):
    """A model's predictions on a labelled set, and what follows from them."""

    loss: float
    accuracy: float
    probabilities: np.ndarray  # (N, 10)
    predicted: np.ndarray  # (N,) digits
    confusion: np.ndarray  # (10, 10): rows true digit, columns predicted


def confusion_matrix(labels, predicted):
    """Rows true digit, columns predicted: the same matrix as tf.math.confusion_matrix."""
    return np.bincount(labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def evaluate(model, images, labels):
    """Predict every image (uint8 (N, 28, 28)) once; an Evaluation."""
    probabilities = model.predict(preprocess(images), batch_size=EVAL_BATCH_SIZE, verbose=0)
    predicted = probabilities.argmax(axis=1)
    # Keras' cross-entropy clips probabilities the same way
    loss = float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1)).mean())
    confusion = confusion_matrix(labels, predicted)
    accuracy = float(np.trace(confusion) / confusion.sum())
    return Evaluation(loss, accuracy, probabilities, predicted, confusion)


def per_class_report(confusion):
    """Precision, recall, F1 and support for each digit, read off the confusion matrix.

    None (n/a) where a ratio has nothing to divide by: a digit never predicted has no precision,
    one with no test images no recall.
    """

    def ratio(part, whole):
        return float(part / whole) if whole else None

    report = {}
    for digit in range(NUM_CLASSES):
        correct = confusion[digit, digit]
        precision, recall = ratio(correct, confusion[:, digit].sum()), ratio(correct, confusion[digit].sum())
        f1 = (ratio(2 * precision * recall, precision + recall) if precision is not None and recall is not None
              else None)
        report[str(digit)] = {"precision": precision, "recall": recall, "f1": f1,
                              "support": int(confusion[digit].sum())}
    return report


def most_confused(confusion, top=5):
    """The `top` largest mistakes, as {"true", "predicted", "count"}, largest first."""
    mistakes = confusion * (1 - np.eye(NUM_CLASSES, dtype=confusion.dtype))
    order = np.argsort(mistakes, axis=None)[::-1][:top]
    pairs = [np.unravel_index(i, mistakes.shape) for i in order]
    return [{"true": int(t), "predicted": int(p), "count": int(mistakes[t, p])} for t, p in pairs if mistakes[t, p] > 0]


def format_report(per_class, confused):
    """The per-digit table and the most-confused pairs, as printed at the end of a run."""

    def cell(value, width):
        return f"{'n/a' if value is None else f'{value:.4f}':>{width}}"

    lines = ["digit  precision  recall      f1  support"]
    lines += [f"{digit:>5}  {cell(r['precision'], 9)}  {cell(r['recall'], 6)}  {cell(r['f1'], 6)}  {r['support']:7d}"
              for digit, r in per_class.items()]
    lines.append("Most confused (true -> predicted: count): "
                 + (", ".join(f"{c['true']} -> {c['predicted']}: {c['count']}" for c in confused) or "none"))
    return "\n".join(lines)
