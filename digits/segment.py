"""The ink of a line of writing in parts and groups: connected parts labelled, grouped into digits by
rules (parts that overlap along the line, or too small to be a digit on their own, are one digit; a
group much wider than the digits beside it is cut where its ink is thinnest). NumPy only: no Keras.
"""

from typing import NamedTuple

import numpy as np

from digits.photos import _sliding

GAP = 0.03  # of the writing's height: parts closer than this are one (a dotted or photocopied stroke)
SPECK = 0.02  # of the largest part's ink: less than this, away from any digit, is dirt
SMALL = 0.45  # of the digits' height: a group lower and narrower than this is part of its neighbour
SLIVER = 0.3  # of the digits' height: a short group narrower than this, close to another, is part of it
NEAR = 0.6  # of the digits' height: ...if one is this close; else it is dirt
SAME = 0.5  # of the narrower group's width: groups overlapping this much along the line are one digit
WIDE = 1.2  # of the digits' height: a group wider than this may be two digits that touch
WIDE_ALONE = 1.5  # the same, for a group with no other digit beside it to measure against
DIGIT_WIDTH = 0.75  # of the digits' height: about how wide a digit is
TALL = 0.65  # of the digits' height: a group this tall is a digit, or most of one


def label(mask):
    """(labels, count): the 8-connected parts of a boolean image, numbered from 1 (0: background).

    Each row's runs of True are joined to the runs they touch in the next row, and the numbers
    spread along those joins until every run of a part carries the part's smallest.
    """
    height, width = mask.shape
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    ends = np.nonzero(edges == -1)[1]  # exclusive; in the same order as the starts
    key = width + 2
    # Run j of row r + 1 touches run i of row r (diagonals too) when start_j <= end_i and end_j >= start_i.
    first = np.searchsorted(rows * key + ends, (rows + 1) * key + starts, side="left")
    last = np.searchsorted(rows * key + starts, (rows + 1) * key + ends, side="right")
    counts = np.maximum(last - first, 0)
    below = np.repeat(first - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
    above = np.repeat(np.arange(len(starts)), counts)
    run = np.arange(len(starts))
    while True:
        lowest = np.minimum(run[above], run[below])
        before = run.copy()
        np.minimum.at(run, above, lowest)
        np.minimum.at(run, below, lowest)
        run = run[run]  # jump along the chain of smallest numbers
        if np.array_equal(run, before):
            break
    numbers, run = np.unique(run, return_inverse=True)
    labels = np.zeros((height, width), np.int32)
    lengths = ends - starts
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    labels[np.repeat(rows, lengths), np.repeat(starts, lengths) + offsets] = np.repeat(run + 1, lengths)
    return labels, len(numbers)


class Group(NamedTuple):
    """Parts of ink taken as one digit: their box on the segmenting grid, ink in pixels, part numbers."""

    left: int
    top: int
    right: int
    bottom: int
    ink: int
    parts: frozenset


def _joined(a, b):
    return Group(min(a.left, b.left), min(a.top, b.top), max(a.right, b.right), max(a.bottom, b.bottom),
                 a.ink + b.ink, a.parts | b.parts)


def _overlap(a, b):
    """How much two groups overlap along the line, as a share of the narrower one's width."""
    shared = min(a.right, b.right) - max(a.left, b.left)
    return shared / max(1, min(a.right - a.left, b.right - b.left))


def _gap(a, b):
    """The distance between two groups' boxes (0 where they overlap)."""
    return np.hypot(max(0, max(a.left, b.left) - min(a.right, b.right)),
                    max(0, max(a.top, b.top) - min(a.bottom, b.bottom)))


def _side_by_side(a, b, height):
    """Whether two groups are two digits however much they overlap: both tall, their middles apart."""
    tall = min(a.bottom - a.top, b.bottom - b.top) >= TALL * height
    return tall and abs((a.left + a.right) - (b.left + b.right)) / 2 > 0.25 * height


def _merge_overlapping(groups):
    """Join groups that overlap along the line by SAME or more, until none do; left to right."""
    height = digit_height(groups)
    groups = sorted(groups, key=lambda g: g.left)
    merged = True
    while merged:
        merged = False
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                if groups[j].left >= groups[i].right:
                    break
                if _overlap(groups[i], groups[j]) >= SAME and not _side_by_side(groups[i], groups[j], height):
                    groups[i] = _joined(groups[i], groups.pop(j))
                    merged = True
                    break
            if merged:
                break
    return groups


def digit_height(groups):
    """The height of the digits: the greatest height of the groups with a good share of the ink, and
    at least 0.6 of the writing's whole height (where every group is a dash or a dot of one digit)."""
    most = max(g.ink for g in groups)
    tallest = max(g.bottom - g.top for g in groups if g.ink >= 0.25 * most)
    return max(tallest, 0.6 * (max(g.bottom for g in groups) - min(g.top for g in groups)))


def _attach_small(groups):
    """Join each group too small to be a digit to its nearest neighbour, or drop it as dirt."""
    height = digit_height(groups)
    while True:
        small = [g for g in groups if g.bottom - g.top < SMALL * height
                 or (g.bottom - g.top < TALL * height and g.right - g.left < SLIVER * height
                     and min(_gap(g, o) for o in groups if o is not g) < 0.1 * height)]
        if not small:
            return groups
        piece = min(small, key=lambda g: g.ink)
        others = [g for g in groups if g is not piece]
        groups = others
        if others:
            nearest = min(others, key=lambda g: _gap(piece, g))
            if _gap(piece, nearest) <= NEAR * height:
                groups = [g if g is not nearest else _joined(g, piece) for g in others]


def group_parts(labels, count, ink_mask):
    """The digits' groups of parts, left to right."""
    ys, xs = np.nonzero(ink_mask)
    part = labels[ys, xs]
    area = np.bincount(part, minlength=count + 1)
    left, top = np.full(count + 1, 1 << 30), np.full(count + 1, 1 << 30)
    right, bottom = np.zeros(count + 1, int), np.zeros(count + 1, int)
    np.minimum.at(left, part, xs)
    np.minimum.at(top, part, ys)
    np.maximum.at(right, part, xs + 1)
    np.maximum.at(bottom, part, ys + 1)
    kept = [p for p in range(1, count + 1) if area[p] >= SPECK * area.max()]
    groups = [Group(left[p], top[p], right[p], bottom[p], int(area[p]), frozenset([p])) for p in kept]
    small = [Group(left[p], top[p], right[p], bottom[p], int(area[p]), frozenset([p]))
             for p in range(1, count + 1) if 0 < area[p] < SPECK * area.max()]
    groups = _merge_overlapping(groups)
    height = digit_height(groups)
    for speck in small:  # dirt, unless it is close to a digit (a dot of a dotted stroke)
        nearest = min(groups, key=lambda g: _gap(speck, g))
        if _gap(speck, nearest) <= GAP * height:
            groups = [g if g is not nearest else _joined(g, speck) for g in groups]
    groups = _merge_overlapping(_attach_small(groups))
    return groups


def _cut(ink, stroke, height, strict):
    """The column where a group's ink (a boolean image) is best cut in two, or None.

    A cut must leave most of a digit's height of ink on each side (not a 2's tail). Of those, the
    one through the least ink, near where a digit's width would end. A group with no digit beside it
    is cut, if `strict`, only where two touch: through a stroke or two, in a valley of the ink.
    """
    width = ink.shape[1]
    profile = _sliding(ink.sum(axis=0, keepdims=True).astype(np.float32), 3, np.mean)[0]
    left_rows = np.logical_or.accumulate(ink, axis=1).sum(axis=0)  # rows with ink at or left of each column
    right_rows = np.logical_or.accumulate(ink[:, ::-1], axis=1).sum(axis=0)[::-1]
    count = max(2, round(width / (DIGIT_WIDTH * height)))
    ends = np.arange(1, count) * width / count  # where the digits would end, were they equally wide
    reach = max(2, int(TALL * height / 2))
    best, best_cost = None, np.inf
    for c in range(max(2, int(0.25 * height)), width - max(2, int(0.25 * height))):
        if left_rows[c - 1] < TALL * height or right_rows[c + 1] < TALL * height:
            continue
        valley = profile[c] <= 0.6 * min(profile[max(0, c - reach) : c].max(), profile[c + 1 : c + 1 + reach].max())
        if strict and (profile[c] > 2.5 * stroke or not valley):
            continue
        cost = profile[c] / stroke + 2 * np.abs(ends - c).min() / height
        if cost < best_cost:
            best, best_cost = c, cost
    return best


def split_wide(pieces, labels, ink_mask, alone):
    """Cut the groups much wider than the digits' height where their ink is thinnest; returns a
    piece map (0: no digit, k: the k-th digit, left to right) on the segmenting grid."""
    height = digit_height(pieces)
    runs = np.diff(np.pad(ink_mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    stroke = float(np.median(np.nonzero(runs == -1)[1] - np.nonzero(runs == 1)[1]))
    boxes = []
    for group in pieces:
        box = (group.left, group.top, group.right, group.bottom)
        mine = np.isin(labels[group.top : group.bottom, group.left : group.right], list(group.parts))
        mine &= ink_mask[group.top : group.bottom, group.left : group.right]
        todo, done = [(box, mine, alone)], []
        while todo:
            (left, top, right, bottom), ink, lone = todo.pop()
            cols = np.flatnonzero(ink.any(axis=0))
            rows = np.flatnonzero(ink.any(axis=1))
            ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
            left, top = left + cols[0], top + rows[0]
            right, bottom = left + ink.shape[1], top + ink.shape[0]
            reference = ink.shape[0] if lone else min(ink.shape[0], height)
            cut = None
            if ink.shape[1] > (WIDE_ALONE if lone else WIDE) * reference:
                # No digit is twice as wide as it is high: wider than that, it is two that touch.
                cut = _cut(ink, stroke, reference, strict=ink.shape[1] <= 2 * reference)
            if cut is None:
                done.append(((left, top, right, bottom), ink))
                continue
            height = height if not lone else reference
            for half in _halves(ink, cut):
                todo.append(((left, top, right, bottom), half, False))
        boxes.extend(done)
    boxes.sort(key=lambda item: item[0][0])
    pieces_map = np.zeros(labels.shape, np.int32)
    for k, ((left, top, right, bottom), ink) in enumerate(boxes, start=1):
        region = pieces_map[top:bottom, left:right]
        region[ink] = k
    return pieces_map, [box for box, _ in boxes]


def _halves(ink, cut):
    """A group's ink cut at column `cut`: each part of it, once the cut's column is taken out, goes
    whole to the side that holds most of it (a slanting stroke is not chopped off its digit)."""
    parted = ink.copy()
    parted[:, cut] = False
    parts, count = label(parted)
    ys, xs = np.nonzero(parts)
    which = parts[ys, xs]
    sizes = np.maximum(np.bincount(which, minlength=count + 1), 1)
    sides = np.flatnonzero(np.bincount(which, weights=xs, minlength=count + 1) / sizes < cut)
    left = np.isin(parts, sides[sides > 0])
    left[:, cut] = ink[:, cut]
    return left, ink & ~left
