"""Reading a whole number (--predict, digits.numbers): the digits found left to right, a digit whose
strokes are broken kept whole, a single digit read exactly as before, a page refused."""
import io
import re

import keras
import numpy as np
import pytest
from conftest import KINDS, ROOT, bold_photos, bundled_mnist, phone_photo, predictions, run_cli
from PIL import Image, ImageDraw, ImageFilter

from digits import data
from digits.errors import InputError
from digits.numbers import MAX_PIECES, find_digits
from digits.photos import read_image, to_mnist_form

# Digits drawn with their strokes apart, in a 100-unit frame: [(kind, points)], kind "line", "dashes" or "dots".
BROKEN = {
    "5-floating-hat": [("line", [(38, 8), (82, 8)]), ("line", [(36, 24), (32, 50), (55, 44), (74, 58), (72, 80),
                                                                (52, 92), (28, 84)])],
    "7-detached-bar": [("line", [(18, 10), (82, 10)]), ("line", [(76, 24), (58, 55), (42, 94)])],
    "7-dashed": [("dashes", [(18, 10), (82, 10), (40, 94)])],
    "4-open-top": [("line", [(30, 8), (22, 48)]), ("line", [(16, 60), (88, 60)]), ("line", [(66, 12), (64, 96)])],
    "1-broken": [("line", [(50, 6), (48, 44)]), ("line", [(48, 56), (46, 96)])],
    "1-dashed": [("dashes", [(52, 4), (46, 96)])],
    "0-dotted": [("dots", [(50 + 30 * np.sin(t), 50 - 44 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 40)])],
    "2-dashed": [("dashes", [(22, 28), (40, 8), (68, 10), (76, 32), (26, 90), (84, 90)])],
    "3-dotted": [("dots", [(24, 14), (50, 6), (72, 18), (66, 40), (46, 48), (70, 58), (74, 80), (50, 94), (24, 86)])],
}


def along(points, step):
    """Points every `step` units along a polyline."""
    points = np.asarray(points, float)
    found = [points[0]]
    for a, b in zip(points[:-1], points[1:]):
        length = np.hypot(*(b - a))
        found += [a + (b - a) * t for t in np.arange(step, length, step) / length] + [b]
    return found


def broken_photo(strokes, rng, side=240, dark_ink=True):
    """A digit drawn as `strokes` with a pen of 7 units, as a photo: paper or board, grain, blur, JPEG-ready."""
    page = Image.new("L", (side * 3 // 2, side * 3 // 2), 0)
    pen = ImageDraw.Draw(page)
    width = round(0.07 * side)
    for kind, points in strokes:
        at = [(side / 4 + x * side / 100, side / 4 + y * side / 100) for x, y in points]
        if kind == "line":
            pen.line(at, fill=255, width=width, joint="curve")
        elif kind == "dashes":  # 8 units of ink, 6 of paper
            marks = along(at, 2 * side / 100)
            for k in range(0, len(marks) - 4, 7):
                pen.line([tuple(marks[k]), tuple(marks[k + 4])], fill=255, width=width)
        else:  # dots, about a pen's width apart
            for x, y in along(at, 1.9 * width) if len(at) < 20 else at:
                pen.ellipse([x - width / 2, y - width / 2, x + width / 2, y + width / 2], fill=255)
    ink = np.asarray(page.filter(ImageFilter.GaussianBlur(1)), dtype=float) / 255
    gray = 0.9 - 0.75 * ink if dark_ink else 0.2 + 0.65 * ink
    gray = np.clip(gray + rng.normal(0, 0.02, gray.shape), 0, 1)
    return Image.fromarray(np.uint8(255 * gray)).convert("RGB")


def broken_mnist_photo(digit, rng):
    """A test digit enlarged, a thin band of paper drawn across it (a pen that skipped), as a photo."""
    ink = Image.fromarray(digit).resize((168, 168), Image.BICUBIC)
    gap = ImageDraw.Draw(ink)
    y = int(rng.integers(50, 118))
    tilt = int(rng.integers(-30, 31))
    gap.line([(0, y - tilt), (168, y + tilt)], fill=0, width=int(rng.integers(4, 9)))
    ink = np.pad(np.asarray(ink, dtype=float) / 255, 60)
    gray = np.clip(0.9 - 0.78 * ink + rng.normal(0, 0.02, ink.shape), 0, 1)
    return Image.fromarray(np.uint8(255 * gray))


def test_a_digit_whose_strokes_do_not_touch_is_one_digit(tmp_path):
    """The hat of a 5, the bar of a 7, an open 4, a broken 1, dashes and dots: each one digit, on paper and board."""
    rng = np.random.default_rng(5)
    for name, strokes in BROKEN.items():
        for dark_ink in (True, False):
            path = tmp_path / f"{name}-{'paper' if dark_ink else 'board'}.jpg"
            broken_photo(strokes, rng, side=int(rng.integers(120, 600)), dark_ink=dark_ink).save(path, quality=85)
            pieces = find_digits(read_image(path)[0])
            assert len(pieces) == 1, (path.name, [piece.box for piece in pieces])


def test_a_test_digit_with_a_skipped_stroke_is_one_digit():
    x_test = bundled_mnist().x_test
    rng = np.random.default_rng(6)
    counts = [len(find_digits(np.asarray(broken_mnist_photo(x_test[i], rng), np.float32) / 255)) for i in range(60)]
    assert counts.count(1) >= 57, counts


def test_a_single_digit_is_read_exactly_as_before():
    """One digit in the picture: the 28x28 image is to_mnist_form's of the whole picture, to the bit."""
    x_test = bundled_mnist().x_test
    rng = np.random.default_rng(8)
    for n in range(20):
        image, _ = phone_photo(x_test[100 + n], KINDS[n % len(KINDS)], rng)
        photo = io.BytesIO()
        image.save(photo, "PNG")
        gray, _ = read_image(photo)  # as --predict reads it: a transparent photo on its own background
        pieces = find_digits(gray)
        assert len(pieces) == 1
        np.testing.assert_array_equal(pieces[0].digit, to_mnist_form(gray))
    assert find_digits(np.full((300, 400), 0.8, np.float32)) == []


def written_number(images, rng, dark_ink=True):
    """MNIST digits written side by side, 60 to 120 px high, a fifth to half their height apart, as a photo."""
    height = int(rng.integers(60, 121))
    digits = []
    for image in images:
        rows, cols = np.flatnonzero(image.max(axis=1) > 30), np.flatnonzero(image.max(axis=0) > 30)
        ink = Image.fromarray(image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        size = round(height * rng.uniform(0.9, 1.1))
        digits.append(np.asarray(ink.resize((max(1, round(ink.width * size / ink.height)), size), Image.BICUBIC)))
    gaps = [round(height * rng.uniform(0.2, 0.5)) for _ in digits]
    canvas = np.zeros((2 * height, sum(d.shape[1] for d in digits) + sum(gaps) + height), np.float32)
    x = height // 2
    for ink, gap in zip(digits, gaps):
        top = height // 2 + round(rng.uniform(-0.08, 0.08) * height) + height - ink.shape[0]
        canvas[top : top + ink.shape[0], x : x + ink.shape[1]] = ink / 255
        x += ink.shape[1] + gap
    gray = 0.9 - 0.75 * canvas if dark_ink else 0.2 + 0.65 * canvas
    gray = np.clip(gray + rng.normal(0, 0.02, gray.shape), 0, 1)
    return Image.fromarray(np.uint8(255 * gray)).convert("RGB")


def test_numbers_are_read_digit_by_digit_left_to_right(trained, tmp_path):
    """2 to 6 test digits (ones the model reads right on their own) in a row, paper and board, JPEG."""
    out, _, _ = trained
    _, _, x_test, y_test, _ = bundled_mnist()
    model = keras.models.load_model(out / "model.keras")
    indices = np.arange(4000, 4200)
    indices = indices[model.predict(data.preprocess(x_test[indices]), verbose=0).argmax(axis=1) == y_test[indices]]
    rng = np.random.default_rng(19)
    numbers, used = {}, 0
    for n in range(16):
        count = 2 + n % 5
        chosen = indices[used : used + count]
        used += count
        path = tmp_path / f"number{n}.jpg"
        written_number(x_test[chosen], rng, dark_ink=n % 2 == 0).save(path, quality=85)
        numbers[str(path)] = "".join(str(y_test[i]) for i in chosen)
    result = run_cli("--predict", *numbers, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if line.startswith(str(tmp_path / "n")))
    for reading in lines.values():  # the number first, then each digit with its confidence
        assert re.fullmatch(r"(\d+) \((\d \d+\.\d%)(, \d \d+\.\d%)+\)", reading), reading
        assert re.findall(r"(\d) \d+\.\d%", reading) == list(reading.split(" ")[0])
    right = [path for path, number in numbers.items() if lines[path].split(" ")[0] == number]
    assert len(right) >= 14, {path: (number, lines[path]) for path, number in numbers.items()}
    with Image.open(tmp_path / "pred" / "predictions.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 1000


def touching_digits(images, rng):
    """MNIST digits in marker, 60 to 120 px high, each overlapping the next by up to a tenth of their height."""
    height = int(rng.integers(60, 121))
    inks, lefts = [], [height // 2]
    for image in images:
        rows, cols = np.flatnonzero(image.max(axis=1) > 30), np.flatnonzero(image.max(axis=0) > 30)
        ink = Image.fromarray(image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        inks.append(np.asarray(ink.resize((max(1, round(ink.width * height / ink.height)), height), Image.BICUBIC)))
        lefts.append(lefts[-1] + inks[-1].shape[1] - round(height * rng.uniform(0, 0.1)))
    canvas = np.zeros((2 * height, lefts[-1] + 2 * height), np.float32)
    for ink, left in zip(inks, lefts):
        region = canvas[height // 2 : height // 2 + height, left : left + ink.shape[1]]
        np.maximum(region, ink / 255, out=region)
    canvas = np.asarray(Image.fromarray(canvas).filter(ImageFilter.MaxFilter(5)))
    return np.clip(0.9 - 0.75 * canvas + rng.normal(0, 0.02, canvas.shape), 0, 1).astype(np.float32)


def model_reader(out):
    """The trained model at `out`, and find_digits' reader made of it (28x28 images -> ten probabilities)."""
    model = keras.models.load_model(out / "model.keras")

    def reader(digits):
        return np.asarray(model.predict_on_batch(digits[..., None]))

    return model, reader


def touching_numbers_read_right(reader, first, digits, seed):
    """(with the reader, by rules alone): how many of 12 numbers of `digits` touching test digits (ones
    the model reads right on their own, from test digit `first` on) are read right."""
    _, _, x_test, y_test, _ = bundled_mnist()
    indices = np.arange(first, first + 100)
    indices = indices[reader(data.preprocess(x_test[indices])[..., 0]).argmax(axis=1) == y_test[indices]]
    rng = np.random.default_rng(seed)
    guided = ruled = 0
    for n in range(12):
        chosen = indices[digits * n : digits * n + digits]
        gray = touching_digits(x_test[chosen], rng)
        number = "".join(str(y_test[i]) for i in chosen)
        for pieces, by_reader in ((find_digits(gray, reader), True), (find_digits(gray), False)):
            read = "".join(str(d) for d in reader(np.stack([p.digit for p in pieces])).argmax(axis=1))
            guided, ruled = guided + (read == number and by_reader), ruled + (read == number and not by_reader)
    return guided, ruled


def test_digits_that_touch_are_cut_where_the_network_reads_them_surest(trained, tmp_path):
    """find_digits with the model as its reader: numbers of three touching digits read right more often
    than when cut by rules alone; a single digit still read exactly as without a reader."""
    out, _, _ = trained
    x_test = bundled_mnist().x_test
    _, reader = model_reader(out)
    guided, ruled = touching_numbers_read_right(reader, first=5000, digits=3, seed=21)
    print(f"touching digits: {guided} of 12 numbers read right with the reader, {ruled} cut by rules alone")
    assert guided > ruled, (guided, ruled)
    rng = np.random.default_rng(8)
    for n in range(10):
        image, extension = phone_photo(x_test[100 + n], KINDS[n % len(KINDS)], rng)
        image.save(tmp_path / f"digit{n}.{extension}")
        gray = read_image(tmp_path / f"digit{n}.{extension}")[0]
        [piece] = find_digits(gray, reader)
        np.testing.assert_array_equal(piece.digit, to_mnist_form(gray))


def test_two_digits_that_touch_alone_in_a_picture_are_read_as_two(trained, tmp_path):
    """Two touching digits and nothing else are one group of ink: the rules read it as one digit,
    the reader cuts it where the two read surest. A bold tight crop of one digit stays one."""
    out, _, _ = trained
    model, reader = model_reader(out)
    guided, ruled = touching_numbers_read_right(reader, first=6000, digits=2, seed=22)
    print(f"two touching digits: {guided} of 12 read right with the reader, {ruled} by rules alone")
    assert guided >= 7 and guided > ruled, (guided, ruled)
    bold = bold_photos(model, tmp_path, 40, np.random.default_rng(3), first=6100)
    for path in bold:
        gray = read_image(path)[0]
        [piece] = find_digits(gray, reader)
        np.testing.assert_array_equal(piece.digit, to_mnist_form(gray))


def wide_digit_between(images, rng):
    """Three MNIST digits a third of their height apart, 60 to 120 px high, the middle one written 1.6 to
    1.9 times as wide as it is high (a wide 0, a flat 2), as a grayscale picture."""
    height = int(rng.integers(60, 121))
    inks = []
    for k, image in enumerate(images):
        rows, cols = np.flatnonzero(image.max(axis=1) > 30), np.flatnonzero(image.max(axis=0) > 30)
        ink = Image.fromarray(image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
        width = round(height * rng.uniform(1.6, 1.9)) if k == 1 else max(1, round(ink.width * height / ink.height))
        inks.append(np.asarray(ink.resize((width, height), Image.BICUBIC), np.float32) / 255)
    gap = round(height / 3)
    canvas = np.zeros((2 * height, sum(ink.shape[1] for ink in inks) + 2 * gap + height), np.float32)
    left = height // 2
    for ink in inks:
        canvas[height // 2 : height // 2 + height, left : left + ink.shape[1]] = ink
        left += ink.shape[1] + gap
    return np.clip(0.9 - 0.75 * canvas + rng.normal(0, 0.02, canvas.shape), 0, 1).astype(np.float32)


def test_a_wide_digit_cut_in_many_pieces_is_joined_back_into_one(trained):
    """The reader over-cuts a digit written wide (a cut every fifth of the digits' height) into six or
    more pieces; they are joined back into one digit, so the number has as many digits as were written."""
    out, _, _ = trained
    _, reader = model_reader(out)
    _, _, x_test, y_test, _ = bundled_mnist()
    indices = np.arange(7000, 7300)
    indices = indices[reader(data.preprocess(x_test[indices])[..., 0]).argmax(axis=1) == y_test[indices]]
    wide = indices[y_test[indices] != 1][40:]  # a 1 written wide is a bar, not a digit
    rng = np.random.default_rng(3)
    counts = [len(find_digits(wide_digit_between(x_test[[indices[2 * n], wide[n], indices[2 * n + 1]]], rng), reader))
              for n in range(12)]
    assert counts.count(3) >= 10, counts


def test_the_number_benchmarks_run_and_report(trained, tmp_path):
    """benchmarks/number_photos.py, fit_number_prices.py and outlier_exposure.py, end to end, small."""
    out, _, _ = trained
    tools = ROOT / "benchmarks"
    result = run_cli("--count", "6", "--singles", "0", "--model", out / "model.keras",
                     script=tools / "number_photos.py")
    assert result.returncode == 0, result.stderr
    read, total = map(int, re.search(r"^(\d+) of (\d+) numbers read with every digit right", result.stdout,
                                     re.MULTILINE).groups())
    assert total == 6 and read >= 3, result.stdout
    assert re.search(r"^\(\d+ digits in all; .* \d+ numbers have every digit read right clean", result.stdout,
                     re.MULTILINE), result.stdout
    bands = re.findall(r"^  (?:overlapping|touching or nearly|close|apart) \(.*\): (\d+) of (\d+) read right$",
                       result.stdout, re.MULTILINE)
    assert len(bands) == 4 and sum(int(b) for _, b in bands) == 6 and sum(int(r) for r, _ in bands) == read, bands
    result = run_cli("--count", "6", "--rounds", "1", "--model", out / "model.keras",
                     script=tools / "fit_number_prices.py")
    assert result.returncode == 0, result.stderr
    ceiling = re.search(r"^The most any prices could read: (\d+) of the (\d+) numbers the reader cuts "
                        r"\((\d+) more were read whole\); \d+ hold a piece under 80% one digit's ink$",
                        result.stdout, re.MULTILINE)
    assert ceiling and int(ceiling.group(2)) + int(ceiling.group(3)) == 6, result.stdout
    bands = re.findall(r"^  (?:overlapping|touching or nearly|close|apart) \(.*\): (\d+) of (\d+) "
                       r"\(these prices: \d+\)$", result.stdout, re.MULTILINE)
    assert len(bands) == 4 and sum(int(b) for _, b in bands) == int(ceiling.group(2)), result.stdout
    assert sum(int(c) for c, _ in bands) == int(ceiling.group(1)), result.stdout
    for label in ("now", "round 1"):
        line = re.search(rf"^{label}: (\d+) of 6 numbers and (\d+) of 6 single digits read right with Prices\(",
                         result.stdout, re.MULTILINE)
        assert line and int(line.group(2)) >= 4, result.stdout
    result = run_cli("--model", out / "model.keras", "--output", tmp_path / "not-one-digit.keras", "--negatives", "64",
                     "--epochs", "1", "--train-images", "2000", script=tools / "outlier_exposure.py")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^test accuracy 0\.\d{4}; .* median: [01]\.\d{3} on test digits, [01]\.\d{3} on 2,000 images",
                     result.stdout, re.MULTILINE), result.stdout
    assert keras.models.load_model(tmp_path / "not-one-digit.keras").output_shape == (None, 10)


def test_a_broken_digit_is_read_as_one_digit_by_the_program(trained, tmp_path):
    out, _, _ = trained
    rng = np.random.default_rng(9)
    paths = []
    for name, strokes in BROKEN.items():
        paths.append(tmp_path / f"{name}.png")
        broken_photo(strokes, rng).save(paths[-1])
    result = run_cli("--predict", *paths, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 0, result.stderr
    assert list(predictions(result.stdout)) == [str(path) for path in paths]  # each line: one digit, as today


def test_more_than_a_number_is_refused_with_a_line_and_the_rest_are_read(trained, tmp_path):
    out, _, _ = trained
    _, _, x_test, y_test, _ = bundled_mnist()
    rng = np.random.default_rng(2)
    written_number(x_test[: MAX_PIECES + 5], rng).save(tmp_path / "page.png")
    written_number(x_test[:12], rng).save(tmp_path / "phone-number.png")  # 12 digits are a number
    Image.fromarray(x_test[0]).save(tmp_path / "seven.png")
    with pytest.raises(InputError, match="crop the picture"):
        find_digits(read_image(tmp_path / "page.png")[0])
    result = run_cli("--predict", tmp_path / "page.png", tmp_path / "phone-number.png", tmp_path / "seven.png",
                     "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"{tmp_path / 'page.png'}: error: ") and "crop the picture" in line, line
    assert re.search(rf"^{re.escape(str(tmp_path / 'phone-number.png'))}: \d{{12}} \(", result.stdout, re.MULTILINE)
    assert predictions(result.stdout) == {str(tmp_path / "seven.png"): int(y_test[0])}
