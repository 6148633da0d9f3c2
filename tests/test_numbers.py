"""Reading a whole number (--predict, digits.numbers with the number reader): the digits read left to
right, touching and crossing ones too, a digit whose strokes are broken kept whole, a single digit read
exactly as before, a page refused; the reader's decoding, its training, and its file."""
import io
import json
import re

import numpy as np
import pytest
from conftest import ROOT, bundled_mnist, refusal, run_cli, run_main
from PIL import Image, ImageDraw, ImageFilter

import train_number_reader
from digits.errors import InputError
from digits.lines import LINE_HEIGHT
from digits.numbers import AGREE, MAX_PIECES, doubt, find_digits
from digits.photos import read_image, to_mnist_form
from digits.reader import decode, load_reader
from tools.digit_photos import KINDS, bold_photos, phone_photo, predictions

# Digits drawn with their strokes apart, in a 100-unit frame: [(kind, points)], kind "line", "dashes" or "dots".
# How many of the 18 broken-digit photos (9 digits, paper and board) the shipped reader reads as one digit.
BROKEN_ONE = 16
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


def test_a_digit_whose_strokes_do_not_touch_is_one_digit(number_reader, tmp_path):
    """The hat of a 5, the bar of a 7, an open 4, a broken 1, dashes and dots: each one digit, on paper and board."""
    rng = np.random.default_rng(5)
    counts = {}
    for name, strokes in BROKEN.items():
        for dark_ink in (True, False):
            path = tmp_path / f"{name}-{'paper' if dark_ink else 'board'}.jpg"
            broken_photo(strokes, rng, side=int(rng.integers(120, 600)), dark_ink=dark_ink).save(path, quality=85)
            counts[path.name] = len(find_digits(read_image(path)[0], number_reader))
    assert list(counts.values()).count(1) >= BROKEN_ONE, counts


def test_a_test_digit_with_a_skipped_stroke_is_one_digit(number_reader):
    x_test = bundled_mnist().x_test
    rng = np.random.default_rng(6)
    counts = [len(find_digits(np.asarray(broken_mnist_photo(x_test[i], rng), np.float32) / 255, number_reader))
              for i in range(60)]
    assert counts.count(1) >= 57, counts


def test_a_single_digit_is_read_exactly_as_before(number_reader, tmp_path):
    """One digit in the picture: the 28x28 image is to_mnist_form's of the whole picture, to the bit, for
    phone-style photos and bold tight crops; a blank page holds none."""
    x_test = bundled_mnist().x_test
    rng = np.random.default_rng(8)
    for n in range(20):
        image, _ = phone_photo(x_test[100 + n], KINDS[n % len(KINDS)], rng)
        photo = io.BytesIO()
        image.save(photo, "PNG")
        gray, _ = read_image(photo)  # as --predict reads it: a transparent photo on its own background
        [piece] = find_digits(gray, number_reader)
        np.testing.assert_array_equal(piece.digit, to_mnist_form(gray))
        assert piece.probabilities is None  # the default network reads it
    for path in bold_photos(None, tmp_path, 20, np.random.default_rng(3), first=6100):
        gray = read_image(path)[0]
        [piece] = find_digits(gray, number_reader)
        np.testing.assert_array_equal(piece.digit, to_mnist_form(gray))
    assert find_digits(np.full((300, 400), 0.8, np.float32), number_reader) == []




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


def test_numbers_are_read_digit_by_digit_left_to_right(trained, tmp_path):
    """2 to 6 test digits in a row, paper and board, JPEG, read by the program: the number, then each
    digit with how sure the reader is; predictions.png shows them. The two number photos of
    data/examples/ too (the README's command reads them)."""
    out, _, _ = trained
    _, _, x_test, y_test, _ = bundled_mnist()
    rng = np.random.default_rng(19)
    numbers = {}
    for n in range(16):
        chosen = np.arange(4000, 4200)[6 * n : 6 * n + 2 + n % 5]
        path = tmp_path / f"number{n}.jpg"
        written_number(x_test[chosen], rng, dark_ink=n % 2 == 0).save(path, quality=85)
        numbers[str(path)] = "".join(str(y_test[i]) for i in chosen)
    examples = {str(path): path.name.split("-")[1] for path in sorted((ROOT / "data" / "examples").glob("number-*"))}
    result = run_main("--predict", *numbers, *examples, "--model", out / "model.keras",
                      "--output-dir", tmp_path / "pred")
    assert result.returncode == 0, result.stderr
    said = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert len(examples) == 2 and {path: said[path].split(" ")[0] for path in examples} == examples, said
    lines = {path: line for path, line in said.items() if path.startswith(str(tmp_path / "n"))}
    for reading in lines.values():  # the number first, then each digit with its confidence
        assert re.fullmatch(r"(\d+) \((\d \d+\.\d%)(, \d \d+\.\d%)+\)(; unsure: .+)?", reading), reading
        assert re.findall(r"(\d) \d+\.\d%", reading) == list(reading.split(" ")[0])
    right = [path for path, number in numbers.items() if lines[path].split(" ")[0] == number]
    assert len(right) >= 15, {path: (number, lines[path]) for path, number in numbers.items()}
    with Image.open(tmp_path / "pred" / "predictions.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 1000


def test_digits_that_touch_or_cross_are_read(number_reader):
    """Numbers of two and three test digits in marker, each overlapping the next by up to a tenth of
    their height: read right, one piece a digit, boxes left to right within the picture."""
    _, _, x_test, y_test, _ = bundled_mnist()
    rng = np.random.default_rng(21)
    right = 0
    for n in range(24):
        chosen = np.arange(5000 + 3 * n, 5000 + 3 * n + 2 + n % 2)
        gray = touching_digits(x_test[chosen], rng)
        pieces = find_digits(gray, number_reader)
        read = "".join(str(int(np.argmax(p.probabilities))) for p in pieces if p.probabilities is not None)
        right += read == "".join(str(y_test[i]) for i in chosen)
        lefts = [p.box[0] for p in pieces]
        assert lefts == sorted(lefts) and all(0 <= p.box[0] < p.box[2] <= gray.shape[1] for p in pieces)
    assert right >= 21, right


def test_two_digits_in_one_narrow_mark_are_read_where_the_default_network_agrees(trained, number_reader):
    """One mark no wider than 1.25 of its height is one digit (a wide 4 the reader reads as 21), unless the
    default network reads each digit the reader reads in it as the reader does, at AGREE or surer: then
    those digits, marked unsure. A 1 touching another digit, with the quick run's model."""
    import keras

    model = keras.models.load_model(trained[0] / "model.keras")
    network = lambda digits: np.asarray(model.predict_on_batch(digits[..., None]))  # noqa: E731
    _, _, x_test, y_test, _ = bundled_mnist()
    rng = np.random.default_rng(4)
    outcomes = []
    for one, other in zip(np.flatnonzero(y_test == 1)[:30], np.flatnonzero(y_test != 1)[:30]):
        gray = touching_digits(x_test[[one, other]], rng)
        alone, checked = find_digits(gray, number_reader), find_digits(gray, number_reader, network)
        if len(alone) > 1:  # not narrow: the network is not asked
            assert [p.box for p in checked] == [p.box for p in alone] and checked[0].unsure is None
            outcomes.append("wide enough")
        elif len(checked) == 1:  # one digit, as without the network
            assert checked[0].probabilities is None and checked[0].box == alone[0].box
            outcomes.append("one digit")
        else:
            seen = network(np.stack([p.digit for p in checked]))
            assert list(seen.argmax(axis=1)) == [int(np.argmax(p.probabilities)) for p in checked]
            assert seen.max(axis=1).min() >= AGREE
            why = doubt(checked, [p.probabilities for p in checked])
            assert why == f"one narrow mark read as {len(checked)} digits"
            outcomes.append("agreed")
    assert "agreed" in outcomes and "one digit" in outcomes, outcomes  # 4 and 18 of 30 on an Intel Xeon


def test_a_wide_digit_between_two_others_is_one_digit(number_reader):
    _, _, x_test, y_test, _ = bundled_mnist()
    indices = np.arange(7000, 7300)
    wide = indices[y_test[indices] != 1][40:]  # a 1 written wide is a bar, not a digit
    rng = np.random.default_rng(3)
    counts = [len(find_digits(wide_digit_between(x_test[[indices[2 * n], wide[n], indices[2 * n + 1]]], rng),
                              number_reader)) for n in range(12)]
    assert counts.count(3) >= 10, counts


def test_the_number_benchmark_runs_and_reports(trained):
    """benchmarks/number_photos.py end to end, small: numbers read, by spacing band, and the time a photo takes."""
    out, _, _ = trained
    result = run_cli("--count", "6", "--singles", "0", "--timed", "2", "--model", out / "model.keras",
                     script=ROOT / "benchmarks" / "number_photos.py")
    assert result.returncode == 0, result.stderr
    read, total = map(int, re.search(r"^(\d+) of (\d+) numbers read with every digit right", result.stdout,
                                     re.MULTILINE).groups())
    assert total == 6 and read >= 4, result.stdout
    assert re.search(r"^\(\d+ digits in all; .* \d+ numbers have every digit read right clean", result.stdout,
                     re.MULTILINE), result.stdout
    bands = re.findall(r"^  (?:overlapping|touching or nearly|close|apart) \(.*\): (\d+) of (\d+) read right$",
                       result.stdout, re.MULTILINE)
    assert len(bands) == 4 and sum(int(b) for _, b in bands) == 6 and sum(int(r) for r, _ in bands) == read, bands
    assert re.search(r"^Reading one number photo, models loaded: median \d+ ms, slowest \d+ ms, over 2 photos \(",
                     result.stdout, re.MULTILINE), result.stdout


def test_a_broken_digit_is_read_as_one_digit_by_the_program(trained, tmp_path):
    out, _, _ = trained
    rng = np.random.default_rng(9)
    paths = []
    for name, strokes in BROKEN.items():
        paths.append(tmp_path / f"{name}.png")
        broken_photo(strokes, rng).save(paths[-1])
    result = run_main("--predict", *paths, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 0, result.stderr
    read = predictions(result.stdout)  # the lines of one digit each
    assert len(read) >= len(paths) - 1, result.stdout


def test_more_than_a_number_is_refused_with_a_line_and_the_rest_are_read(trained, number_reader, tmp_path):
    out, _, _ = trained
    _, _, x_test, y_test, _ = bundled_mnist()
    rng = np.random.default_rng(2)
    written_number(x_test[: MAX_PIECES + 5], rng).save(tmp_path / "page.png")
    written_number(x_test[:12], rng).save(tmp_path / "phone-number.png")  # 12 digits are a number
    Image.fromarray(x_test[0]).save(tmp_path / "seven.png")
    with pytest.raises(InputError, match="crop the picture"):
        find_digits(read_image(tmp_path / "page.png")[0], number_reader)
    result = run_main("--predict", tmp_path / "page.png", tmp_path / "phone-number.png", tmp_path / "seven.png",
                      "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"{tmp_path / 'page.png'}: error: ") and "crop the picture" in line, line
    assert re.search(rf"^{re.escape(str(tmp_path / 'phone-number.png'))}: \d{{12}} \(", result.stdout, re.MULTILINE)
    assert predictions(result.stdout) == {str(tmp_path / "seven.png"): int(y_test[0])}


def test_decoding_merges_repeats_drops_blanks_and_says_where_each_digit_is():
    """Greedy CTC decoding on a known alignment (class 0 is the blank, class d + 1 digit d): steps of
    classes 0 3 3 0 3 8 8 0 0 2 read "2271": the repeated 3 is one 2, the blank between parts two 2s;
    each digit's span of steps, confidence (its surest step) and ten probabilities (blank left out)."""
    steps = [0, 3, 3, 0, 3, 8, 8, 0, 0, 2]
    probabilities = np.full((len(steps), 11), 0.01)
    probabilities[np.arange(len(steps)), steps] = 0.9
    probabilities[6, 8] = 0.6  # the second 7's step is less sure: its confidence is its surest step's
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    reading = decode(probabilities)
    assert reading.number == "2271"
    assert reading.spans == [(1, 2), (4, 4), (5, 6), (9, 9)]
    assert [round(c, 3) for c in reading.confidences] == [round(0.9 / 1.0, 3)] * 4
    assert all(len(p) == 10 and abs(p.sum() - 1) < 1e-6 for p in reading.probabilities)
    assert [int(np.argmax(p)) for p in reading.probabilities] == [2, 2, 7, 1]
    assert decode(np.eye(11)[[0, 0, 0]]).number == ""


def test_the_reader_trains_on_a_slice_in_seconds_and_is_read_back(tmp_path):
    """train_number_reader.py, tiny: a reader file --reader can load, and its figures, like a run's."""
    reader, out = tmp_path / "reader.keras", tmp_path / "figures"
    train_number_reader.main(["--steps", "30", "--batch-size", "16", "--photos", "16", "--limit-train", "2000",
                              "--test-lines", "12", "--output", str(reader), "--output-dir", str(out)])
    model = load_reader(reader)
    assert model.input_shape == (None, LINE_HEIGHT, None, 1) and model.output_shape == (None, None, 11)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 30 and set(metrics["test"]) == {"ink", "paper", "chalkboard", "whiteboard"}
    for figures in metrics["test"].values():
        assert figures["lines"] == 12 and 0 <= figures["read right"] <= 12 and set(figures["by spacing"])
    with Image.open(out / "reader_lines.png") as picture:
        assert picture.format == "PNG"
    assert not list(tmp_path.glob(".partial-*"))

    # --init trains on from a reader's weights: one step at a tiny rate leaves them where they were.
    again = tmp_path / "again.keras"
    train_number_reader.main(["--init", str(reader), "--steps", "1", "--lr", "1e-9", "--batch-size", "4",
                              "--photos", "0", "--limit-train", "200", "--test-lines", "2", "--output", str(again),
                              "--output-dir", str(tmp_path / "again")])
    for before, after in zip(model.get_weights(), load_reader(again).get_weights()):
        np.testing.assert_allclose(after, before, atol=1e-5)

    # --steps 0 measures a reader: its figures, the training digits' beside them, and no reader written.
    before = reader.read_bytes()
    train_number_reader.main(["--init", str(reader), "--steps", "0", "--limit-train", "200", "--test-lines", "4",
                              "--output", str(tmp_path / "unused.keras"), "--output-dir", str(tmp_path / "measured")])
    measured = json.loads((tmp_path / "measured" / "metrics.json").read_text())
    assert measured["steps"] == 0 and measured["reader"] == str(reader) and measured["filters"] == [32, 64, 96]
    assert measured["batch_size"] is None and measured["precision"] is None  # nothing was trained
    assert measured["training digits, ink"]["lines"] == 4
    assert all(sum(f["misses"].values()) == f["lines"] - f["read right"] for f in measured["test"].values())
    assert reader.read_bytes() == before and not (tmp_path / "unused.keras").exists()
    with pytest.raises(SystemExit) as refused:
        train_number_reader.main(["--steps", "0"])
    assert refused.value.code == 2

    # --init into a wider reader grows the weights into it: it reads exactly as the narrower one did.
    wider = tmp_path / "wider.keras"
    train_number_reader.main(["--init", str(reader), "--filters", "32", "64", "128", "--units", "192", "--steps", "1",
                              "--lr", "1e-9", "--batch-size", "4", "--photos", "0", "--limit-train", "200",
                              "--test-lines", "2", "--output", str(wider), "--output-dir", str(tmp_path / "wider")])
    grown = load_reader(wider)
    assert grown.count_params() > model.count_params()
    strips = np.random.default_rng(0).random((3, LINE_HEIGHT, 64, 1)).astype(np.float32)
    np.testing.assert_allclose(grown.predict_on_batch(strips), model.predict_on_batch(strips), atol=1e-4)
    assert json.loads((tmp_path / "wider" / "metrics.json").read_text())["filters"] == [32, 64, 128]
    with pytest.raises(SystemExit, match="wider than this one's: pass --filters and --units"):  # not shrunk
        train_number_reader.main(["--init", str(wider), "--steps", "1", "--photos", "0",
                                  "--limit-train", "200", "--test-lines", "2",
                                  "--output", str(tmp_path / "narrower.keras")])


def test_a_missing_or_damaged_reader_file_is_one_line_that_says_how_to_get_it(trained, tmp_path):
    out, _, _ = trained
    photo = tmp_path / "seven.png"
    Image.fromarray(bundled_mnist().x_test[0]).save(photo)
    damaged = tmp_path / "damaged.keras"
    damaged.write_bytes(b"PK\x03\x04 not really a zip archive")
    for reader, words in ((tmp_path / "missing.keras", "no number reader at"), (damaged, "is damaged")):
        message = refusal(run_main("--predict", photo, "--model", out / "model.keras", "--reader", reader))
        assert message.startswith("error: --reader: ") and words in message, message
        assert "git checkout models/number_reader.keras" in message and "train_number_reader.py" in message


def test_a_grid_of_dots_costs_one_reading_not_gigabytes(number_reader):
    """A 16x16 grid of dots (a 708-byte PNG once cost 121 s and 5 GB as every pair of pieces was a
    candidate digit): read in one pass of the reader, its memory bounded; answered, not hung."""
    import tracemalloc

    page = Image.new("L", (400, 400), 235)
    pen = ImageDraw.Draw(page)
    for row in range(16):
        for column in range(16):
            x, y = 20 + 24 * column, 20 + 24 * row
            pen.ellipse((x - 3, y - 3, x + 3, y + 3), fill=20)
    gray = np.asarray(page, np.float32) / 255
    tracemalloc.start()
    try:
        pieces = find_digits(gray, number_reader)
    except InputError as e:  # read as more digits than a number has: refused, as a page is
        pieces = str(e)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100e6, peak
    assert isinstance(pieces, str) or len(pieces) <= MAX_PIECES


def test_a_reading_says_why_it_is_unsure():
    """numbers.doubt: the reader saw no digit; it reads another digit than the network, or one below 90%;
    a number with a digit below 90%; a sure reading has no doubt."""
    from digits.numbers import NO_DIGIT, Piece, doubt

    blank, tens = np.zeros((28, 28), np.float32), np.eye(10)
    one = Piece((0, 0, 28, 28), blank)
    assert doubt([one._replace(unsure=NO_DIGIT)], [tens[2]]) == NO_DIGIT
    assert doubt([one._replace(seen=tens[3])], [tens[5]]) == "the number reader reads it as 3 (100.0%)"
    unsure_five = one._replace(seen=0.6 * tens[5] + 0.4 * tens[6])
    assert doubt([unsure_five], [tens[5]]) == "the number reader reads it as 5 (60.0%)"
    assert doubt([one._replace(seen=tens[5])], [tens[5]]) is None
    pieces = [one._replace(probabilities=tens[1]), one._replace(probabilities=0.7 * tens[2] + 0.3 * tens[7])]
    assert doubt(pieces, [p.probabilities for p in pieces]) == "its least sure digit is read at 70.0%"
    assert doubt(pieces[:1] * 2, [tens[1], tens[1]]) is None
