"""How well `--predict` reads whole numbers, and single digits, in photos made from MNIST test digits.

    python benchmarks/number_photos.py            # after a default run: outputs/model.keras

Numbers: --count photos (default 300) of 2 to 6 MNIST test digits each, taken in a fixed shuffled
order, written side by side with spacing from overlapping to wide (per number, -0.15 to 0.7 of the
digits' height between their ink), sizes (0.85 to 1.15) and baselines (+-0.1 of the height) varying
per digit, 40 to 150 pixels high, half as dark ink on paper (uneven light, grain, fibres) and half as
chalk on a board (textured), blurred a little and saved as JPEG (quality 60 to 92). The program's own
--predict reads them all in one call; a number counts as read when every digit is right and there
are no more and no fewer. Also printed: the digits the model misreads even clean (28x28, as MNIST has
them), so that the model's own mistakes can be told from the photo's (the numbers with none of them
are the most a photo could get), and the numbers read right by how far apart their digits are.

Single digits, the figures of docs/photos.md: --singles bold, tight-cropped digits (tools/digit_photos.py's
`bold_photos`, as tools/bold_accuracy.py makes them) and phone-style photos (its
`phone_photo`, five kinds), read by --predict the same way; --no-numbers measures only those.
"""

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "handwritten_digit_classification.py"
sys.path.insert(0, str(ROOT))

from digits.data import load_mnist, preprocess  # noqa: E402
from digits.lines import SPACINGS, number_ink, photo_of  # noqa: E402
from tools.digit_photos import KINDS, bold_photos, phone_photo  # noqa: E402


class Made(NamedTuple):
    """One number photo on disk: the number, the test digits that wrote it, their spacing."""

    number: str
    indices: list
    spacing: float


def number_photos(folder, count, x_test, y_test, seed=19):
    """`count` number photos saved as JPEG in `folder`; {path: Made}."""
    rng = np.random.default_rng(seed)
    order = iter(rng.permutation(len(x_test)))
    photos = {}
    for n in range(count):
        indices = [next(order) for _ in range(int(rng.integers(2, 7)))]
        kind = ("paper", "chalkboard")[n % 2]
        ink = number_ink(x_test[indices], rng)
        path = folder / f"number{n:03d}-{kind}.jpg"
        photo_of(ink.canvas, ink.height, kind, rng).save(path, quality=int(rng.integers(60, 93)))
        photos[str(path)] = Made("".join(str(y_test[i]) for i in indices), indices, ink.spacing)
    return photos


# Letters whose shapes are not a digit's (no O, l, I, S, Z, B, b, g, q, G), from the fonts Matplotlib ships.
LETTERS = "acdefhijkmnprtuvwxyACDEFHJKLMNPRTUVWXY"
FONTS = ["DejaVuSans.ttf", "DejaVuSerif.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSerif-Italic.ttf",
         "STIXGeneralItalic.ttf", "DejaVuSans-Bold.ttf"]


def letter_photos(folder, count, seed):
    """`count` photos of one to three letters on paper, as the number photos are made; [path]."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    fonts = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    rng = np.random.default_rng(seed)
    paths = []
    for n in range(count):
        text = "".join(rng.choice(list(LETTERS), int(rng.integers(1, 4))))
        font = ImageFont.truetype(str(fonts / FONTS[n % len(FONTS)]), int(rng.integers(40, 120)))
        left, top, right, bottom = font.getbbox(text)
        margin = (bottom - top) // 2 + 5
        canvas = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 0)
        ImageDraw.Draw(canvas).text((margin - left, margin - top), text, fill=255, font=font)
        path = folder / f"letters{n:03d}-{text}.jpg"
        photo_of(np.asarray(canvas, np.float32) / 255, bottom - top, "paper", rng).save(path, quality=85)
        paths.append(str(path))
    return paths


def report_letters(args, folder):
    """Photos of letters read by --predict: how many are answered with a sure digit (wrong), how many
    are refused or marked unsure."""
    paths = letter_photos(folder, args.letters, args.seed)
    result = subprocess.run([sys.executable, str(SCRIPT), "--predict", *paths, "--model", str(args.model),
                             *(["--reader", str(args.reader)] if args.reader else []),
                             "--output-dir", str(folder / "letters-out")], capture_output=True, text=True, check=False)
    said = [line.split(": ", 1) for line in result.stdout.splitlines() + result.stderr.splitlines() if ": " in line]
    lines = {path: line for path, line in said if path in paths}
    unsure = [path for path, line in lines.items() if any(word in line for word in ("unsure", "error", ", else "))]
    print(f"{len(paths)} photos of letters ({', '.join(FONTS)}): {len(unsure)} refused or marked unsure "
          f"({len(unsure) / len(paths):.1%}), {len(paths) - len(unsure)} read as a sure digit or number")


def read_numbers(paths, model, folder, reader=None):
    """{path: the number --predict printed} for the images, read in one call of the program."""
    chosen = ["--reader", str(reader)] if reader else []
    result = subprocess.run([sys.executable, str(SCRIPT), "--predict", *paths, "--model", str(model), *chosen,
                             "--output-dir", str(folder)], capture_output=True, text=True, check=False)
    return {m.group(1): m.group(2) for m in re.finditer(r"^(.+): (\d+) \(", result.stdout, re.MULTILINE)}


def singles(model, folder, count, reader=None):
    """Lines on single-digit photos read right: bold tight crops and phone-style photos."""
    import keras

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
    read = read_numbers([*bold, *phone, *examples], model, folder / "out", reader)
    lines = []
    for name, photos in (("bold, tight-cropped digits (tests' bold_photos)", bold),
                         ("phone-style photos (tests' phone_photo)", phone), ("example photos", examples)):
        right = sum(read.get(path) == str(label) for path, label in photos.items())
        lines.append(f"{right} of {len(photos)} {name} read right ({right / len(photos):.1%})")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("outputs") / "model.keras",
                        help="the trained model that reads single digits (default: outputs/model.keras, "
                             "a default run's)")
    parser.add_argument("--reader", type=Path,
                        help="the number reader to measure (default: the shipped models/number_reader.keras)")
    parser.add_argument("--count", type=int, default=300, help="number photos to make and read")
    parser.add_argument("--singles", type=int, default=260, help="single-digit photos of each kind (0: none)")
    parser.add_argument("--seed", type=int, default=19,
                        help="which number photos to make (19: the figures quoted; another: a held-out set)")
    parser.add_argument("--timed", type=int, default=50, help="number photos timed one by one (default 50)")
    parser.add_argument("--letters", type=int, default=100, help="photos of letters to read (0: none)")
    parser.add_argument("--no-numbers", action="store_true", help="measure the single digits only")
    parser.add_argument("--keep", type=Path, help="keep the photos in this folder (default: a temporary one)")
    args = parser.parse_args()
    if not args.model.is_file():
        sys.exit(f"no trained model at {args.model}: train one with `python handwritten_digit_classification.py`, "
                 f"or pass --model PATH")
    with tempfile.TemporaryDirectory() as temporary:
        folder = args.keep or Path(temporary)
        folder.mkdir(parents=True, exist_ok=True)
        if not args.no_numbers:
            report_numbers(args, folder)
        if args.letters:
            report_letters(args, folder)
        if args.singles:
            (folder / "singles").mkdir(exist_ok=True)
            for line in singles(args.model, folder / "singles", args.singles, args.reader):
                print(line)


def report_numbers(args, folder):
    """Make, read and score the number photos; print the figures."""
    import keras

    _, _, x_test, y_test, _ = load_mnist("bundled")
    photos = number_photos(folder, args.count, x_test, y_test, args.seed)
    read = read_numbers(list(photos), args.model, folder / "out", args.reader)
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
    if args.timed:
        print(time_reading(list(photos)[: args.timed], args.model, args.reader))


def time_reading(paths, model_path, reader_path):
    """How long one number photo takes to read once the models are loaded: the median of `paths`,
    each read alone as --predict reads it (decode, find the line, read it), on this machine's CPU."""
    import time

    from digits.predict import load_trained_model, predict_images
    from digits.reader import READER_FILE, load_reader

    model, reader = load_trained_model(model_path), load_reader(reader_path or READER_FILE)
    seconds = []
    with contextlib.redirect_stdout(io.StringIO()):
        predict_images(model, paths[:1], reader)  # the first call compiles
        for path in paths:
            started = time.perf_counter()
            predict_images(model, [path], reader)
            seconds.append(time.perf_counter() - started)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    return (f"Reading one number photo, models loaded: median {1000 * np.median(seconds):.0f} ms, slowest "
            f"{1000 * max(seconds):.0f} ms, over {len(seconds)} photos ({cpu}, {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
