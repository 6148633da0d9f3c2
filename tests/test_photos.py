"""Reading photos of digits (--predict): what is a digit and what is only paper, and the order of the report."""
import io

import numpy as np
import pytest
from conftest import bundled_mnist, flat_images, refusal, run_main
from PIL import Image

from digits.photos import read_image, to_mnist_form
from tools.digit_photos import phone_photo, predictions
from tools.drawing_page import DRAWINGS


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
    x_test = bundled_mnist().x_test
    digit = tmp_path / "digit.png"
    image, _ = phone_photo(x_test[0], "gray-png", np.random.default_rng(0))
    image.save(digit)
    result = run_main("--predict", *blank, digit, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
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


def test_results_are_printed_in_the_order_given_failures_in_place(trained, tmp_path):
    out, _, _ = trained
    x_test = bundled_mnist().x_test
    for index in (0, 1, 2):
        Image.fromarray(x_test[index]).save(tmp_path / f"digit{index}.png")
    (tmp_path / "notes.png").write_text("this is not a picture")
    Image.new("L", (200, 200), 255).save(tmp_path / "blank.png")
    order = ["digit0.png", "notes.png", "digit1.png", "missing.png", "blank.png", "digit2.png"]
    result = run_main("--predict", *(tmp_path / name for name in order), "--model", out / "model.keras",
                      "--output-dir", tmp_path / "pred", merged=True)
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
    message = refusal(run_main("--predict", tmp_path / "x.png", "--model", path))
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
    out, _, _ = trained
    drawings = DRAWINGS["drawings"]
    rng = np.random.default_rng(7)
    paths = {}
    for n, drawing in enumerate(drawings[::2]):  # 15 of the 30 drawn digits, every digit
        paths[tmp_path / f"page{n}-{drawing['digit']}.jpg"] = drawing["digit"]
        thin_pen_photo(drawing, rng).save(next(reversed(paths)), quality=90)
    result = run_main("--predict", *paths, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    predicted = predictions(result.stdout)
    assert result.returncode == 0, result.stderr  # none blank
    right = sum(predicted[str(path)] == label for path, label in paths.items())
    assert right >= 0.8 * len(paths), result.stdout


def test_an_image_too_large_to_decode_is_refused_before_it_is_decoded(tmp_path):
    """A 16-bit PNG of 13,000 x 13,000 pixels is a few hundred KB, but decoding it and its float copy
    takes gigabytes: refused from its header, with one line, in every reader of images."""
    import tracemalloc

    from digits.errors import InputError

    path = tmp_path / "huge-16-bit.png"
    Image.new("I;16", (13_000, 13_000)).save(path)
    assert path.stat().st_size < 2_000_000
    tracemalloc.start()
    with pytest.raises(InputError, match=r"too large to read: 13,000 x 13,000 pixels .* scale it down first"):
        read_image(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6, peak


def test_a_12_bit_image_in_a_16_bit_png_is_read_by_its_range(tmp_path):
    """A 12-bit sensor's image saved as 16-bit PNG (values 0-4095) is a digit, read as its 8-bit copy is,
    not a near-black blank."""
    digit = bundled_mnist().x_test[0]
    photo = np.kron(255 - digit.astype(np.float64), np.ones((8, 8))) / 255  # dark ink on light paper
    Image.fromarray(np.round(photo * 4095).astype(np.uint16)).save(tmp_path / "twelve-bit.png")
    Image.fromarray(np.round(photo * 255).astype(np.uint8)).save(tmp_path / "eight-bit.png")
    twelve, eight = (to_mnist_form(read_image(tmp_path / name)[0]) for name in ("twelve-bit.png", "eight-bit.png"))
    assert twelve is not None and np.abs(twelve - eight).mean() < 0.02
