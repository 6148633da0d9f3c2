"""Predict the digit in each of the user's images with a trained model."""

import sys
from typing import NamedTuple

import numpy as np

from digits.backend import load_keras
from digits.errors import IMAGE_SIZE, NUM_CLASSES, InputError
from digits.photos import read_image, to_mnist_form
from digits.settings import EVAL_BATCH_SIZE

UNSURE = 0.9  # below this confidence the runner-up digits are printed too


def load_trained_model(path):
    """The Keras model at `path` that reads 28x28x1 digits into 10 classes, or an InputError."""
    if not path.is_file():
        raise InputError(f"no trained model at {path}")
    keras = load_keras()
    try:
        model = keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 -- a truncated or foreign file: Keras raises many kinds, some misleading
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise InputError(f"{path} is damaged or not a Keras model file ({reason})")
    expected = (None, IMAGE_SIZE, IMAGE_SIZE, 1)
    if tuple(getattr(model, "input_shape", ())) != expected or model.output_shape != (None, NUM_CLASSES):
        raise InputError(f"{path} is a model for inputs {getattr(model, 'input_shape', '?')} and outputs "
                         f"{model.output_shape}, not 28x28 digits to 10 classes")
    return model


class Prediction(NamedTuple):
    """One image read: its name, a small copy in its own colours, the 28x28 digit the model saw,
    the digit it read and how sure it was."""

    name: str
    preview: np.ndarray
    digit: np.ndarray
    label: int
    confidence: float


class Predictions(NamedTuple):
    """The images that were read, and how many could not be."""

    results: list
    failed: int


def predict_images(model, paths):
    """Print one line per image and return Predictions; an unreadable or blank image gets its own
    line on stderr and the rest are still predicted, together, in batches of up to 1,000."""
    readable, failed = [], 0
    for path in paths:
        try:
            gray, preview = read_image(path)
            digit = to_mnist_form(gray)
            if digit is None:
                raise InputError("blank image: no digit found")
        except InputError as e:
            print(f"{path}: error: {e}", file=sys.stderr)
            failed += 1
        else:
            readable.append((path, preview, digit))  # the small copy only: a photo's pixels are let go
    if not readable:
        return Predictions([], failed)
    digits = np.stack([digit for _, _, digit in readable])[..., None]
    results = []
    batch = min(len(digits), EVAL_BATCH_SIZE)
    for (path, preview, digit), probabilities in zip(readable, model.predict(digits, batch_size=batch, verbose=0)):
        ranked = np.argsort(probabilities)[::-1]
        line = f"{path}: {ranked[0]} ({probabilities[ranked[0]]:.1%})"
        if probabilities[ranked[0]] < UNSURE:  # unsure: show what else it might be
            line += ", else " + ", ".join(f"{d} ({probabilities[d]:.1%})" for d in ranked[1:3])
        print(line)
        results.append(Prediction(str(path), preview, digit, int(ranked[0]), float(probabilities[ranked[0]])))
    return Predictions(results, failed)
