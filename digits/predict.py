"""Read the number (one digit or several) in each of the user's images with a trained model."""

import functools
import sys
from typing import NamedTuple

import numpy as np

from digits.backend import load_keras
from digits.errors import IMAGE_SIZE, NUM_CLASSES, InputError, one_line, percent, printable
from digits.numbers import UNSURE, doubt, find_digits
from digits.photos import read_image
from digits.reader import read_strips
from digits.settings import EVAL_BATCH_SIZE

KERAS_FILE_STARTS = (b"PK\x03\x04", b"\x89HDF\r\n\x1a\n")  # a .keras file is a zip archive; legacy .h5 is HDF5


def load_trained_model(path):
    """The Keras model at `path` that reads 28x28x1 digits into 10 classes, or an InputError."""
    if not path.is_file():
        raise InputError(f"no trained model at {path}")
    try:
        with open(path, "rb") as file:
            start = file.read(8)
    except OSError as e:
        raise InputError(f"cannot read {path} ({e.strerror or type(e).__name__})")
    if not start.startswith(KERAS_FILE_STARTS):  # Keras' own message for these is long, and misleading
        raise InputError(f"{path} is not a Keras model file (neither a .keras zip archive nor an .h5 file)")
    keras = load_keras()
    try:
        model = keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 -- a truncated or foreign file: Keras raises many kinds, some misleading
        reason = one_line(e)
        reason = reason if len(reason) <= 120 and reason.count("(") == reason.count(")") else type(e).__name__
        raise InputError(f"{path} is damaged or not a Keras model file ({reason})")
    expected = (None, IMAGE_SIZE, IMAGE_SIZE, 1)
    if tuple(getattr(model, "input_shape", ())) != expected or model.output_shape != (None, NUM_CLASSES):
        raise InputError(f"{path} is a model for inputs {getattr(model, 'input_shape', '?')} and outputs "
                         f"{model.output_shape}, not 28x28 digits to 10 classes")
    return model


class Prediction(NamedTuple):
    """One image read: its name, a small copy in its own colours, the size of the picture the digits
    were found in, and for each digit, left to right, its box there, the 28x28 image the model saw,
    the digit it read and how sure it was."""

    name: str
    preview: np.ndarray
    size: tuple  # (height, width) of the picture the boxes are in
    boxes: list
    digits: list
    labels: list
    confidences: list

    @property
    def number(self):
        """The digits read, left to right, as a string: '7', '1024'."""
        return "".join(map(str, self.labels))


class Predictions(NamedTuple):
    """The images that were read, and how many could not be."""

    results: list
    failed: int


def read_pieces(path, reader=None, notes=None, network=None):
    """(preview, picture size, the digits found) for one image, or an InputError with a one-line reason;
    `reader` and `network`: find_digits' (the number reader, the default network); `notes`: read_image's
    (a GIF's frames, say)."""
    gray, preview = read_image(path, notes=notes)
    pieces = find_digits(gray, reader, network)
    if not pieces:
        raise InputError("blank image: no digit found")
    return preview, gray.shape, pieces  # the small copy only: a photo's pixels are let go


def reading(probabilities, unsure=None):
    """What one image's line says after its name: '7 (99.8%)', with the runners-up when unsure, for
    one digit; '1024 (1 99.9%, 0 98.1%, 2 99.9%, 4 97.0%)' for several (100% only for a probability of
    exactly 1: errors.percent). `unsure`: why the reading
    may be wrong (numbers.doubt: letters, a scribble), said after it."""
    why = f"; unsure: {unsure}" if unsure else ""
    if len(probabilities) == 1:
        ranked = np.argsort(probabilities[0])[::-1]
        line = f"{ranked[0]} ({percent(probabilities[0][ranked[0]])})"
        if probabilities[0][ranked[0]] < UNSURE:  # unsure: show what else it might be
            line += ", else " + ", ".join(f"{d} ({percent(probabilities[0][d])})" for d in ranked[1:3])
        return line + why
    labels = [int(np.argmax(p)) for p in probabilities]
    each = ", ".join(f"{d} {percent(p[d])}" for d, p in zip(labels, probabilities))
    return "".join(map(str, labels)) + f" ({each})" + why


def predict_images(model, paths, reader=None):
    """Print one line per image, in the order given (an image of several frames, read by its first, gets
    a line that says so before it), and return Predictions: an unreadable or blank
    image, or one holding more than a number, gets its line on stderr, in its place, and the rest
    are still predicted. `reader`: the number reader model, which reads the numbers; the single
    digits are read by `model`, all together, in batches of up to 1,000."""
    read, failed = [], 0  # (path, its pieces or its error, the notes on reading it)
    line_reader = None if reader is None else functools.partial(read_strips, reader)
    network = lambda digits: np.asarray(model.predict_on_batch(digits[..., None]))  # noqa: E731 -- find_digits'
    for path in paths:
        notes = []
        try:
            found = read_pieces(path, line_reader, notes, network)
        except InputError as e:
            found, failed = e, failed + 1
        read.append((path, found, notes))
    digits = [piece.digit for _, found, _ in read if not isinstance(found, InputError) for piece in found[2]
              if piece.probabilities is None]
    answers = iter([])
    if digits:
        digits = np.stack(digits)[..., None]
        answers = iter(model.predict(digits, batch_size=min(len(digits), EVAL_BATCH_SIZE), verbose=0))
    results = []
    for path, found, notes in read:
        for note in notes:  # its own line, before the reading: "x.gif: 3 frames, read the first"
            print(f"{printable(path)}: {note}", flush=True)
        if isinstance(found, InputError):
            sys.stdout.flush()  # each line where it belongs, on a terminal showing both streams
            print(f"{printable(path)}: error: {found}", file=sys.stderr, flush=True)
            continue
        preview, size, pieces = found
        probabilities = [next(answers) if piece.probabilities is None else piece.probabilities for piece in pieces]
        print(f"{printable(path)}: {reading(probabilities, doubt(pieces, probabilities))}", flush=True)
        labels = [int(np.argmax(p)) for p in probabilities]
        results.append(Prediction(str(path), preview, size, [piece.box for piece in pieces],
                                  [piece.digit for piece in pieces], labels,
                                  [float(p[d]) for p, d in zip(probabilities, labels)]))
    return Predictions(results, failed)
