"""Photos of MNIST test digits as people take them, for the tests and the tools that measure --predict:
a phone's photo of a digit on paper (KINDS), and a digit written with a thick marker, cropped tight to
its ink (BOLD_KINDS); `predictions` reads --predict's answers back from what it printed.
"""
import functools
import re

import numpy as np
from PIL import Image, ImageFilter

from digits.data import load_mnist, preprocess


@functools.cache
def mnist_digits():
    """The bundled MNIST, read once."""
    return load_mnist("bundled")


KINDS = ["gray-png", "rgb-jpeg", "uneven-gray", "rgba-transparent", "blue-ink-jpeg"]


def phone_photo(digit, kind, rng):
    """A 28x28 MNIST digit (light on dark) as dark ink on light paper, enlarged, off-centre, in a big frame."""
    scale = int(rng.integers(5, 10))
    ink = np.asarray(Image.fromarray(digit).resize((28 * scale, 28 * scale), Image.BICUBIC), dtype=float) / 255
    height, width = ink.shape[0] + int(rng.integers(150, 400)), ink.shape[1] + int(rng.integers(150, 400))
    top, left = int(rng.integers(0, height - ink.shape[0])), int(rng.integers(0, width - ink.shape[1]))
    canvas = np.zeros((height, width))
    canvas[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    if kind == "rgba-transparent":  # ink drawn on nothing: transparency is the paper
        black = np.zeros((height, width, 3), np.uint8)
        return Image.fromarray(np.dstack([black, (canvas * 255).astype(np.uint8)]), "RGBA"), "png"
    paper = 0.92
    if kind in ("uneven-gray", "blue-ink-jpeg"):  # lamp on one side, shadow on the other, grain
        gradient = np.linspace(0.5, 0.95, width)[None, :] * np.linspace(0.85, 1.0, height)[:, None]
        paper = gradient + rng.normal(0, 0.02, (height, width))
    gray = np.clip(paper * (1 - 0.85 * canvas), 0, 1)
    if kind == "gray-png":
        return Image.fromarray((gray * 255).astype(np.uint8), "L"), "png"
    rgb = np.dstack([gray, gray, gray]) if kind != "blue-ink-jpeg" else np.dstack(
        [gray, gray, np.clip(gray + 0.5 * canvas, 0, 1)])
    image = Image.fromarray((rgb * 255).astype(np.uint8), "RGB")
    return image, ("png" if kind == "uneven-gray" else "jpg")


BOLD_KINDS = ["paper", "chalkboard", "uneven-paper", "uneven-chalkboard"]


def bold_photo(digit, size, kind, rng):
    """A 28x28 MNIST digit written with a thick marker and cropped tight to the ink, `size` px on its longer side.

    Paper is dark ink on light; chalkboard is light chalk on dark; uneven adds a lamp on one side.
    """
    big = Image.fromarray(digit).resize((112, 112), Image.BICUBIC)
    thick = np.asarray(big.filter(ImageFilter.MaxFilter(int(rng.choice([5, 7, 9])))), dtype=float) / 255
    rows, cols = np.flatnonzero(thick.max(axis=1) > 0.5), np.flatnonzero(thick.max(axis=0) > 0.5)
    thick = thick[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    factor = size / max(thick.shape)
    shape = (max(1, round(thick.shape[1] * factor)), max(1, round(thick.shape[0] * factor)))
    ink = np.clip(np.asarray(Image.fromarray(thick).resize(shape, Image.BICUBIC)), 0, 1)
    height, width = ink.shape
    light = 1.0
    if kind.startswith("uneven"):
        light = np.linspace(0.55, 1.0, width)[None, :] * np.linspace(0.85, 1.0, height)[:, None]
        light = light if rng.random() < 0.5 else light[::-1, ::-1]
    if kind.endswith("paper"):
        gray = light * (0.92 - 0.8 * ink)
    else:
        gray = light * (0.18 + 0.7 * ink)
    gray = np.clip(gray + rng.normal(0, 0.015, gray.shape), 0, 1)
    image = Image.fromarray((gray * 255).astype(np.uint8), "L")
    if rng.random() < 0.5:
        return image.convert("RGB"), "jpg"
    return image, "png"


def bold_photos(model, folder, count, rng, first=3000):
    """Bold tight crops of test digits the model reads right when clean (None: all), 48 to 1,600 px;
    {path: label}."""
    mnist = mnist_digits()
    x_test, y_test = mnist.x_test, mnist.y_test
    indices = np.arange(first, first + count)
    untouched = y_test[indices] if model is None else model.predict(preprocess(x_test[indices]), verbose=0).argmax(1)
    paths = {}
    for n, i in enumerate(indices):
        if untouched[n] != y_test[i]:
            continue
        size = int(np.exp(rng.uniform(np.log(48), np.log(1600))))
        kind = BOLD_KINDS[n % len(BOLD_KINDS)]
        image, extension = bold_photo(x_test[i], size, kind, rng)
        path = folder / f"bold{i}-{kind}-{size}px.{extension}"
        image.save(path)
        paths[str(path)] = int(y_test[i])
    return paths


def predictions(stdout):
    """{image: digit} read from --predict's output lines."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(.+): (\d) \(\d+\.\d%\)", stdout, re.MULTILINE)}
