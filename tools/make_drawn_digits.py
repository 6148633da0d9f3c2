"""Write data/drawn_digits.json: the digits 0-9, three hand-writing styles each, as pen strokes.

Each digit is described as a person draws it, stroke by stroke (lines, arcs and curves in a
100 x 100 box, y pointing down), then slanted, sampled every few units and given a little wobble,
as a hand on a mouse leaves. `box` says where on the canvas the test draws it (left, top, side,
as shares of the canvas' side): big and small, centred and off-centre, since people draw anywhere.

    python tools/make_drawn_digits.py
"""
import json
from itertools import pairwise
from pathlib import Path

import numpy as np

STEP = 2.5  # units between sampled points


def line(*points):
    return [("line", np.array(points, dtype=float))]


def arc(cx, cy, rx, ry, start, end):
    """From angle start to end in degrees (0 = right, 90 = down; increasing is clockwise on screen)."""
    return [("arc", (cx, cy, rx, ry, start, end))]


def curve(p0, p1, p2, p3):
    return [("bezier", np.array([p0, p1, p2, p3], dtype=float))]


def sample(segment):
    kind, spec = segment
    t = np.linspace(0, 1, 400)[:, None]
    if kind == "line":
        dense = np.concatenate([a + t * (b - a) for a, b in pairwise(spec)])
    elif kind == "arc":
        cx, cy, rx, ry, start, end = spec
        angle = np.radians(start + t[:, 0] * (end - start))
        dense = np.stack([cx + rx * np.cos(angle), cy + ry * np.sin(angle)], axis=1)
    else:
        p0, p1, p2, p3 = spec
        dense = (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3
    return dense


def stroke_points(segments, slant, turn, rng):
    """One pen stroke: its segments joined, slanted and turned, sampled every STEP units, wobbling."""
    dense = np.concatenate([sample(segment) for segment in segments])
    dense[:, 0] += slant * (50 - dense[:, 1])  # lean right as the pen goes up
    cos, sin = np.cos(np.radians(turn)), np.sin(np.radians(turn))
    dense = (dense - 50) @ np.array([[cos, sin], [-sin, cos]]) + 50
    length = np.concatenate([[0], np.cumsum(np.hypot(*np.diff(dense, axis=0).T))])
    at = np.linspace(0, length[-1], max(2, int(length[-1] / STEP) + 1))
    points = np.stack([np.interp(at, length, dense[:, 0]), np.interp(at, length, dense[:, 1])], axis=1)
    wobble = np.cumsum(rng.normal(0, 0.5, points.shape), axis=0)
    wobble -= np.linspace(0, 1, len(points))[:, None] * wobble[-1]  # ends where it meant to
    return np.round(points + wobble, 1).tolist()


# digit: [(style, slant, box, [stroke segments, ...]), ...]
DIGITS = {
    0: [
        ("closed oval", 0.0, (0.2, 0.15, 0.7), [arc(50, 50, 26, 43, -100, 265)]),
        ("narrow, slanted, overlapping", 0.22, (0.3, 0.25, 0.45), [arc(50, 50, 20, 44, -60, 330)]),
        ("round, open at the top", -0.05, (0.1, 0.1, 0.55), [arc(50, 52, 31, 40, -75, 250)]),
    ],
    1: [
        ("a plain stroke", 0.0, (0.2, 0.1, 0.75), [line((50, 5), (50, 95))]),
        ("with a flag", 0.12, (0.35, 0.3, 0.5), [line((36, 22), (53, 5), (53, 95))]),
        ("with a flag and a foot", 0.0, (0.15, 0.2, 0.6), [line((36, 22), (52, 5), (52, 95)),
                                                           line((34, 95), (70, 95))]),
    ],
    2: [
        ("round top, flat base", 0.0, (0.2, 0.15, 0.7),
         [arc(50, 30, 24, 24, 195, 390) + line((70, 42), (26, 95), (80, 95))]),
        ("curly", 0.1, (0.3, 0.3, 0.5),
         [curve((28, 25), (34, 0), (82, 4), (70, 36)) + curve((70, 36), (62, 56), (36, 76), (24, 95))
          + line((24, 95), (80, 92))]),
        ("slanted, small hook", 0.25, (0.1, 0.05, 0.55),
         [arc(48, 28, 22, 22, 200, 380) + curve((70, 28), (70, 55), (40, 70), (28, 94))
          + line((28, 94), (76, 94))]),
    ],
    3: [
        ("two round bumps", 0.0, (0.2, 0.15, 0.7),
         [arc(48, 28, 23, 22, 200, 450) + arc(48, 72, 26, 23, -90, 150)]),
        ("flat top", 0.1, (0.35, 0.2, 0.5),
         [line((28, 8), (72, 8), (45, 42)) + arc(48, 68, 27, 26, -105, 150)]),
        ("pointed middle", 0.18, (0.1, 0.3, 0.5),
         [curve((25, 15), (45, -5), (85, 10), (42, 48)) + curve((42, 48), (90, 50), (80, 105), (22, 88))]),
    ],
    4: [
        ("open, two strokes", 0.0, (0.2, 0.15, 0.7), [line((45, 5), (22, 62), (82, 62)), line((65, 30), (65, 95))]),
        ("closed, one stroke", 0.1, (0.25, 0.3, 0.5), [line((62, 95), (62, 5), (20, 66), (82, 66))]),
        ("open top, upright", 0.05, (0.1, 0.05, 0.6), [line((28, 5), (28, 55), (76, 55)), line((68, 5), (68, 95))]),
    ],
    5: [
        ("bowl first, then the bar", 0.0, (0.2, 0.15, 0.7),
         [line((34, 8), (30, 45)) + arc(48, 67, 25, 24, 215, 510), line((34, 8), (74, 8))]),
        ("one stroke", 0.12, (0.3, 0.25, 0.5), [line((74, 8), (34, 8), (30, 45)) + arc(48, 67, 25, 24, 215, 510)]),
        ("slanted, small bowl", 0.2, (0.1, 0.1, 0.55),
         [line((32, 10), (30, 48)) + arc(48, 70, 23, 21, 210, 500), line((32, 10), (72, 8))]),
    ],
    6: [
        ("curved stem, round loop", 0.0, (0.2, 0.15, 0.7),
         [curve((68, 8), (45, 15), (25, 45), (27, 70)) + arc(50, 72, 23, 22, 180, -175)]),
        ("straight stem", 0.1, (0.3, 0.3, 0.5), [line((62, 5), (30, 62)) + arc(50, 72, 22, 22, 205, -150)]),
        ("slanted, small loop", 0.22, (0.1, 0.1, 0.55),
         [curve((70, 5), (40, 15), (26, 50), (30, 76)) + arc(50, 76, 20, 18, 180, -170)]),
    ],
    7: [
        ("plain", 0.0, (0.2, 0.15, 0.7), [line((22, 10), (78, 10), (42, 95))]),
        ("with a crossbar", 0.08, (0.3, 0.25, 0.5), [line((22, 10), (78, 10), (42, 95)), line((36, 52), (72, 52))]),
        ("hooked start, curved stem", 0.15, (0.1, 0.2, 0.55),
         [line((22, 22), (24, 10), (78, 10)) + curve((78, 10), (62, 35), (48, 60), (45, 95))]),
    ],
    8: [
        ("one stroke, S and back", 0.0, (0.2, 0.15, 0.7),
         [arc(50, 28, 19, 21, -32, -250) + arc(50, 70, 23, 23, -90, 270)
          + curve((50, 47), (62, 40), (70, 30), (66, 18))]),
        ("two circles", 0.1, (0.3, 0.3, 0.5), [arc(50, 27, 18, 20, 90, 450), arc(50, 70, 24, 24, -90, 270)]),
        ("slanted, one stroke", 0.22, (0.1, 0.1, 0.55),
         [arc(50, 28, 18, 21, -32, -250) + arc(50, 70, 22, 23, -90, 270)
          + curve((50, 47), (62, 40), (70, 30), (66, 18))]),
    ],
    9: [
        ("loop and straight stem", 0.0, (0.2, 0.15, 0.7), [arc(50, 30, 22, 22, 0, -360) + line((72, 30), (70, 95))]),
        ("curved stem", 0.1, (0.3, 0.25, 0.5),
         [arc(50, 30, 22, 22, 0, -360) + curve((72, 30), (72, 60), (65, 90), (40, 95))]),
        ("two strokes, slanted", 0.2, (0.1, 0.15, 0.55),
         [arc(48, 30, 22, 22, -10, -370), line((72, 10), (72, 95))]),
    ],
}


def main():
    rng = np.random.default_rng(13)
    drawings = []
    for digit, styles in DIGITS.items():
        for style, slant, box, strokes in styles:
            turn = rng.uniform(-6, 6)  # nobody writes quite level
            drawings.append({"digit": digit, "style": style, "box": list(box),
                             "strokes": [stroke_points(segments, slant, turn, rng) for segments in strokes]})
    path = Path(__file__).resolve().parents[1] / "data" / "drawn_digits.json"
    path.write_text(json.dumps({"frame": 100, "drawings": drawings}, separators=(",", ":")) + "\n")
    print(f"Wrote {len(drawings)} drawings to {path}")


if __name__ == "__main__":
    main()
