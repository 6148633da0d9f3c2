"""A line of ink cut into digits by reading: segmentation by recognition (as in LeCun et al., 1998).

The line's connected parts (specks joined to the part beside them) are cut further wherever two
digits may touch: down the path through the least ink, near each valley of the ink's column profile.
That over-segments: the pieces, left to right, are then joined back into digits by dynamic
programming, each run of up to MAX_JOIN neighbouring pieces (or of whole parts, however many pieces:
a digit written wide) read by the network (all of a picture's runs in one batch), choosing the runs
whose readings are surest, with a price for each stroke a cut goes through and for a run too wide or
too low to be one digit (the Prices, fitted by benchmarks/fit_number_prices.py on numbers of
training digits). The network is passed in as `reader` (28x28 images -> ten probabilities each):
NumPy and Pillow only, no Keras here.
"""

from typing import NamedTuple

import numpy as np

from digits.photos import centred
from digits.segment import SPECK, Group, _gap, _joined, digit_height

MAX_JOIN = 5  # pieces one digit may be joined from (a dashed 7, a 5 cut in three); whole parts: any number
CUTTABLE = 0.55  # of the digits' height: a part narrower than this is one digit, or part of one
CUTTABLE_ALONE = 0.9  # of its own height: the same for a part with no other beside it
VALLEYS = 0.2  # of the digits' height: the least width between two cuts of a part
BAND = 0.18  # of the digits' height: how far a cut may wander left or right of where it is tried
STROKE_PRICE = 3.0  # in log-probability: the price of a cut for each stroke of ink it goes through
WIDE_PRICE = 2.0  # ... for each digit's height a run is wider than WIDEST
WIDEST = 0.9  # of the digits' height
APART_PRICE = 0.0  # ... for paper between its parts along the line
APART = 0.1  # of the digits' height: paper this wide or wider pays the whole APART_PRICE
LOW_PRICE = 12.0  # ... for each digit's height a run is lower than LOWEST
LOWEST = 0.5  # of the digits' height
NEAR_SPECK = 0.1  # of the digits' height: a speck this close to a part is part of it


class Bit(NamedTuple):
    """A piece of the line's ink: its pixels (rows, columns on the segmenting grid), the part it
    was cut from, and what the cut on its right goes through (in strokes; 0: not cut)."""

    ys: np.ndarray
    xs: np.ndarray
    part: int
    right_cut: float


def parts_of(labels, count, ink_mask):
    """The line's parts as Groups, each speck close to a part joined to it, the others dropped."""
    ys, xs = np.nonzero(ink_mask)
    part = labels[ys, xs]
    area = np.bincount(part, minlength=count + 1)
    far, near = np.full(count + 1, 1 << 30), np.zeros(count + 1, int)
    boxes = [far, far.copy(), near, near.copy()]
    np.minimum.at(boxes[0], part, xs)
    np.minimum.at(boxes[1], part, ys)
    np.maximum.at(boxes[2], part, xs + 1)
    np.maximum.at(boxes[3], part, ys + 1)

    def group(p):
        return Group(boxes[0][p], boxes[1][p], boxes[2][p], boxes[3][p], int(area[p]), frozenset([p]))

    groups = [group(p) for p in range(1, count + 1) if area[p] >= SPECK * area.max()]
    height = digit_height(groups)
    for p in range(1, count + 1):
        if 0 < area[p] < SPECK * area.max():
            speck = group(p)
            nearest = min(groups, key=lambda g: _gap(speck, g))
            if _gap(speck, nearest) <= NEAR_SPECK * height:
                groups = [g if g is not nearest else _joined(g, speck) for g in groups]
    return groups


def _seams(ink, columns, reach):
    """For each of `columns`, the path from top to bottom of a part's ink (a boolean image) through
    the least ink, a column a row at most, within `reach` of it (beyond the part's sides counts as
    ink): [(its column in each row, the ink it goes through)], all found together."""
    padded = np.pad(ink.astype(np.float64), ((0, 0), (reach, reach)), constant_values=1.0)
    windows = np.stack([padded[:, c : c + 2 * reach + 1] for c in columns])  # (paths, rows, band)
    count, rows, _ = windows.shape
    total, wall = windows[:, 0].copy(), np.full((count, 1), np.inf)
    steps = np.zeros((rows, *total.shape), np.int8)
    for row in range(1, rows):
        choices = np.stack([np.concatenate([wall, total[:, :-1]], axis=1) + 0.02, total,
                            np.concatenate([total[:, 1:], wall], axis=1) + 0.02])
        steps[row] = choices.argmin(axis=0) - 1
        total = windows[:, row] + choices.min(axis=0)
    paths, each = np.zeros((rows, count), int), np.arange(count)
    paths[-1] = total.argmin(axis=1)
    for row in range(rows - 1, 0, -1):
        paths[row - 1] = paths[row] + steps[row, each, paths[row]]
    through = windows[each[None, :], np.arange(rows)[:, None], paths].sum(axis=0)
    return [(paths[:, k] + column - reach, float(through[k])) for k, column in enumerate(columns)]


def _cuts(ink, height, reach):
    """Where a part's ink (a boolean image) may be cut in two digits: paths from top to bottom
    through the least ink, tried every few columns, the cheapest at least VALLEYS of the digits'
    height apart and from either end; (path, ink it goes through) left to right."""
    width = ink.shape[1]
    edge, apart = max(2, round(0.1 * height)), max(2, round(VALLEYS * height))
    tried = _seams(ink, list(range(edge, width - edge, max(1, round(0.05 * height)))), reach)
    found = []
    for path, through in sorted(tried, key=lambda t: t[1]):
        middle = path.mean()
        if edge <= middle <= width - edge and all(abs(middle - f[0].mean()) >= apart for f in found):
            found.append((path, through))
    return sorted(found, key=lambda f: f[0].mean())


def bits_of(groups, labels, ink_mask, stroke):
    """The line's ink, in Groups of parts, over-segmented into Bits, left to right; and the digits' height."""
    height = digit_height(groups)
    bits = []
    for number, g in enumerate(groups):
        mine = np.isin(labels[g.top : g.bottom, g.left : g.right], list(g.parts))
        mine &= ink_mask[g.top : g.bottom, g.left : g.right]
        width, own = g.right - g.left, g.bottom - g.top
        cuts = []
        if width > (CUTTABLE_ALONE * own if len(groups) == 1 else CUTTABLE * height):
            last = np.zeros(own, int)
            for path, through in _cuts(mine, height, max(1, round(BAND * height))):
                path = np.maximum(path, last)
                cuts.append((path, through / max(stroke, 1.0)))
                last = path
        rows, cols = np.nonzero(mine)
        start = np.zeros(len(rows), int)
        for path, through in [*cuts, (np.full(own, width), 0.0)]:
            inside = (cols >= start) & (cols < path[rows])
            if inside.any():
                bits.append(Bit(rows[inside] + g.top, cols[inside] + g.left, number, through))
            elif bits and bits[-1].part == number:  # an empty piece: the cut before it is the next one
                bits[-1] = bits[-1]._replace(right_cut=through)
            start = path[rows]
    bits.sort(key=lambda b: (b.xs.min() + b.xs.max()) / 2)
    return bits, height


def _box(bits):
    ys, xs = np.concatenate([b.ys for b in bits]), np.concatenate([b.xs for b in bits])
    return ys, xs, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _image(ink, bits):
    """The 28x28 digit a run of Bits makes, from the cleaned ink."""
    ys, xs, (left, top, right, bottom) = _box(bits)
    patch = np.zeros((bottom - top, right - left), np.float32)
    patch[ys - top, xs - left] = ink[ys, xs]
    return centred(patch)


def _price(bits, height, prices):
    """The price, in log-probability, of taking a run of Bits as one digit, before it is read."""
    *_, (left, top, right, bottom) = _box(bits)
    price = prices.wide * max(0.0, (right - left) / height - WIDEST)
    price += prices.low * max(0.0, LOWEST - (bottom - top) / height)
    reached = bits[0].xs.max()
    for bit in bits[1:]:  # paper between two parts along the line: most likely two digits
        price += prices.apart * min(1.0, max(0, bit.xs.min() - reached - 1) / (APART * height))
        reached = max(reached, bit.xs.max())
    return price


class Run(NamedTuple):
    """One digit the reading chose: its Bits' pixels on the segmenting grid, its box, its image and
    the reader's ten probabilities for it."""

    ys: np.ndarray
    xs: np.ndarray
    box: tuple
    digit: np.ndarray
    probabilities: np.ndarray


class Reading(NamedTuple):
    """A line over-segmented and read: its Bits, the digits' height, the runs of Bits (i, j) that may
    be one digit, the 28x28 image each makes and the reader's ten probabilities for it."""

    bits: list
    height: float
    runs: list
    images: np.ndarray
    probabilities: np.ndarray


class Prices(NamedTuple):
    """What the reading pays, in log-probability, for a choice of digits (fitted by
    benchmarks/fit_number_prices.py on numbers written with MNIST's training digits)."""

    stroke: float = STROKE_PRICE
    wide: float = WIDE_PRICE
    apart: float = APART_PRICE
    low: float = LOW_PRICE


def _wholes(bits):
    """The runs of Bits that are whole parts of the line, however many Bits: (first, end) of each
    part, and of each stretch of neighbouring parts (a digit written wide, with paper around it, is
    cut into as many Bits as its width allows, and is one of these)."""
    first, end = {}, {}
    for k, bit in enumerate(bits):
        first.setdefault(bit.part, k)
        end[bit.part] = k + 1
    wholes = set()
    for i in range(len(bits)):
        reached = i
        for k in range(i, len(bits)):
            if first[bits[k].part] < i:
                break
            reached = max(reached, end[bits[k].part])
            if reached == k + 1:
                wholes.add((i, k + 1))
    return wholes


def read_runs(groups, labels, ink_mask, ink, stroke, reader):
    """The line's Bits, and every run of up to MAX_JOIN of them (or of whole parts) read by `reader`,
    in one batch; a run of more than one Bit at most twice the digits' height wide."""
    bits, height = bits_of(groups, labels, ink_mask, stroke)
    wholes = _wholes(bits)
    runs = [(i, j) for i in range(len(bits)) for j in range(i + 1, len(bits) + 1)
            if (j - i <= MAX_JOIN or (i, j) in wholes)
            and (j == i + 1 or _box(bits[i:j])[2][2] - _box(bits[i:j])[2][0] <= 2 * height)]
    images = np.stack([_image(ink, bits[i:j]) for i, j in runs])
    return Reading(bits, height, runs, images, np.asarray(reader(images), dtype=np.float64))


def choose(reading, prices=None):
    """The digits, left to right, as Runs: the joins of the Bits the reader reads surest, for the prices."""
    prices = prices or Prices()
    bits, height, runs = reading.bits, reading.height, reading.runs
    sure = np.log(np.maximum(reading.probabilities.max(axis=1), 1e-6))
    # The price of ending a digit after each Bit: the strokes its cut goes through, if it was cut.
    cut_price = [prices.stroke * b.right_cut if b.part == following.part else 0.0
                 for b, following in zip(bits, bits[1:])] + [0.0]
    best = np.full(len(bits) + 1, -np.inf)
    best[0], came = 0.0, {}
    for k in sorted(range(len(runs)), key=lambda k: runs[k][1]):  # every run ending at i before any from i
        i, j = runs[k]
        total = best[i] + sure[k] - _price(bits[i:j], height, prices) - cut_price[j - 1]
        if total > best[j]:
            best[j], came[j] = total, (i, k)
    chosen, j = [], len(bits)
    while j:
        i, k = came[j]
        ys, xs, box = _box(bits[i:j])
        chosen.append(Run(ys, xs, box, reading.images[k], reading.probabilities[k]))
        j = i
    return chosen[::-1]


def read_line(groups, labels, ink_mask, ink, stroke, reader):
    """The line's digits, left to right, as Runs: the joins of its Bits the reader reads surest."""
    return choose(read_runs(groups, labels, ink_mask, ink, stroke, reader))
