"""A whole number in one picture: find the digits, left to right, each in MNIST's form."""

from typing import NamedTuple

import numpy as np

from digits.errors import InputError
from digits.photos import to_mnist_form

MAX_PIECES = 20  # a phone number is 10-12 digits; more than this is a page, not a number


class Piece(NamedTuple):
    """One digit found in a picture: where it is, and the 28x28 image the network reads."""

    box: tuple  # (left, top, right, bottom) in the picture's pixels, right and bottom exclusive
    digit: np.ndarray  # 28x28 float32 in [0, 1], MNIST's form


def find_digits(gray):
    """The digits in a grayscale picture (2-D float array in [0, 1]), left to right.

    Returns [] when the picture holds no ink. Raises InputError when it holds more than MAX_PIECES
    pieces (a page of text, not a number).
    """
    # Placeholder until segmentation lands (issue 19): the whole picture is one digit.
    digit = to_mnist_form(gray)
    if digit is None:
        return []
    height, width = gray.shape
    return [Piece((0, 0, width, height), digit)]


__all__ = ["MAX_PIECES", "InputError", "Piece", "find_digits"]
