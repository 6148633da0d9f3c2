"""Strokes drawn on the drawing page turned into the 28x28 digits the network reads: strokes grouped
into digits (those side by side with overlapping extents are one digit) and each drawn again with an
MNIST-like pen, or the whole drawing drawn as a line of writing for the number reader. Strokes are
lists of (n, 2) arrays of points, (x, y), checked before they come here. No Keras."""

import numpy as np
from PIL import Image, ImageDraw

from digits.numbers import MAX_PIECES, NO_DIGIT, Piece, TooManyDigits, read_line
from digits.photos import to_mnist_form

# The canvas strokes are re-drawn here rather than sent as the canvas' own bitmap: the page's pen
# is a fixed number of screen pixels wide, so a small digit would reach the network as a fat blob
# and a large one as hairlines. MNIST's strokes are about 3 pixels in its 20-pixel box, so the
# pen here is a fixed share of the drawing's longer side, whatever size it was drawn at.
STROKE_BOX = 160  # the drawing's longer side, in pixels, once rendered
STROKE_WIDTH = 0.15  # of that side: the drawn test digits then carry as much ink as MNIST's, on average
# Strokes are one digit when their horizontal extents overlap by more than JOIN_OVERLAP of the narrower
# one's width, less JOIN_GAP of the drawing's height: a 7's detached bar, a 5's hat or a 4's second
# stroke joins its digit even drawn a little apart, while two slanted digits whose extents barely
# overlap, or a 1 beside a digit, stay apart.
JOIN_OVERLAP = 1 / 3
JOIN_GAP = 0.06
LINE_PIXELS = 64  # a drawing's height, in pixels, once rendered as a line for the number reader
SPECK = 0.08  # beside larger digits, a piece smaller than this share of the drawing's height is a slip of the pen


def render_strokes(strokes):
    """Draw the strokes as light ink on black, the pen a fixed share of the drawing's size."""
    points = np.concatenate(strokes)
    low = points.min(axis=0)
    scale = STROKE_BOX / max(np.ptp(points, axis=0).max(), 1e-6)
    width = round(STROKE_WIDTH * STROKE_BOX)
    # a clear black border: to_mnist_form tells paper from ink by what the border shows
    margin = 2 * width
    image = Image.new("L", (STROKE_BOX + 2 * margin,) * 2, 0)
    pen = ImageDraw.Draw(image)
    for stroke in strokes:
        xy = [tuple(p) for p in (stroke - low) * scale + margin]
        if len(xy) > 1:
            pen.line(xy, fill=255, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round ends, as a pen leaves; a single point is a dot
            pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(image, dtype=np.float32) / 255


def _together(one, other, gap):
    """Whether two spans [left, right, ...] of strokes side by side are one digit."""
    overlap = min(one[1], other[1]) - max(one[0], other[0])
    return overlap > JOIN_OVERLAP * min(one[1] - one[0], other[1] - other[0]) - gap


def group_strokes(strokes):
    """The strokes of a drawing as digits, left to right: a list of lists of strokes, each digit's in
    the order drawn. Specks beside larger digits are left out."""
    points = np.concatenate(strokes)
    height = np.ptp(points[:, 1])
    spans = sorted(([stroke[:, 0].min(), stroke[:, 0].max(), [n]] for n, stroke in enumerate(strokes)),
                   key=lambda span: span[0])
    joined = []  # sorted by left edge, each span joins the digit before it or starts one; a digit that
    for span in spans:  # grows may then join the one before it: no two neighbours left that join
        joined.append(span)
        while len(joined) > 1 and _together(joined[-2], joined[-1], JOIN_GAP * height):
            last = joined.pop()
            joined[-1][1] = max(joined[-1][1], last[1])
            joined[-1][2].extend(last[2])
    groups = [[strokes[n] for n in sorted(span[2])] for span in joined]
    sizes = [np.ptp(np.concatenate(group), axis=0).max() for group in groups]
    largest = max(sizes)
    return [group for group, size in zip(groups, sizes) if size >= SPECK * height or size == largest]


def render_line(strokes):
    """Draw the strokes as a line of writing, light ink on black: LINE_PIXELS high, the pen a share of
    that as MNIST's; (ink, scale, offset): picture pixel = (stroke point - offset) * scale."""
    points = np.concatenate(strokes)
    low = points.min(axis=0)
    width, height = np.ptp(points, axis=0)  # points are (x, y)
    scale = LINE_PIXELS / max(height, width / MAX_PIECES, 1e-6)  # a flat line is no wider than 20 digits
    pen = round(STROKE_WIDTH * LINE_PIXELS)
    offset = low - pen / scale
    image = Image.new("L", (round(width * scale) + 2 * pen + 1, round(height * scale) + 2 * pen + 1), 0)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        xy = [tuple(p) for p in (stroke - offset) * scale]
        if len(xy) > 1:
            draw.line(xy, fill=255, width=pen, joint="curve")
        for x, y in (xy[0], xy[-1]):
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=255)
    return np.asarray(image, dtype=np.float32) / 255, scale, offset


def drawn_digits(strokes, reader=None):
    """The digits of a drawing, left to right, each a Piece: its box (left, top, right, bottom) in
    the strokes' own units, and its image in MNIST's form. With the number `reader` (find_digits'), a
    drawing it reads several digits in is read by it; a drawing of one digit reads exactly as one digit
    always did: its strokes drawn again and put in MNIST's form. TooManyDigits past MAX_PIECES."""
    unsure, seen = None, None
    if reader is not None:
        ink, scale, offset = render_line(strokes)
        pieces = read_line(ink, reader)  # TooManyDigits past MAX_PIECES
        if len(pieces) > 1:
            return [piece._replace(box=(piece.box[0] / scale + offset[0], piece.box[1] / scale + offset[1],
                                        piece.box[2] / scale + offset[0], piece.box[3] / scale + offset[1]))
                    for piece in pieces]
        unsure, seen = (None, pieces[0].probabilities) if pieces else (NO_DIGIT, None)
    groups = group_strokes(strokes)
    if reader is not None and len(groups) > 1:  # the reader sees one digit: all the strokes are it
        groups = [strokes]
    if len(groups) > MAX_PIECES:
        raise TooManyDigits(len(groups))
    pieces = []
    for group in groups:
        digit = to_mnist_form(render_strokes(group))
        if digit is not None:
            points = np.concatenate(group)
            box = (*points.min(axis=0).tolist(), *points.max(axis=0).tolist())
            pieces.append(Piece(box, digit, unsure=unsure, seen=seen))
    return pieces
