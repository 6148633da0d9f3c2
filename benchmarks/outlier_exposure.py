"""An experiment for reading whole numbers: teach a trained model to say "not one digit".

    python benchmarks/outlier_exposure.py --output runs/not-one-digit.keras
    python benchmarks/number_photos.py --model runs/not-one-digit.keras

The network reads two merged digits, or half of one, confidently as a digit: nothing in its ten
probabilities says "not one digit", so digits.cuts cannot tell a wrong cut from a right one. This
fine-tunes --model (default: the README's run) for --epochs on the 60,000 training digits plus
--negatives images that are not one digit, made from training digits (two side by side, touching
or overlapping; or the left or right 30-65% of one), each taught to answer a tenth for every class
(outlier exposure, Hendrycks et al., 2019). It prints the test accuracy and how sure the model is of
clean test digits and of such images made from test digits, then saves the model to --output.
The result is in docs/photos.md#a-whole-number; the default run does not train this way.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from digits.data import load_mnist, preprocess  # noqa: E402
from digits.photos import centred  # noqa: E402


def ink_of(image, height):
    """A 28x28 MNIST digit cropped to its ink and scaled to `height` pixels, as ink in [0, 1]."""
    rows, cols = np.flatnonzero(image.max(axis=1) > 30), np.flatnonzero(image.max(axis=0) > 30)
    ink = Image.fromarray(image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32) / 255)
    ink = ink.resize((max(1, round(ink.width * height / ink.height)), height), Image.BICUBIC)
    return np.clip(np.asarray(ink), 0, 1)


def two_digits(a, b, rng):
    """Two digits side by side, from a tenth of their height apart to a quarter overlapping, as one image."""
    left, right = (ink_of(image, round(40 * rng.uniform(0.85, 1.15))) for image in (a, b))
    start = max(0, left.shape[1] + round(40 * rng.uniform(-0.25, 0.1)))
    height = max(left.shape[0], right.shape[0]) + 6
    canvas = np.zeros((height, start + right.shape[1] + left.shape[1]), np.float32)
    for ink, x in ((left, 0), (right, start)):
        top = int(rng.integers(0, height - ink.shape[0] + 1))
        region = canvas[top : top + ink.shape[0], x : x + ink.shape[1]]
        np.maximum(region, ink, out=region)
    return centred(canvas)


def part_of(image, rng):
    """The left or right 30-65% of a digit, or None when that holds no ink."""
    ink = ink_of(image, 40)
    cut = round(ink.shape[1] * rng.uniform(0.3, 0.65))
    piece = ink[:, :cut] if rng.random() < 0.5 else ink[:, cut:]
    return centred(piece) if piece.shape[1] >= 3 and piece.max() > 0.2 else None


def not_digits(images, count, rng):
    """`count` 28x28 images that are not one digit: 60% two digits, 40% part of one."""
    made = []
    while len(made) < count:
        if rng.random() < 0.6:
            made.append(two_digits(*images[rng.integers(0, len(images), 2)], rng))
        elif (piece := part_of(images[rng.integers(0, len(images))], rng)) is not None:
            made.append(piece)
    return np.stack(made)[..., None]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "docs" / "run" / "model.keras")
    parser.add_argument("--output", type=Path, required=True, help="where to save the fine-tuned model")
    parser.add_argument("--negatives", type=int, default=12000, help="images that are not one digit")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-images", type=int, default=60000, help="the first N training digits (a quick check)")
    args = parser.parse_args()
    import keras

    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test, _ = load_mnist("bundled")
    x_train, y_train = x_train[: args.train_images], y_train[: args.train_images]
    rng = np.random.default_rng(args.seed)
    images = np.concatenate([preprocess(x_train), not_digits(x_train, args.negatives, rng)])
    targets = np.concatenate([np.eye(10, dtype=np.float32)[y_train], np.full((args.negatives, 10), 0.1, np.float32)])
    model = keras.models.load_model(args.model)
    model.compile(optimizer=keras.optimizers.Adam(args.learning_rate), loss="categorical_crossentropy")
    model.fit(images, targets, batch_size=128, epochs=args.epochs, shuffle=True, verbose=2)
    clean = model.predict(preprocess(x_test), verbose=0)
    others = model.predict(not_digits(x_test, 2000, np.random.default_rng(args.seed + 1)), verbose=0)
    print(f"test accuracy {(clean.argmax(axis=1) == y_test).mean():.4f}; the surest class's probability, median: "
          f"{np.median(clean.max(axis=1)):.3f} on test digits, {np.median(others.max(axis=1)):.3f} on 2,000 images "
          f"that are not one digit (made from test digits)")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.output)


if __name__ == "__main__":
    main()
