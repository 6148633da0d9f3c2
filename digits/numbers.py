"""A whole number in one picture: find the digits, left to right, each in MNIST's form.

The ink is found as photos.to_mnist_form finds it (the same paper, light and noise removal), at up
to SEGMENT_SIZE pixels. Its connected parts are grouped into digits: parts that overlap along the
writing direction, or are too small to be a digit on their own (a dot, a dash, the hat of a 5), are
one digit; a part much wider than the digits around it (two digits that touch) is cut where its ink
is thinnest. Each digit is then cropped from the picture, with a margin of paper and the other
digits' ink painted out, and goes through to_mnist_form on its own. NumPy and Pillow only: no Keras.
"""

from typing import NamedTuple

import numpy as np
from PIL import Image

from digits.cuts import CUTTABLE_ALONE, parts_of, read_line
from digits.errors import IMAGE_SIZE, InputError
from digits.photos import _sliding, clean_ink, to_mnist_form
from digits.segment import GAP, group_parts, label, split_wide

MAX_PIECES = 20  # a phone number is 10-12 digits; more than this is a page, not a number
SEGMENT_SIZE = 512  # longer side the digits are found at: 40 pixels a digit for a 12-digit phone number
MAX_PARTS = 3000  # more separate bits of ink than this is a page of writing (or grain), refused at once
INK = 0.25  # of full ink: fainter pixels are not counted as the digits' ink
TWO_STROKES = 4  # a group of ink narrower than this many strokes is one digit, however wide for its height
MARGIN = 0.2  # of a digit's longer side: the paper left around it for to_mnist_form


class Piece(NamedTuple):
    """One digit found in a picture: where it is, and the 28x28 image the network reads."""

    box: tuple  # (left, top, right, bottom) in the picture's pixels, right and bottom exclusive
    digit: np.ndarray  # 28x28 float32 in [0, 1], MNIST's form


def find_digits(gray, reader=None):
    """The digits in a grayscale picture (2-D float array in [0, 1]), left to right.

    `reader`: the network, a function from a stack of 28x28 MNIST-form images to their ten
    probabilities each (N, 10). Given, a picture the rules find more than one digit in, or one group
    of ink wide enough to be two touching digits, is cut where the digits it makes are read surest
    (digits.cuts); without it, by rules alone (digits.segment).
    Returns [] when the picture holds no ink. Raises InputError when it holds more than MAX_PIECES
    pieces (a page of text, not a number).
    """
    whole = to_mnist_form(gray)  # exactly what a picture of one digit has always been read as
    if whole is None:
        return []
    height, width = gray.shape
    if (height, width) == (IMAGE_SIZE, IMAGE_SIZE):  # MNIST's own size holds one digit, however broken
        return [Piece((0, 0, width, height), whole)]
    ink = clean_ink(gray, SEGMENT_SIZE, step=2)
    if ink is None:
        return [Piece((0, 0, width, height), whole)]
    ink_mask = ink > INK
    rows = np.flatnonzero(ink_mask.any(axis=1))
    if rows.size == 0:
        return [Piece((0, 0, width, height), whole)]
    runs = np.diff(np.pad(ink_mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    stroke = float(np.median(np.nonzero(runs == -1)[1] - np.nonzero(runs == 1)[1]))
    reach = max(1, round(GAP * (rows[-1] - rows[0] + 1) / 2), round(stroke / 2))  # a stroke's width of gap
    labels, count = label(_sliding(ink_mask.astype(np.uint8), 2 * reach + 1, np.max) > 0)
    if count > MAX_PARTS:
        raise InputError(f"more than {MAX_PARTS} separate marks: a page of writing, not a number: crop the picture "
                         f"to the number (at most {MAX_PIECES} digits)")
    groups = group_parts(labels, count, ink_mask)
    if len(groups) > MAX_PIECES:
        raise _too_many(len(groups))
    pieces_map, boxes = split_wide(groups, labels, ink_mask, alone=len(groups) == 1)
    if reader is not None and (len(boxes) > 1 or _maybe_two(boxes[0], stroke)):
        runs = read_line(parts_of(labels, count, ink_mask), labels, ink_mask, ink, stroke, reader)
        pieces_map, boxes = np.zeros(labels.shape, np.int32), [run.box for run in runs]
        for k, run in enumerate(runs, start=1):
            pieces_map[run.ys, run.xs] = k
    if len(boxes) > MAX_PIECES:
        raise _too_many(len(boxes))
    scale_y, scale_x = height / ink.shape[0], width / ink.shape[1]
    gray_boxes = [(int(left * scale_x), int(top * scale_y), min(width, int(np.ceil(right * scale_x))),
                   min(height, int(np.ceil(bottom * scale_y)))) for left, top, right, bottom in boxes]
    if len(boxes) == 1:  # one digit is read as it always was
        return [Piece(gray_boxes[0], whole)]
    return _read_pieces(gray, ink.shape, pieces_map, gray_boxes)


def _maybe_two(box, stroke):
    """Whether one group of ink is wide enough to be two digits that touch (else it is read whole):
    wider than CUTTABLE_ALONE of its height, and at least TWO_STROKES strokes wide (a 1 beside a 0 is
    four: ink as bold as a marker's on a tight crop has no room for two digits)."""
    left, top, right, bottom = box
    return right - left > CUTTABLE_ALONE * (bottom - top) and right - left >= TWO_STROKES * stroke


def _too_many(count):
    return InputError(f"{count} pieces found, more than the {MAX_PIECES} digits of a number (a page of writing?): "
                      f"crop the picture to the number")


def _read_pieces(gray, shape, pieces_map, boxes):
    """Each digit cropped from the picture with a margin, the others' ink painted out, in MNIST form."""
    height, width = gray.shape
    full = np.asarray(Image.fromarray(pieces_map).resize((width, height), Image.NEAREST))
    reach = max(1, round(max(height / shape[0], width / shape[1])))
    pieces = []
    for k, (left, top, right, bottom) in enumerate(boxes, start=1):
        margin = round(MARGIN * max(right - left, bottom - top)) + 2
        y0, y1 = max(0, top - margin), min(height, bottom + margin)
        x0, x1 = max(0, left - margin), min(width, right + margin)
        crop, found = gray[y0:y1, x0:x1].copy(), full[y0:y1, x0:x1]
        others = _sliding(((found > 0) & (found != k)).astype(np.uint8), 2 * reach + 1, np.max) > 0
        others &= found != k
        if others.any():
            paper = crop[_sliding((found > 0).astype(np.uint8), 2 * reach + 3, np.max) == 0]
            crop[others] = np.median(paper) if paper.size else np.median(crop[found == 0])
        digit = to_mnist_form(crop)
        if digit is not None:
            pieces.append(Piece((left, top, right, bottom), digit))
    return pieces


__all__ = ["MAX_PIECES", "InputError", "Piece", "find_digits"]
