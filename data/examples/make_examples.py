"""Make the example photos in this folder from MNIST test digits, the way the tests do.

    python data/examples/make_examples.py

Each is a test digit drawn as dark ink on light paper, enlarged, off-centre in a wide frame, some
in colour, on an unevenly lit page or with a transparent background: what a phone photo of a
handwritten digit looks like to the program. Try them with
`python handwritten_digit_classification.py --predict data/examples/*.png data/examples/*.jpg`.
The two number-*.jpg photos are whole numbers, read by the number reader.
"""

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1] / "tests"))
sys.path.insert(0, str(HERE.parents[1]))
from conftest import KINDS, phone_photo  # noqa: E402 (the tests' photo maker)

from digits.data import load_mnist  # noqa: E402

_, _, x_test, y_test, _ = load_mnist("bundled")
rng = np.random.default_rng(2026)
for n, index in enumerate([3, 2, 1, 18, 4, 8, 11, 0]):  # test digits 0 to 7
    kind = KINDS[n % len(KINDS)]
    image, extension = phone_photo(x_test[index], kind, rng)
    path = HERE / f"digit-{y_test[index]}-{kind}.{extension}"
    image.save(path)
    print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)

# Two numbers, written with test digits side by side as the number benchmark writes them, one touching.
from digits.lines import number_ink, photo_of  # noqa: E402

rng = np.random.default_rng(2027)
for indices, spacing, kind in (([2, 1, 3, 4], 0.35, "paper"), ([0, 18, 15], -0.02, "chalkboard")):
    ink = number_ink(x_test[indices], rng, height=90, spacing=spacing)
    path = HERE / f"number-{''.join(str(y_test[i]) for i in indices)}-{kind}.jpg"
    photo_of(ink.canvas, ink.height, kind, rng).save(path, quality=85)
    print(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)
