"""A whole number in one picture: the line of ink found, put in the reader's form and read as a whole.

The ink is found as photos.to_mnist_form finds it (the same paper, light and noise removal), at up to
SEGMENT_SIZE pixels; digits.lines puts the line in the strip the number reader reads (digits.reader),
which says the digits and where each is. Each digit's box is where the reader saw it, out to the
emptiest column between it and its neighbours. A picture the reader finds one digit in is read by the
default network as a single digit always was: to_mnist_form of the whole picture. No Keras.
"""

from typing import NamedTuple

import numpy as np

from digits.errors import IMAGE_SIZE, InputError
from digits.lines import MARGIN, line_form
from digits.photos import centred, clean_ink, to_mnist_form

MAX_PIECES = 20  # a phone number is 10-12 digits; more than this is a page, not a number
SEGMENT_SIZE = 512  # longer side the line is found at: 40 pixels a digit for a 12-digit phone number
STEP = 2  # strip pixels per step of the reader's sequence (digits.reader.STEP)


class Piece(NamedTuple):
    """One digit found in a picture: where it is, the 28x28 image of it in MNIST's form, and the
    number reader's ten probabilities for it (None: one digit alone, for the default network to read;
    `unsure` then says the reader saw no digit at all: letters, a scribble)."""

    box: tuple  # (left, top, right, bottom) in the picture's pixels, right and bottom exclusive
    digit: np.ndarray  # 28x28 float32 in [0, 1], MNIST's form
    probabilities: np.ndarray | None = None
    unsure: bool = False


def read_line(ink, reader, scale=(1.0, 1.0)):
    """The digits of a line of ink (light on black, in [0, 1]) as Pieces, left to right, read by
    `reader` (a function from a list of strips to digits.reader Readings); [] when it holds no ink.
    `scale`: picture pixels per ink pixel (y, x), so that boxes are in the picture's pixels."""
    strip = line_form(ink)
    if strip is None:
        return []
    reading = reader([strip.pixels])[0]
    if len(reading.number) > MAX_PIECES:
        raise TooManyDigits(len(reading.number))
    ink_column = lambda column: strip.left + (column - MARGIN) / strip.scale  # noqa: E731 -- strip -> ink
    columns = strip.pixels.sum(axis=0)
    edges = [0]  # strip columns where one digit ends and the next begins: the emptiest between their steps
    for (_, last), (first, _) in zip(reading.spans, reading.spans[1:]):
        between = columns[STEP * last : STEP * (first + 1)]
        emptiest = np.flatnonzero(between == between.min())
        edges.append(STEP * last + int(emptiest[len(emptiest) // 2]))
    edges.append(strip.pixels.shape[1])
    pieces = []
    for k in range(len(reading.number)):
        left = max(0, int(np.floor(ink_column(edges[k]))))
        right = min(ink.shape[1], int(np.ceil(ink_column(edges[k + 1]))))
        part = np.zeros_like(ink[strip.top : strip.bottom])
        part[:, left:right] = ink[strip.top : strip.bottom, left:right]
        rows, cols = np.flatnonzero(part.max(axis=1) > 0), np.flatnonzero(part.max(axis=0) > 0)
        if rows.size:  # the box holds the digit's own ink
            top, bottom, left, right = strip.top + rows[0], strip.top + rows[-1] + 1, cols[0], cols[-1] + 1
        else:
            top, bottom = strip.top, strip.bottom
        digit = centred(part) if rows.size else np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
        box = (int(left * scale[1]), int(top * scale[0]),
               int(np.ceil(right * scale[1])), int(np.ceil(bottom * scale[0])))
        pieces.append(Piece(box, digit, np.asarray(reading.probabilities[k], np.float32)))
    return pieces


def find_digits(gray, reader=None):
    """The digits in a grayscale picture (2-D float array in [0, 1]), left to right, as Pieces.

    `reader`: the number reader, a function from a list of strips to Readings (digits.reader's
    read_strips with its model). Without it, or where it finds one digit or none, the picture is one
    digit, in to_mnist_form. Returns [] when the picture holds no ink. Raises InputError when the
    reader finds more than MAX_PIECES digits (a page of text, not a number).
    """
    whole = to_mnist_form(gray)  # exactly what a picture of one digit has always been read as
    if whole is None:
        return []
    height, width = gray.shape
    one = Piece((0, 0, width, height), whole)
    if reader is None or (height, width) == (IMAGE_SIZE, IMAGE_SIZE):  # MNIST's own size holds one digit
        return [one]
    ink = clean_ink(gray, SEGMENT_SIZE, step=2)
    if ink is None:
        return [one]
    pieces = read_line(ink, reader, (height / ink.shape[0], width / ink.shape[1]))
    if len(pieces) > 1:
        return pieces
    return [one._replace(box=pieces[0].box if pieces else one.box, unsure=not pieces)]


class TooManyDigits(InputError):
    """More digits than a number has: a page of writing, not a number."""

    def __init__(self, count):
        super().__init__(f"{count} digits found, more than the {MAX_PIECES} of a number (a page of writing?): "
                         f"crop the picture to the number")
        self.count = count


__all__ = ["MAX_PIECES", "InputError", "Piece", "TooManyDigits", "find_digits", "read_line"]
