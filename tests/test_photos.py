"""Reading photos of digits (--predict): what is a digit and what is only paper, and the order of the report."""
import io
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import SCRIPT, refusal, run_cli
from PIL import Image, ImageFilter

from digits.data import load_mnist, preprocess
from digits.photos import read_image, to_mnist_form

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


def read_right(model, indices):
    """Of these test digits, the (index, label) pairs the model reads right when clean."""
    mnist = load_mnist("bundled")
    clean = model.predict(preprocess(mnist.x_test[indices]), verbose=0).argmax(axis=1)
    return [(int(i), int(mnist.y_test[i])) for n, i in enumerate(indices) if clean[n] == mnist.y_test[i]]


def phone_photos(model, folder, indices, rng):
    """Phone photos of the test digits the model reads right when clean, of every kind; {path: label}."""
    x_test = load_mnist("bundled").x_test
    paths = {}
    for n, (i, label) in enumerate(read_right(model, indices)):
        kind = KINDS[n % len(KINDS)]
        image, extension = phone_photo(x_test[i], kind, rng)
        path = folder / f"digit{i}-{kind}.{extension}"
        image.save(path)
        paths[str(path)] = label
    return paths


def bold_photos(model, folder, indices, rng):
    """Bold tight crops of test digits the model reads right when clean, 48 to 1,600 px; {path: label}."""
    x_test = load_mnist("bundled").x_test
    paths = {}
    for n, (i, label) in enumerate(read_right(model, indices)):
        size = int(np.exp(rng.uniform(np.log(48), np.log(1600))))
        kind = BOLD_KINDS[n % len(BOLD_KINDS)]
        image, extension = bold_photo(x_test[i], size, kind, rng)
        path = folder / f"bold{i}-{kind}-{size}px.{extension}"
        image.save(path)
        paths[str(path)] = label
    return paths


def predictions(stdout):
    """{path: digit} from --predict's lines."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(.+): (\d) \(\d+\.\d%\)", stdout, re.MULTILINE)}


def flat_images(rng):
    """Pictures with no digit in them, {name: image}: white, black, every tenth grey at several sizes,
    noisy, unevenly lit, coloured paper, and a JPEG of a blank page under a lamp."""
    images = {"white-800x600.png": Image.new("L", (800, 600), 255), "black-800x600.png": Image.new("L", (800, 600), 0),
              "black-28x28.png": Image.new("L", (28, 28), 0), "white-28x28.png": Image.new("L", (28, 28), 255),
              "white-800x600.jpg": Image.new("RGB", (800, 600), "white"), "blue-paper.png": Image.new("RGB", (640, 480),
                                                                                                       (70, 90, 200))}
    for size in ((800, 600), (100, 100), (333, 777), (28, 28), (3000, 2000)):
        for level in range(0, 256, 5):
            images[f"gray{level}-{size[0]}x{size[1]}.png"] = Image.new("L", size, level)
    height, width = 600, 800
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    radius = np.hypot(xs - 0.5, ys - 0.37)
    lights = {"left-lamp": 0.45 + 0.5 * xs * 4 / 3, "vignette": 0.95 * np.cos(np.clip(radius, 0, 1.2)) ** 4,
              "spot": 0.4 + 0.55 * np.exp(-((xs - 0.3) ** 2 + (ys - 0.2) ** 2) / 0.08), "cone": 0.95 - 0.5 * radius}
    for name, light in lights.items():
        images[f"{name}.png"] = Image.fromarray(np.uint8(255 * np.clip(light, 0, 1)))
        images[f"{name}-grain.png"] = Image.fromarray(np.uint8(255 * np.clip(light + rng.normal(0, 0.03, light.shape),
                                                                               0, 1)))
    for sigma in (0.02, 0.05, 0.1):
        images[f"noise{sigma}.png"] = Image.fromarray(np.uint8(255 * np.clip(rng.normal(0.6, sigma, (480, 640)), 0, 1)))
    # Paper: fibres (blurred noise) and grain, lit from one corner, photographed in colour and saved as JPEG.
    fibres = np.asarray(Image.fromarray(np.uint8(rng.integers(0, 256, (height, width)))).filter(
        ImageFilter.GaussianBlur(3)), dtype=float)
    fibres = (fibres - fibres.mean()) / fibres.std()
    paper = (0.55 + 0.35 * (1 - radius)) * (1 + 0.02 * fibres) + rng.normal(0, 0.015, (height, width))
    rgb = np.clip(np.dstack([paper, 0.97 * paper, 0.9 * paper]), 0, 1)
    images["paper.jpg"] = Image.fromarray(np.uint8(255 * rgb))
    return images


def save_all(images, folder):
    """Save {name: image} in folder (each in the format its name says); the paths, in order."""
    paths = []
    for name, image in images.items():
        paths.append(folder / name)
        image.save(paths[-1])
    return paths


def test_pictures_without_a_digit_are_blank_and_the_digits_beside_them_are_read(trained, tmp_path):
    """White, black, flat greys at several sizes, noise, uneven light, a JPEG of paper: no digit in any."""
    out, _, _ = trained
    blank = save_all(flat_images(np.random.default_rng(0)), tmp_path)
    x_test = load_mnist("bundled").x_test
    digit = tmp_path / "digit.png"
    image, _ = phone_photo(x_test[0], "gray-png", np.random.default_rng(0))
    image.save(digit)
    result = run_cli("--predict", *blank, digit, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 1
    read_as_digits = [line for line in result.stdout.splitlines() if ": error:" not in line and "(" in line]
    assert read_as_digits == [line for line in read_as_digits if line.startswith(f"{digit}: ")]
    assert result.stderr.splitlines() == [f"{path}: error: blank image: no digit found" for path in blank]
    assert list(predictions(result.stdout)) == [str(digit)]


def test_a_blank_picture_is_blank_in_the_pipeline_too():
    rng = np.random.default_rng(1)
    for name, image in flat_images(rng).items():
        buffer = io.BytesIO()
        image.save(buffer, "JPEG" if name.endswith(".jpg") else "PNG")
        buffer.seek(0)
        assert to_mnist_form(read_image(buffer)[0]) is None, name
    assert to_mnist_form(np.zeros((28, 28), np.float32)) is None  # no shortcut for an MNIST-sized black square


def test_an_image_already_in_mnist_form_passes_unchanged():
    x_test = load_mnist("bundled").x_test
    for index in range(0, 10_000, 97):
        digit = x_test[index].astype(np.float32) / 255
        np.testing.assert_array_equal(to_mnist_form(digit), digit)


def test_phone_photos_and_bold_crops_are_read_like_the_digits(trained, tmp_path):
    out, _, _ = trained
    import keras

    model = keras.models.load_model(out / "model.keras")
    paths = {**phone_photos(model, tmp_path, np.arange(2000, 2060), np.random.default_rng(0)),
             **bold_photos(model, tmp_path, np.arange(3000, 3060), np.random.default_rng(3))}
    result = run_cli("--predict", *paths, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 0, result.stderr
    predicted = predictions(result.stdout)
    assert set(predicted) == set(paths)
    wrong = [path for path, label in paths.items() if predicted[path] != label]
    assert len(wrong) <= 0.05 * len(paths), wrong


def run_merged(*args):
    """Run the program with stderr into stdout, as a terminal shows them."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=300, check=False,
                          env={**__import__("os").environ, "PYTHONUNBUFFERED": "1"})


def test_results_are_printed_in_the_order_given_failures_in_place(trained, tmp_path):
    out, _, _ = trained
    x_test = load_mnist("bundled").x_test
    for index in (0, 1, 2):
        Image.fromarray(x_test[index]).save(tmp_path / f"digit{index}.png")
    (tmp_path / "notes.png").write_text("this is not a picture")
    Image.new("L", (200, 200), 255).save(tmp_path / "blank.png")
    order = ["digit0.png", "notes.png", "digit1.png", "missing.png", "blank.png", "digit2.png"]
    result = run_merged("--predict", *(tmp_path / name for name in order), "--model", out / "model.keras",
                        "--output-dir", tmp_path / "pred")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines[: len(order)]] == [str(tmp_path / name) for name in order]
    assert [": error: " in line for line in lines[: len(order)]] == [False, True, False, True, True, False]
    assert lines[len(order)] == f"Saved: {tmp_path / 'pred' / 'predictions.png'}"


@pytest.mark.parametrize("name, content", [("README.md", b"# A project\n\nText, not a model.\n"),
                                           ("digit.png", None), ("model.keras", b"not a zip archive at all\n")])
def test_a_file_that_is_no_keras_model_is_called_so_plainly(tmp_path, name, content):
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    path = tmp_path / name
    if content is None:
        Image.new("L", (28, 28)).save(path)
    else:
        path.write_bytes(content)
    message = refusal(run_cli("--predict", tmp_path / "x.png", "--model", path))
    assert message.startswith(f"error: --model: {path} is not a Keras model file"), message
    assert message.count("(") == message.count(")") and message.count("`") % 2 == 0, message
    assert "Keras 3 only supports" not in message and "File not found" not in message, message


def test_the_confusion_matrix_colour_bar_says_per_cent_and_counts_in_per_cent():
    from digits.pictures import confusion_figure, save_figure

    confusion = np.diag([10] * 10)
    confusion[3, 3], confusion[3, 5] = 6, 4  # 40% of the threes read as fives
    figure = confusion_figure(confusion, 0.96)
    try:
        figure.canvas.draw()
        bar = figure.axes[1]
        ticks = [label.get_text() for label in bar.get_yticklabels() if label.get_text()]
        assert ticks and all(tick.endswith("%") for tick in ticks), ticks
        assert max(float(tick.rstrip("%")) for tick in ticks) == 40  # the bar runs to 40%, not to 0.4
        assert "%" not in bar.get_ylabel()  # the unit is on the numbers, once
    finally:
        save_figure(figure, io.BytesIO())


def thin_pen_photo(drawing, rng, size=(4032, 3024)):
    """A digit written with a ballpoint on a page photographed whole: a phone's 4032x3024 JPEG, the digit
    a tenth to a quarter of the page's height, its strokes 2 to 4 pixels wide, under uneven light."""
    from PIL import ImageDraw

    width, height = size
    side = int(rng.uniform(0.1, 0.25) * height)
    pen = int(rng.integers(2, 5))
    left = int(rng.integers(width // 8, width * 7 // 8 - side))
    top = int(rng.integers(height // 8, height * 7 // 8 - side))
    page = Image.new("L", size, 0)
    ink = ImageDraw.Draw(page)
    frame = 100
    for stroke in drawing["strokes"]:
        points = [(left + side * x / frame, top + side * y / frame) for x, y in stroke]
        if len(points) > 1:
            ink.line(points, fill=255, width=pen, joint="curve")
        ink.ellipse([points[0][0] - pen / 2, points[0][1] - pen / 2, points[0][0] + pen / 2, points[0][1] + pen / 2],
                    fill=255)
    ink = np.asarray(page, dtype=np.float32) / 255
    ys, xs = np.ogrid[0:height, 0:width]
    light = (0.62 + 0.3 * (xs / width if rng.random() < 0.5 else 1 - xs / width)) * (0.92 + 0.08 * ys / height)
    gray = np.clip(light * (1 - 0.75 * ink) + rng.normal(0, 0.012, (height, width)).astype(np.float32), 0, 1)
    return Image.fromarray(np.uint8(255 * gray)).convert("RGB")


def test_a_ballpoint_digit_on_a_page_photographed_whole_is_read(trained, tmp_path):
    """The most common photo of all: a thin pen's digit, 2-4 px strokes in a 4032x3024 JPEG of the page."""
    import json

    out, _, _ = trained
    drawings = json.loads((SCRIPT.parent / "tests" / "drawn_digits.json").read_text())["drawings"]
    rng = np.random.default_rng(7)
    paths = {}
    for n, drawing in enumerate(drawings[::2]):  # 15 of the 30 drawn digits, every digit
        paths[tmp_path / f"page{n}-{drawing['digit']}.jpg"] = drawing["digit"]
        thin_pen_photo(drawing, rng).save(next(reversed(paths)), quality=90)
    result = run_cli("--predict", *paths, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    predicted = predictions(result.stdout)
    assert result.returncode == 0, result.stderr  # none blank
    right = sum(predicted[str(path)] == label for path, label in paths.items())
    assert right >= 0.8 * len(paths), result.stdout
