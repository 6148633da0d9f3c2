"""A whole number in one picture: the line of ink found, put in the reader's form and read as a whole.

The ink is found as photos.to_mnist_form finds it (the same paper, light and noise removal), at up to
SEGMENT_SIZE pixels; digits.lines puts the line in the strip the number reader reads (digits.reader),
which says the digits and where each is. Each digit's box is where the reader saw it, out to the
emptiest column between it and its neighbours. A picture the reader finds one digit in is read by the
default network as a single digit always was: to_mnist_form of the whole picture; so is ink too narrow
for the digits the reader reads in it, unless the default network reads each of them as it does. No Keras.
"""

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from digits.errors import IMAGE_SIZE, InputError, percent
from digits.lines import INK, MARGIN, SPECK, STEP, line_form
from digits.photos import centred, clean_ink, to_mnist_form

MAX_PIECES = 20  # a phone number is 10-12 digits; more than this is a page, not a number
SEGMENT_SIZE = 512  # longer side the line is found at: 40 pixels a digit for a 12-digit phone number
NARROW = 1.25  # of its height: one mark no wider than this is one digit, whatever the reader reads in it
TWO_STROKES = 4.5  # ink narrower than this many strokes is one digit (a bold digit cropped tight)
UNSURE = 0.9  # a digit read less surely than this is unsure
AGREE = 0.98  # one narrow mark is the reader's digits if the default network reads each as it does, this surely
NO_DIGIT = "the number reader sees no digit here"


class Piece(NamedTuple):
    """One digit found in a picture: where it is, the 28x28 image of it in MNIST's form, and the
    number reader's ten probabilities for it (None: one digit alone, for the default network to read;
    `seen` then holds what the reader made of it, and `unsure` why the reader doubts it is one digit:
    it saw none, or read several in ink too narrow for them; a number's digits in one narrow mark
    carry `unsure` too)."""

    box: tuple  # (left, top, right, bottom) in the picture's pixels, right and bottom exclusive
    digit: np.ndarray  # 28x28 float32 in [0, 1], MNIST's form
    probabilities: np.ndarray | None = None
    unsure: str | None = None
    seen: np.ndarray | None = None


def doubt(pieces, probabilities):
    """Why a reading is unsure, in words, or None: the digits found and the ten probabilities each was
    read with. Letters and scribbles are read as digits by both networks; what gives them away is that
    the number reader sees no digit, reads another digit than the default network, or is unsure, or
    that several digits are read in one narrow mark."""
    if len(pieces) == 1 and pieces[0].probabilities is None and (pieces[0].unsure or pieces[0].seen is not None):
        seen, label = pieces[0].seen, int(np.argmax(probabilities[0]))
        if pieces[0].unsure:
            return pieces[0].unsure
        if int(np.argmax(seen)) != label or seen.max() < UNSURE:
            return f"the number reader reads it as {int(np.argmax(seen))} ({percent(seen.max())})"
        return None
    if len(pieces) > 1 and pieces[0].unsure:
        return pieces[0].unsure
    least = min(float(np.max(p)) for p in probabilities)
    return f"its least sure digit is read at {percent(least)}" if len(pieces) > 1 and least < UNSURE else None


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


def find_digits(gray, reader=None, network=None):
    """The digits in a grayscale picture (2-D float array in [0, 1]), left to right, as Pieces.

    `reader`: the number reader, a function from a list of strips to Readings (digits.reader's
    read_strips with its model). Without it, or where it finds one digit or none, the picture is one
    digit, in to_mnist_form. So is ink too narrow for the digits the reader reads in it, unless it is
    one mark and `network` (the default network: (N, 28, 28) digits -> (N, 10) probabilities) reads
    each of them as the reader does, at AGREE or surer: two digits touching in one mark, read so and
    marked unsure (letters such as N and V pass that check too).
    Returns [] when the picture holds no ink. Raises InputError when the reader finds more than
    MAX_PIECES digits (a page of text, not a number).
    """
    height, width = gray.shape
    pieces, ink = [], None
    if reader is not None and (height, width) != (IMAGE_SIZE, IMAGE_SIZE):  # MNIST's own size holds one digit
        ink = clean_ink(gray, SEGMENT_SIZE, step=2)
        pieces = [] if ink is None else read_line(ink, reader, (height / ink.shape[0], width / ink.shape[1]))
        if len(pieces) > 1:
            narrow = _too_narrow_for_two(ink)
            if not narrow:
                return pieces
            if narrow == "one mark" and _agreed(pieces, network):  # touching digits, or letters: said so
                return [piece._replace(unsure=f"one narrow mark read as {len(pieces)} digits") for piece in pieces]
    whole = to_mnist_form(gray)  # exactly what a picture of one digit has always been read as
    if whole is None:
        return []
    one = Piece((0, 0, width, height), whole)
    if ink is None:  # no reader, MNIST's own size, or no ink at the size the line is found at
        return [one]
    if not pieces:
        return [one._replace(unsure=NO_DIGIT)]
    box = (min(p.box[0] for p in pieces), min(p.box[1] for p in pieces),
           max(p.box[2] for p in pieces), max(p.box[3] for p in pieces))
    if len(pieces) > 1:  # ink too narrow for the digits the reader read in it: one digit, said so
        number = "".join(str(int(np.argmax(p.probabilities))) for p in pieces)
        return [one._replace(box=box, unsure=f"the number reader reads {number} in ink narrow for one digit")]
    return [one._replace(box=box, seen=pieces[0].probabilities)]


def _agreed(pieces, network):
    """Whether `network` reads every piece as the reader did, each at AGREE or surer (a wide 4 the
    reader reads as 21: the default network reads its left part as a 2 at 90% at most)."""
    if network is None:
        return False
    probabilities = network(np.stack([piece.digit for piece in pieces]))
    return all(int(np.argmax(q)) == int(np.argmax(piece.probabilities)) and float(np.max(q)) >= AGREE
               for piece, q in zip(pieces, probabilities))


def _too_narrow_for_two(ink):
    """Why the ink is too narrow to be two digits, or None: "strokes" where it is narrower than
    TWO_STROKES of its strokes (a bold digit cropped tight, which the reader may read as two: two digits
    side by side are wider), "one mark" where it is one mark no wider than NARROW of its height."""
    mask = ink > INK
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    runs = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    stroke = float(np.median(np.nonzero(runs == -1)[1] - np.nonzero(runs == 1)[1]))
    width, height = cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1
    if width < TWO_STROKES * stroke:
        return "strokes"
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum_labels(mask, labels, np.arange(1, count + 1))
    return "one mark" if (sizes >= SPECK * sizes.max()).sum() == 1 and width <= NARROW * height else None


class TooManyDigits(InputError):
    """More digits than a number has: a page of writing, not a number."""

    def __init__(self, count):
        super().__init__(f"{count} digits found, more than the {MAX_PIECES} of a number (a page of writing?): "
                         f"crop the picture to the number")
        self.count = count


__all__ = ["AGREE", "MAX_PIECES", "UNSURE", "InputError", "Piece", "TooManyDigits", "doubt", "find_digits", "read_line"]
