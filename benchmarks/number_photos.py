"""How well `--predict` reads whole numbers, and single digits, in photos made from MNIST test digits.

    python benchmarks/number_photos.py --model docs/run/model.keras

Numbers: --count photos (default 300) of 2 to 6 MNIST test digits each, taken in a fixed shuffled
order, written side by side with spacing from overlapping to wide (per number, -0.15 to 0.7 of the
digits' height between their ink), sizes (0.85 to 1.15) and baselines (+-0.1 of the height) varying
per digit, 40 to 150 pixels high, half as dark ink on paper (uneven light, grain, fibres) and half as
chalk on a board (textured), blurred a little and saved as JPEG (quality 60 to 92). The program's own
--predict reads them all in one call; a number counts as read when every digit is right and there
are no more and no fewer. Also printed: the digits the model misreads even clean (28x28, as MNIST has
them), so that the model's own mistakes can be told from the photo's (the numbers with none of them
are the most a photo could get), and the numbers read right by how far apart their digits are.

Single digits, the figures of docs/photos.md: --singles bold, tight-cropped digits (the tests'
`bold_photos`, as tests/bold_accuracy.py makes them) and phone-style photos (the tests'
`phone_photo`, five kinds), read by --predict the same way; --no-numbers measures only those.
"""

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "handwritten_digit_classification.py"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from digits.data import load_mnist, preprocess  # noqa: E402


def written_digit(image, height, rng):
    """A 28x28 MNIST digit cropped to its ink and scaled to `height` pixels, as ink in [0, 1]."""
    rows, cols = np.flatnonzero(image.max(axis=1) > 30), np.flatnonzero(image.max(axis=0) > 30)
    ink = Image.fromarray(image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    width = max(1, round(ink.width * height / ink.height))
    return np.clip(np.asarray(ink.resize((width, height), Image.BICUBIC), dtype=np.float32) / 255, 0, 1)


class Ink(NamedTuple):
    """Digits written side by side: ink in [0, 1] on a canvas with margins, the digits' height, the
    paper between one digit's ink and the next as a share of that height (below 0: they overlap), and
    which digit wrote each pixel (1 to n, the darkest where two cross; 0: paper)."""

    canvas: np.ndarray
    height: int
    spacing: float
    owner: np.ndarray


class NumberPhoto(NamedTuple):
    """A photo of a number: the image, how far apart its digits were written, and which digit wrote
    each pixel (Ink's owner: the answer a segmentation is measured against)."""

    image: Image.Image
    spacing: float
    owner: np.ndarray


class Made(NamedTuple):
    """One number photo on disk: the number, the test digits that wrote it, their spacing."""

    number: str
    indices: list
    spacing: float


SPACINGS = [(-0.15, -0.05, "overlapping"), (-0.05, 0.05, "touching or nearly"), (0.05, 0.2, "close"),
            (0.2, 0.71, "apart")]


def number_ink(images, rng):
    """The digits written side by side, as Ink."""
    height = int(rng.integers(40, 151))
    spacing = rng.uniform(-0.15, 0.7)  # between one digit's ink and the next, a share of the height
    digits = [written_digit(image, round(height * rng.uniform(0.85, 1.15)), rng) for image in images]
    margin = int(height * rng.uniform(0.3, 1.2)) + 5
    slope = rng.uniform(-0.05, 0.05)  # the line of writing drifts a little up or down
    places, x = [], margin
    for ink in digits:
        top = margin + round(height * (0.15 + rng.uniform(-0.1, 0.1)) + slope * (x - margin)) + height - ink.shape[0]
        places.append((int(top), int(x)))
        x += ink.shape[1] + round(height * (spacing + rng.uniform(-0.05, 0.05)))
    right = max(left + ink.shape[1] for (_, left), ink in zip(places, digits)) + margin
    bottom = max(top + ink.shape[0] for (top, _), ink in zip(places, digits)) + margin
    shift = max(0, -min(top for top, _ in places) + 5)
    canvas, owner = np.zeros((bottom + shift, right), np.float32), np.zeros((bottom + shift, right), np.int32)
    for number, ((top, left), ink) in enumerate(zip(places, digits), start=1):
        window = np.s_[top + shift : top + shift + ink.shape[0], left : left + ink.shape[1]]
        owner[window] = np.where((ink > 0.1) & (ink > canvas[window]), number, owner[window])
        np.maximum(canvas[window], ink, out=canvas[window])
    return Ink(canvas, height, spacing, owner)


def number_photo(images, kind, rng):
    """A photo of the number the MNIST digits `images` write, on paper or a chalkboard: an RGB NumberPhoto."""
    ink, height, spacing, owner = number_ink(images, rng)
    if rng.random() < 0.3:  # a marker: thicker strokes
        size = 3 if height < 90 else 5
        ink = np.asarray(Image.fromarray(ink).filter(ImageFilter.MaxFilter(size)))
    rows, cols = ink.shape
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    light = 1 - rng.uniform(0, 0.35) * (xs / cols if rng.random() < 0.5 else 1 - xs / cols)
    light = light * (1 - rng.uniform(0, 0.15) * ys / rows)
    fibres = np.asarray(Image.fromarray(np.uint8(rng.integers(0, 256, (rows, cols)))).filter(
        ImageFilter.GaussianBlur(2)), dtype=np.float32)
    fibres = (fibres - fibres.mean()) / max(float(fibres.std()), 1e-6)
    grain = rng.normal(0, rng.uniform(0.005, 0.03), (rows, cols))
    if kind == "paper":
        paper, pen = rng.uniform(0.78, 0.95), rng.uniform(0.08, 0.3)
        gray = light * (paper + 0.03 * fibres - (paper - pen) * ink) + grain
        tint = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 1.0)])
    else:  # chalk on a board: light, patchy strokes on a dark green-grey
        board, chalk = rng.uniform(0.12, 0.3), rng.uniform(0.7, 0.92)
        patchy = np.clip(1 - 0.25 * np.abs(fibres), 0.4, 1)
        gray = light * (board + 0.02 * fibres + (chalk - board) * ink * patchy) + grain
        tint = np.array([rng.uniform(0.85, 1.0), 1.0, rng.uniform(0.85, 1.0)])
    rgb = np.clip(gray[..., None] * tint, 0, 1)
    image = Image.fromarray(np.uint8(255 * rgb), "RGB")
    return NumberPhoto(image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2))), spacing, owner)


def number_photos(folder, count, x_test, y_test, seed=19):
    """`count` number photos saved as JPEG in `folder`; {path: Made}."""
    rng = np.random.default_rng(seed)
    order = iter(rng.permutation(len(x_test)))
    photos = {}
    for n in range(count):
        indices = [next(order) for _ in range(int(rng.integers(2, 7)))]
        kind = ("paper", "chalkboard")[n % 2]
        image, spacing, _ = number_photo(x_test[indices], kind, rng)
        path = folder / f"number{n:03d}-{kind}.jpg"
        image.save(path, quality=int(rng.integers(60, 93)))
        photos[str(path)] = Made("".join(str(y_test[i]) for i in indices), indices, spacing)
    return photos


def read_numbers(paths, model, folder):
    """{path: the number --predict printed} for the images, read in one call of the program."""
    result = subprocess.run([sys.executable, str(SCRIPT), "--predict", *paths, "--model", str(model),
                             "--output-dir", str(folder)], capture_output=True, text=True, check=False)
    return {m.group(1): m.group(2) for m in re.finditer(r"^(.+): (\d+) \(", result.stdout, re.MULTILINE)}


def singles(model, folder, count):
    """Lines on single-digit photos read right: bold tight crops and phone-style photos."""
    import keras
    from conftest import KINDS, bold_photos, phone_photo

    x_test, y_test = load_mnist("bundled")[2:4]
    loaded = keras.models.load_model(model)
    bold = bold_photos(loaded, folder, count, np.random.default_rng(14), first=5000)
    rng = np.random.default_rng(0)
    phone = {}
    for n, i in enumerate(range(2000, 2000 + count)):
        image, extension = phone_photo(x_test[i], KINDS[n % len(KINDS)], rng)
        path = folder / f"phone{i}-{KINDS[n % len(KINDS)]}.{extension}"
        image.save(path)
        phone[str(path)] = int(y_test[i])
    examples = {str(p): int(p.name.split("-")[1]) for p in sorted((ROOT / "data" / "examples").glob("digit-*"))}
    read = read_numbers([*bold, *phone, *examples], model, folder / "out")
    lines = []
    for name, photos in (("bold, tight-cropped digits (tests' bold_photos)", bold),
                         ("phone-style photos (tests' phone_photo)", phone), ("example photos", examples)):
        right = sum(read.get(path) == str(label) for path, label in photos.items())
        lines.append(f"{right} of {len(photos)} {name} read right ({right / len(photos):.1%})")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "docs" / "run" / "model.keras",
                        help="the trained model to measure (default: docs/run/model.keras)")
    parser.add_argument("--count", type=int, default=300, help="number photos to make and read")
    parser.add_argument("--singles", type=int, default=260, help="single-digit photos of each kind (0: none)")
    parser.add_argument("--seed", type=int, default=19,
                        help="which number photos to make (19: the figures quoted; another: a held-out set)")
    parser.add_argument("--no-numbers", action="store_true", help="measure the single digits only")
    parser.add_argument("--keep", type=Path, help="keep the photos in this folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        if not args.no_numbers:
            report_numbers(args, folder)
        if args.singles:
            (folder / "singles").mkdir(exist_ok=True)
            for line in singles(args.model, folder / "singles", args.singles):
                print(line)


def report_numbers(args, folder):
    """Make, read and score the number photos; print the figures."""
    import keras

    _, _, x_test, y_test, _ = load_mnist("bundled")
    photos = number_photos(folder, args.count, x_test, y_test, args.seed)
    read = read_numbers(list(photos), args.model, folder / "out")
    right = [path for path, made in photos.items() if read.get(path) == made.number]
    counted = sum(len(read.get(path, "")) == len(made.number) for path, made in photos.items())
    used = np.concatenate([made.indices for made in photos.values()])
    clean = keras.models.load_model(args.model).predict(preprocess(x_test), verbose=0).argmax(axis=1)
    digits = sum(len(made.number) for made in photos.values())
    readable = [path for path, made in photos.items() if (clean[made.indices] == y_test[made.indices]).all()]
    print(f"{len(right)} of {len(photos)} numbers read with every digit right ({len(right) / len(photos):.1%}) "
          f"by {args.model}; {counted} with the right count of digits")
    print(f"({digits} digits in all; the model misreads {int((clean[used] != y_test[used]).sum())} of them even "
          f"clean, 28x28 as MNIST has them: {len(readable)} numbers have every digit read right clean, the most "
          f"a photo could get; of those, {len(set(readable) & set(right))} are read right from the photo)")
    print("By how far apart the digits were written (paper between them, a share of their height):")
    for low, high, name in SPACINGS:
        band = [path for path, made in photos.items() if low <= made.spacing < high]
        print(f"  {name} ({low:+.2f} to {min(high, 0.7):+.2f}): {sum(path in right for path in band)} of "
              f"{len(band)} read right")
    for path, made in photos.items():
        if read.get(path) != made.number:
            print(f"  {Path(path).name}: {made.number} read as {read.get(path, 'nothing')} "
                  f"(spacing {made.spacing:+.2f})")


if __name__ == "__main__":
    main()
