"""Fit the prices digits.cuts pays when it joins a line's pieces into digits, on numbers written with
MNIST's *training* digits (the benchmark, benchmarks/number_photos.py, writes its numbers with the
test digits: the prices are not fitted to it).

    python benchmarks/fit_number_prices.py --model docs/run/model.keras

Makes --count number photos as number_photos.py makes them, and --count single-digit photos as the
tests make them (bold tight crops, phone-style), reads each once (the line's pieces and every join
of them, read by the model), then searches the prices one at a time, a few rounds: the most single
digits read right first, then the most numbers read with every digit right. A reading here is the
model's reading of each chosen join as the search saw it; --predict reads each digit again from the
photo, so its figures can differ a little. Prints the prices to put in digits/cuts.py.

First it prints the most any prices could read: the numbers whose digits are each a run of the
line's pieces that the model reads right (which digit wrote each pixel is known, as the photos are
made), by how far apart the digits were written, and how many numbers hold a piece with a good share
of two digits' ink (strokes that cross, which no choice of runs can part).
"""

import argparse
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import BOLD_KINDS, KINDS, bold_photo, phone_photo  # noqa: E402
from number_photos import SPACINGS, number_photo  # noqa: E402

import digits.numbers as numbers  # noqa: E402
from digits.cuts import Prices, choose, read_runs  # noqa: E402
from digits.data import load_mnist  # noqa: E402
from digits.photos import read_image  # noqa: E402

STEPS = {"stroke": [0, 0.5, 1, 1.5, 2, 3], "wide": [0, 1, 2, 4, 6, 8], "apart": [0, 1, 2, 3, 4, 6],
         "low": [4, 8, 12, 16, 24]}


def singles(x_train, y_train, count, rng, folder):
    """{path: label} for `count` single-digit photos of each of the tests' two kinds (bold tight
    crops, phone-style), made from training digits: the prices must not cut a digit in two."""
    photos = {}
    for n, i in enumerate(rng.choice(len(x_train), 2 * count, replace=False)):
        if n % 2:
            size = int(np.exp(rng.uniform(np.log(48), np.log(1600))))
            image, extension = bold_photo(x_train[i], size, BOLD_KINDS[n // 2 % len(BOLD_KINDS)], rng)
        else:
            image, extension = phone_photo(x_train[i], KINDS[n // 2 % len(KINDS)], rng)
        path = folder / f"single{n:03d}.{extension}"
        image.save(path)
        photos[path] = str(y_train[i])
    return photos


class Found(NamedTuple):
    """One photo of the fitting set: the number written, its Reading (or the digits read with no
    choice left), and for a number, how far apart its digits are and which digit wrote each pixel of
    the line's ink (on the grid the Reading's pieces are on)."""

    truth: str
    reading: object
    spacing: float = 0.0
    owner: np.ndarray = None


def readings(model, count, seed, folder):
    """[Found] for `count` photos of numbers and `count` of single digits, all written with training digits."""
    import keras

    x_train, y_train = load_mnist("bundled")[:2]
    loaded = keras.models.load_model(model)

    def reader(images):
        return np.asarray(loaded.predict_on_batch(images[..., None]))

    rng = np.random.default_rng(seed)
    order = iter(rng.permutation(len(x_train)))
    photos, made = {}, {}
    for n in range(count):
        indices = [next(order) for _ in range(int(rng.integers(2, 7)))]
        path = folder / f"number{n:03d}.jpg"
        made[path] = number_photo(x_train[indices], ("paper", "chalkboard")[n % 2], rng)
        made[path].image.save(path, quality=int(rng.integers(60, 93)))
        photos[path] = "".join(str(y_train[i]) for i in indices)
    photos.update(singles(x_train, y_train, count // 2, rng, folder))
    caught, found = [], []
    # find_digits as --predict runs it, each line's Reading (and its grid) kept: the prices change only
    # what is chosen from it
    numbers.read_line = lambda *line: caught.append((read_runs(*line), line[3].shape)) or choose(caught[-1][0])
    for path, truth in photos.items():
        caught.clear()
        pieces = numbers.find_digits(read_image(path)[0], reader)
        if not caught:  # the rules found one digit, read whole: no price changes it
            found.append(Found(truth, "".join(map(str, reader(np.stack([p.digit for p in pieces])).argmax(axis=1)))))
        elif path in made:
            (rows, cols), owner = caught[0][1], made[path].owner
            owner = np.asarray(Image.fromarray(owner).resize((cols, rows), Image.NEAREST))
            found.append(Found(truth, caught[0][0], made[path].spacing, owner))
        else:
            found.append(Found(truth, caught[0][0]))
    return found


def own_runs(reading, owner):
    """The runs of the Reading's pieces that are each one digit, as the photo was written (each piece
    given to the digit that wrote most of its ink), or None when the pieces do not follow the digits'
    order; and the least share of a piece's ink that one digit wrote."""
    writers, least = [], 1.0
    for bit in reading.bits:
        wrote = owner[bit.ys, bit.xs]
        wrote = wrote[wrote > 0]
        counts = np.bincount(wrote) if wrote.size else np.zeros(1, int)
        writers.append(int(counts.argmax()) or (writers[-1] if writers else 0))
        least = min(least, counts.max() / max(1, wrote.size)) if wrote.size else least
    runs, start = [], 0
    for end in range(1, len(writers) + 1):
        if end == len(writers) or writers[end] != writers[start]:
            runs.append((writers[start], start, end))
            start = end
    if [writer for writer, _, _ in runs] != list(range(1, len(runs) + 1)):
        return None, least
    return [(start, end) for _, start, end in runs], least


def ceiling(found, prices):
    """Print the most any prices could read: the numbers whose own runs are among those read, each
    read right; and how many `prices` read."""
    counted = [f for f in found if f.owner is not None]
    could, crossed = set(), 0
    read_right = {n for n, f in enumerate(counted) if digits_read(f.reading, prices) == f.truth}
    for n, f in enumerate(counted):
        runs, least = own_runs(f.reading, f.owner)
        crossed += least < 0.8
        if runs and len(runs) == len(f.truth) and all(run in f.reading.runs for run in runs):
            read = "".join(str(int(f.reading.probabilities[f.reading.runs.index(run)].argmax())) for run in runs)
            if read == f.truth:
                could.add(n)
    whole = sum(len(f.truth) > 1 and isinstance(f.reading, str) for f in found)
    print(f"The most any prices could read: {len(could)} of the {len(counted)} numbers the reader cuts "
          f"({whole} more were read whole); {crossed} hold a piece under 80% one digit's ink")
    for low, high, name in SPACINGS:
        band = [n for n, f in enumerate(counted) if low <= f.spacing < high]
        print(f"  {name} ({low:+.2f} to {min(high, 0.7):+.2f}): {len(set(band) & could)} of {len(band)} "
              f"(these prices: {len(set(band) & read_right)})")


def digits_read(reading, prices):
    """The digits the prices choose from a Reading, as the model reads each."""
    return "".join(str(int(run.probabilities.argmax())) for run in choose(reading, prices))


def right(found, prices):
    """How many numbers, and how many single digits, the prices read with every digit right."""
    numbers_right = singles_right = 0
    for truth, reading, *_ in found:
        if not isinstance(reading, str):
            reading = digits_read(reading, prices)
        numbers_right += reading == truth and len(truth) > 1
        singles_right += reading == truth and len(truth) == 1
    return numbers_right, singles_right


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "docs" / "run" / "model.keras")
    parser.add_argument("--count", type=int, default=400, help="number photos to fit on, and as many single digits")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        found = readings(args.model, args.count, args.seed, Path(folder))
    prices = Prices()
    ceiling(found, prices)
    count = sum(len(f.truth) > 1 for f in found), sum(len(f.truth) == 1 for f in found)

    def report(label, score):
        print(f"{label}: {score[0]} of {count[0]} numbers and {score[1]} of {count[1]} single digits read right "
              f"with {prices}")

    best = right(found, prices)
    report("now", best)
    for n in range(args.rounds):
        for name, values in STEPS.items():
            for value in values:
                tried = prices._replace(**{name: value})
                score = right(found, tried)
                if (score[1], score[0]) > (best[1], best[0]):  # single digits first: none may be lost
                    best, prices = score, tried
        report(f"round {n + 1}", best)


if __name__ == "__main__":
    main()
