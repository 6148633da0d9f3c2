"""Predicting your own digits: photos of MNIST test digits, as a phone would take them."""
import os
import re
import struct
import zlib

import keras
import numpy as np
import pytest
from conftest import ROOT, SCRIPT, bundled_mnist, make_unreadable, refusal, run_main
from PIL import Image

from digits import data, photos, pictures
from tools.digit_photos import KINDS, bold_photos, phone_photo, predictions


def phone_photos(model, folder):
    """Phone photos of test digits 2000-2099 (outside the slice the model was evaluated on) that the
    model reads right as they are, in each kind by turn, saved in `folder`: {path: label}."""
    _, _, x_test, y_test, _ = bundled_mnist()
    indices = np.arange(2000, 2100)
    untouched = model.predict(data.preprocess(x_test[indices]), verbose=0).argmax(axis=1)
    rng = np.random.default_rng(0)
    paths = {}
    for n, i in enumerate(indices):
        if untouched[n] != y_test[i]:
            continue  # the model gets the clean digit wrong: nothing to learn about preprocessing
        image, extension = phone_photo(x_test[i], KINDS[n % len(KINDS)], rng)
        path = folder / f"digit{i}-{KINDS[n % len(KINDS)]}.{extension}"
        image.save(path)
        paths[str(path)] = int(y_test[i])
    return paths


@pytest.fixture(scope="module")
def read_together(trained, tmp_path_factory):
    """One --predict run over the photos of three tests below, each expecting every image read: phone
    photos, bold tight crops and the example photos. The program starts and loads the model once, not
    three times; each test checks the lines of its own photos.

    Returns ({"phone", "bold", "examples": {path: label}}, {path: digit read}, the output folder).
    """
    out, _, _ = trained
    folder = tmp_path_factory.mktemp("read-together")
    model = keras.models.load_model(out / "model.keras")
    for kind in ("phone", "bold"):
        (folder / kind).mkdir()
    examples = sorted((ROOT / "data" / "examples").glob("digit-*"))  # the digit in each name: digit-7-...png
    photos_of = {"phone": phone_photos(model, folder / "phone"),
                 "bold": bold_photos(model, folder / "bold", 120, np.random.default_rng(3)),
                 "examples": {str(path): int(path.name.split("-")[1]) for path in examples}}
    result = run_main("--predict", *(path for paths in photos_of.values() for path in paths),
                      "--model", out / "model.keras", "--output-dir", folder / "pred")
    assert result.returncode == 0, result.stderr
    return photos_of, predictions(result.stdout), folder / "pred"


def test_phone_photos_of_digits_are_read_like_the_digits(read_together):
    photos_of, predicted, pred = read_together
    paths = photos_of["phone"]
    assert set(paths) <= set(predicted)  # each read, as one digit
    correct = sum(predicted[path] == label for path, label in paths.items())
    assert correct / len(paths) >= 0.95, [p for p in paths if predicted[p] != paths[p]]
    with Image.open(pred / "predictions.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 1000 and picture.size[1] > 600


def test_an_image_already_in_mnist_form_passes_unchanged():
    _, _, x_test, _, _ = bundled_mnist()
    for index in range(0, 10_000, 97):
        digit = x_test[index].astype(np.float32) / 255
        np.testing.assert_array_equal(photos.to_mnist_form(digit), digit)


def test_photo_becomes_a_centred_20_pixel_digit():
    _, _, x_test, _, _ = bundled_mnist()
    image, _ = phone_photo(x_test[0], "uneven-gray", np.random.default_rng(1))
    digit = photos.to_mnist_form(np.asarray(image.convert("L"), dtype=np.float32) / 255)
    rows, cols = np.flatnonzero(digit.max(axis=1) > 0.05), np.flatnonzero(digit.max(axis=0) > 0.05)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (19, 20, 21)
    centre = np.array([(np.indices(digit.shape)[k] * digit).sum() / digit.sum() for k in (0, 1)])
    assert np.abs(centre - 14).max() < 1.5
    assert digit[:3].max() < 0.05 and digit.max() > 0.9  # clean background, saturated strokes


def test_bad_images_each_get_a_line_and_the_rest_are_predicted(trained, tmp_path):
    out, _, _ = trained
    _, _, x_test, _, _ = bundled_mnist()
    good = tmp_path / "good.png"
    Image.fromarray(x_test[0]).save(good)
    (tmp_path / "notes.png").write_text("this is not a picture")
    Image.new("L", (200, 200), 255).save(tmp_path / "blank.png")
    result = run_main("--predict", tmp_path / "missing.png", tmp_path / "notes.png", tmp_path / "blank.png", good,
                      "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert errors == [f"{tmp_path / 'missing.png'}: error: no such file",
                      f"{tmp_path / 'notes.png'}: error: not an image this program can read (UnidentifiedImageError)",
                      f"{tmp_path / 'blank.png'}: error: blank image: no digit found"]
    assert list(predictions(result.stdout)) == [str(good)]


def test_bold_tight_cropped_digits_are_read_like_the_digits(read_together):
    """Marker-thick strokes cropped to the ink, 48 to 1,600 px, on paper and chalkboard, some unevenly lit."""
    photos_of, predicted, _ = read_together
    paths = photos_of["bold"]
    correct = sum(predicted[path] == label for path, label in paths.items())
    assert correct / len(paths) >= 0.9, [p for p in paths if predicted[p] != paths[p]]


def ring(size, dark_ink):
    """A marker-thick 0 filling its frame: most of the picture is ink, so the median pixel is ink."""
    ys, xs = np.indices((size, size * 3 // 4)) + 0.5
    radius = np.hypot((xs - size * 3 / 8) / (size * 3 / 8), (ys - size / 2) / (size / 2))
    ink = ((radius > 0.45) & (radius < 1.0)).astype(np.float32)
    return Image.fromarray(np.uint8(255 * (0.9 - 0.8 * ink if dark_ink else 0.15 + 0.75 * ink)))


def test_a_bold_zero_filling_the_frame_keeps_its_hole(tmp_path):
    for size in (48, 200, 1600):
        for dark_ink in (True, False):
            ring(size, dark_ink).save(tmp_path / "zero.png")
            digit = photos.to_mnist_form(photos.read_image(tmp_path / "zero.png")[0])
            assert digit[12:16, 12:16].max() < 0.1, (size, dark_ink)  # the hole stays paper
            assert digit[14, 4:8].max() > 0.9 and digit[14, 20:24].max() > 0.9, (size, dark_ink)  # the ring is ink
            assert digit[:2].max() < 0.1, (size, dark_ink)  # the paper outside stays paper


def digit_array(x_test, index, dark_ink=True):
    """Test digit `index` enlarged 6 times with a margin, as floats in [0, 1]: ink 1 on paper 0."""
    ink = np.asarray(Image.fromarray(x_test[index]).resize((168, 168), Image.BICUBIC), dtype=np.float64) / 255
    return np.pad(ink, 40)


def test_16_bit_float_32_bit_and_transparent_images_are_read_in_their_range(trained, tmp_path):
    out, _, _ = trained
    _, _, x_test, y_test, _ = bundled_mnist()
    model = keras.models.load_model(out / "model.keras")
    right = np.flatnonzero(model.predict(data.preprocess(x_test[:40]), verbose=0).argmax(axis=1) == y_test[:40])
    first, second, third, fourth, fifth = (int(i) for i in right[:5])
    paths = {}

    ink = digit_array(x_test, first)  # 16-bit PNG, dark ink on light paper: every value is above 255
    Image.fromarray(np.uint16(60000 - 52000 * ink)).save(tmp_path / "sixteen.png")
    paths[tmp_path / "sixteen.png"] = first
    ink = digit_array(x_test, second)  # floating-point TIFF in [0, 1]
    Image.fromarray(np.float32(0.9 - 0.8 * ink)).save(tmp_path / "float.tif")
    paths[tmp_path / "float.tif"] = second
    ink = digit_array(x_test, third)  # 32-bit integer TIFF, chalk on a board
    Image.fromarray(np.int32(4e8 + 1.5e9 * ink)).save(tmp_path / "thirty-two.tif")
    paths[tmp_path / "thirty-two.tif"] = third
    ink = digit_array(x_test, fourth)  # white ink on nothing
    white = np.full(ink.shape + (3,), 255, np.uint8)
    Image.fromarray(np.dstack([white, np.uint8(255 * ink)]), "RGBA").save(tmp_path / "white-on-clear.png")
    paths[tmp_path / "white-on-clear.png"] = fourth
    ink = digit_array(x_test, fifth)  # red ink: predictions.png must show it red
    red = np.dstack([0.95 - 0.1 * ink, 0.95 - 0.9 * ink, 0.95 - 0.9 * ink])
    Image.fromarray(np.uint8(255 * red)).save(tmp_path / "red-ink.png")
    paths[tmp_path / "red-ink.png"] = fifth

    assert Image.open(tmp_path / "sixteen.png").mode == "I;16" and Image.open(tmp_path / "float.tif").mode == "F"
    assert Image.open(tmp_path / "thirty-two.tif").mode == "I"
    result = run_main("--predict", *paths, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 0, result.stderr
    predicted = predictions(result.stdout)
    assert predicted == {str(path): int(y_test[i]) for path, i in paths.items()}
    with Image.open(tmp_path / "pred" / "predictions.png") as picture:
        rgb = np.asarray(picture.convert("RGB"), dtype=int)
    red_pixels = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    assert red_pixels.sum() > 200  # the red ink, as it was, not turned grey


def bomb_png(path, width, height):
    """A small PNG whose header declares width x height pixels: Pillow refuses it before decoding."""
    Image.new("L", (8, 8), 255).save(path)
    data = bytearray(path.read_bytes())
    header = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    path.write_bytes(bytes(data))


def test_unreadable_images_each_get_a_line_and_the_rest_are_predicted(trained, tmp_path):
    out, _, _ = trained
    _, _, x_test, y_test, _ = bundled_mnist()
    bomb_png(tmp_path / "bomb.png", 60000, 60000)
    Image.fromarray(np.uint8(255 - 200 * digit_array(x_test, 0))).save(tmp_path / "good.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:300])
    # A 108-megapixel phone photo: above Pillow's warning limit, read reduced, without a word.
    big = Image.new("L", (12000, 9000), 235)
    big.paste(Image.fromarray(np.uint8(235 - 200 * digit_array(x_test, 1))).resize((2480, 2480)), (4000, 3000))
    big.save(tmp_path / "big.jpg", quality=90)
    result = run_main("--predict", tmp_path / "bomb.png", tmp_path / "good.png", tmp_path / "cut.png",
                      tmp_path / "big.jpg", tmp_path, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        (f"{tmp_path / 'bomb.png'}: error: declares more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, too large "
         "to read safely: scale it down first"),
        f"{tmp_path / 'cut.png'}: error: not an image this program can read (OSError)",
        f"{tmp_path}: error: a folder, not an image"]
    assert predictions(result.stdout) == {str(tmp_path / "good.png"): int(y_test[0]),
                                          str(tmp_path / "big.jpg"): int(y_test[1])}


NAMES = ["fake.png: 1 (99.9%)\nthe next.png", "\x1b[2Jcleared.png", "sept-七-é.png"]


@pytest.fixture(scope="module")
def odd_files(trained, tmp_path_factory):
    """One --predict run over a digit and files that are not what they seem: a named pipe (FIFO),
    which a reader would wait on for ever; an image it may not read (None where this user reads any);
    names that would print a fake line or clear the screen, a name in other scripts (NAMES), and a
    missing one with a newline. Returns (the folder, the result, the unreadable image)."""
    out, _, _ = trained
    folder = tmp_path_factory.mktemp("odd")
    _, _, x_test, _, _ = bundled_mnist()
    Image.fromarray(x_test[0]).save(folder / "good.png")
    for n, name in enumerate(NAMES):
        Image.fromarray(x_test[n]).save(folder / name)
    os.mkfifo(folder / "pipe.png")
    try:
        locked = make_unreadable(folder / "locked.png")
    except pytest.skip.Exception:
        locked = None
    odd = [folder / "pipe.png"] + ([locked] if locked else [])
    result = run_main("--predict", *odd, folder / "good.png", *(folder / name for name in NAMES), folder / "gone\n.png",
                      "--model", out / "model.keras",
                      "--output-dir", folder / "pred")
    return folder, result, locked


def test_a_fifo_gets_its_line_unopened_and_the_rest_are_predicted(odd_files):
    folder, result, _ = odd_files
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert (f"{folder / 'pipe.png'}: error: a named pipe (FIFO), not an image: only regular files are read, save "
            "what it holds to a file and give that") in result.stderr.splitlines()
    assert str(folder / "good.png") in predictions(result.stdout)


def test_an_unreadable_image_says_permission_denied(odd_files):
    _, result, locked = odd_files
    if locked is None:
        pytest.skip("no file here is unreadable to this user (root reads through permission bits)")
    assert f"{locked}: error: permission denied: make it readable (chmod +r)" in result.stderr.splitlines()


def test_names_reach_the_terminal_escaped(odd_files):
    """A newline in a name cannot print a fake result line, nor an escape sequence reach the terminal:
    they show as repr shows them; letters of any script show as they are."""
    folder, result, _ = odd_files
    shown = ["fake.png: 1 (99.9%)\\nthe next.png", "\\x1b[2Jcleared.png", "sept-七-é.png"]  # NAMES as printed
    lines = result.stdout.splitlines()
    assert len(lines) == 5 and lines[-1].startswith("Saved: "), result.stdout  # good.png, NAMES, Saved
    for line, name in zip(lines[1:4], shown):
        assert re.fullmatch(rf"{re.escape(f'{folder}/{name}')}: \d \(\d+\.\d%\).*", line), line
    assert f"{folder}/gone\\n.png: error: no such file" in result.stderr.splitlines()
    assert "\x1b" not in result.stdout + result.stderr


def test_a_large_photo_is_read_reduced_and_kept_small(tmp_path):
    Image.new("RGB", (6000, 4000), "white").save(tmp_path / "big.png")
    gray, preview = photos.read_image(tmp_path / "big.png")
    assert gray.dtype == np.float32 and gray.shape == (683, 1024)
    assert preview.dtype == np.uint8 and preview.shape == (128, 192, 3)
    with open(tmp_path / "big.png", "rb") as file:  # a file object works as a path does
        assert photos.read_image(file)[0].shape == (683, 1024)


def test_names_in_the_picture_keep_their_extension():
    assert pictures.short_name("/photos/IMG_20240101_123456_portrait_mode.jpeg") == "IMG_20240101_12345\u2026.jpeg"
    assert len(pictures.short_name("/photos/IMG_20240101_123456_portrait_mode.jpeg")) == 24
    assert pictures.short_name("a/seven.png") == "seven.png"


def test_predict_without_a_model_names_the_command_that_makes_it(tmp_path):
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    result = run_main("--predict", tmp_path / "x.png", "--output-dir", tmp_path / "runs x")
    message = refusal(result)
    assert message == (f"error: no trained model at {tmp_path / 'runs x' / 'model.keras'}: train one with "
                       f"`python {SCRIPT.name} --output-dir '{tmp_path / 'runs x'}'`, or pass --model PATH")
    assert not (tmp_path / "runs x").exists()


def test_a_damaged_model_file_is_called_damaged(trained, tmp_path):
    out, _, _ = trained
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    content = (out / "model.keras").read_bytes()
    (tmp_path / "model.keras").write_bytes(content[: len(content) // 2])
    result = run_main("--predict", tmp_path / "x.png", "--model", tmp_path / "model.keras")
    message = refusal(result)
    assert message.startswith(f"error: --model: {tmp_path / 'model.keras'} is damaged or not a Keras model file")


def test_a_model_for_other_inputs_is_refused(tmp_path):
    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Dense(10)(keras.layers.Flatten()(inputs)))
    model.save(tmp_path / "cifar.keras")
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    result = run_main("--predict", tmp_path / "x.png", "--model", tmp_path / "cifar.keras")
    message = refusal(result)
    assert "is a model for inputs (None, 32, 32, 3)" in message and "not 28x28 digits" in message


def test_an_unwritable_picture_is_one_line_and_a_failure(trained, tmp_path):
    out, _, _ = trained
    _, _, x_test, y_test, _ = bundled_mnist()
    Image.fromarray(x_test[0]).save(tmp_path / "digit.png")
    (tmp_path / "pred" / "predictions.png").mkdir(parents=True)  # a folder in the picture's place
    result = run_main("--predict", tmp_path / "digit.png", "--model", out / "model.keras",
                      "--output-dir", tmp_path / "pred")
    assert result.returncode == 1
    assert predictions(result.stdout) == {str(tmp_path / "digit.png"): int(y_test[0])}
    assert result.stderr.strip() == (f"error: could not write {tmp_path / 'pred' / 'predictions.png'} (Is a "
                                     f"directory): nothing was saved, and {tmp_path / 'pred'}{os.sep} is as it was")
    assert [p.name for p in (tmp_path / "pred").iterdir()] == ["predictions.png"]  # the folder, as it was


def test_help_says_a_number_per_image():
    result = run_main("--help")
    assert "read the number in each image" in " ".join(result.stdout.split())


def test_the_example_photos_are_read_as_their_names_say(read_together):
    """data/examples/: eight phone-style photos, the digit in each name (digit-7-uneven-gray.png)."""
    photos_of, read, _ = read_together
    examples = photos_of["examples"]
    assert len(examples) == 8
    right = [path for path, digit in examples.items() if read[path] == digit]
    # the quick model; the default run's model reads all eight (docs/photos.md)
    assert len(right) >= 7, {path: read[path] for path in examples}


def test_an_unsure_reading_names_the_runners_up(trained, tmp_path):
    """Below 90% the next two digits follow, most likely first; above it, the digit alone."""
    out, _, _ = trained
    _, _, x_test, y_test, _ = bundled_mnist()
    for i, j in [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13)]:  # half one digit, half another
        blend = np.maximum(x_test[i], x_test[j]) if i % 4 else (x_test[i] // 2 + x_test[j] // 2)
        Image.fromarray(blend).save(tmp_path / f"blend{i}.png")
    Image.fromarray(x_test[0]).save(tmp_path / "clear.png")
    result = run_main("--predict", *sorted(tmp_path.glob("*.png")), "--model", out / "model.keras",
                      "--output-dir", tmp_path / "pred")
    assert result.returncode == 0, result.stderr
    lines = {line.split(": ")[0]: line.split(": ", 1)[1] for line in result.stdout.splitlines() if ".png: " in line}
    unsure = [reading for reading in lines.values() if float(reading.split("(")[1].split("%")[0]) < 90]
    assert unsure, lines  # some blend of two digits leaves the quick model unsure
    for reading in lines.values():
        shown = re.findall(r"(\d) \((\d+\.\d)%\)", reading)
        if float(shown[0][1]) < 90:
            assert re.fullmatch(r"\d \(\d+\.\d%\), else \d \(\d+\.\d%\), \d \(\d+\.\d%\)", reading), reading
            confidences = [float(c) for _, c in shown]
            assert confidences == sorted(confidences, reverse=True) and len({d for d, _ in shown}) == 3
        else:
            assert re.fullmatch(r"\d \(\d+\.\d%\)", reading), reading
    assert lines[str(tmp_path / "clear.png")].startswith(f"{y_test[0]} (")


def test_every_image_failing_writes_nothing_and_exits_1(trained, tmp_path):
    out, _, _ = trained
    (tmp_path / "notes.png").write_text("not a picture")
    result = run_main("--predict", tmp_path / "missing.png", tmp_path / "notes.png", "--model", out / "model.keras",
                      "--output-dir", tmp_path / "pred")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 2 and "Saved:" not in result.stdout
    assert not (tmp_path / "pred").exists()


def test_more_than_a_thousand_images_are_all_read_in_order(trained, tmp_path):
    """Predicted in batches of at most 1,000: the 1,001st image is read too, and the lines keep the order."""
    out, _, _ = trained
    _, _, x_test, y_test, _ = bundled_mnist()
    paths = []
    for i in range(1001):
        paths.append(tmp_path / f"{i:04d}.png")
        Image.fromarray(x_test[i]).save(paths[-1])
    result = run_main("--predict", *paths, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 0, result.stderr
    read = predictions(result.stdout)
    assert list(read) == [str(path) for path in paths]
    assert np.mean([read[str(path)] == y_test[i] for i, path in enumerate(paths)]) > 0.9
    with Image.open(tmp_path / "pred" / "predictions.png") as picture:
        assert picture.size[1] < 4000  # the picture shows the first few, not a thousand


def test_a_probability_short_of_1_is_never_shown_as_100_percent():
    """0.9996 rounds to 100.0%: a wrong answer said to be "100% sure". Shown as 99.9% at most, 100% only for 1."""
    from digits.errors import percent
    from digits.predict import reading

    sure = np.full(10, 0.0004 / 9, dtype=np.float32)
    sure[7] = 0.9996
    assert reading([sure]) == "7 (99.9%)"
    assert reading([sure, sure]) == "77 (7 99.9%, 7 99.9%)"
    assert [percent(p) for p in (0.99949, 0.9995, 0.99999994, 1.0, 0.5, 0.0)] == [
        "99.9%", "99.9%", "99.9%", "100.0%", "50.0%", "0.0%"]
    assert [percent(p, 0) for p in (0.996, 1.0)] == ["99%", "100%"]  # the pictures' titles


def test_an_image_of_several_frames_says_that_its_first_is_read(trained, tmp_path):
    """A GIF or TIFF of several frames is read by its first frame, and the line before its reading says so."""
    out, _, _ = trained
    _, _, x_test, y_test, _ = bundled_mnist()
    model = keras.models.load_model(out / "model.keras")
    right = np.flatnonzero(model.predict(data.preprocess(x_test[:40]), verbose=0).argmax(axis=1) == y_test[:40])
    first, second, third = (Image.fromarray(np.uint8(255 - 230 * digit_array(x_test, int(i)))) for i in right[:3])
    assert len({int(y_test[i]) for i in right[:3]}) == 3, "three different digits, one a frame"
    first.save(tmp_path / "moving.gif", save_all=True, append_images=[second, third], duration=100)
    first.save(tmp_path / "pages.tif", save_all=True, append_images=[third])
    first.save(tmp_path / "still.png")
    with Image.open(tmp_path / "moving.gif") as gif, Image.open(tmp_path / "pages.tif") as tif:
        assert (gif.n_frames, tif.n_frames) == (3, 2)
    paths = [tmp_path / name for name in ("moving.gif", "pages.tif", "still.png")]
    result = run_main("--predict", *paths, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    at = lines.index(f"{paths[0]}: 3 frames, read the first")
    assert lines[at + 1].startswith(f"{paths[0]}: {y_test[right[0]]} (")
    assert lines[at + 2] == f"{paths[1]}: 2 frames, read the first"
    assert lines[at + 3].startswith(f"{paths[1]}: {y_test[right[0]]} (")
    assert lines[at + 4].startswith(f"{paths[2]}: {y_test[right[0]]} (") and "frames" not in result.stdout[
        result.stdout.index(str(paths[2])):]
