"""Predicting your own digits: photos of MNIST test digits, as a phone would take them."""
import re

import numpy as np
import pytest
from PIL import Image

import handwritten_digit_classification as hdc
from conftest import run_cli

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


def predictions(stdout):
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(.+): (\d) \(\d+\.\d%\)", stdout, re.M)}


def test_phone_photos_of_digits_are_read_like_the_digits(trained, tmp_path):
    out, _, _ = trained
    (_, _, x_test, y_test), _ = hdc.load_mnist("bundled")
    model = hdc.keras.models.load_model(out / "model.keras")
    indices = np.arange(2000, 2100)  # outside the slice the model was evaluated on
    untouched = model.predict(hdc.preprocess(x_test[indices]), verbose=0).argmax(axis=1)
    rng = np.random.default_rng(0)
    paths = {}
    for n, i in enumerate(indices):
        if untouched[n] != y_test[i]:
            continue  # the model gets the clean digit wrong: nothing to learn about preprocessing
        image, extension = phone_photo(x_test[i], KINDS[n % len(KINDS)], rng)
        path = tmp_path / f"digit{i}-{KINDS[n % len(KINDS)]}.{extension}"
        image.save(path)
        paths[str(path)] = int(y_test[i])
    result = run_cli("--predict", *paths, "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 0, result.stderr
    predicted = predictions(result.stdout)
    assert set(predicted) == set(paths)
    correct = sum(predicted[path] == label for path, label in paths.items())
    assert correct / len(paths) >= 0.95, [p for p in paths if predicted[p] != paths[p]]
    with Image.open(tmp_path / "pred" / "predictions.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 1000 and picture.size[1] > 600


def test_an_image_already_in_mnist_form_passes_unchanged():
    (_, _, x_test, _), _ = hdc.load_mnist("bundled")
    digit = x_test[0].astype(np.float32) / 255
    np.testing.assert_array_equal(hdc.to_mnist_form(digit), digit)


def test_photo_becomes_a_centred_20_pixel_digit():
    (_, _, x_test, _), _ = hdc.load_mnist("bundled")
    image, _ = phone_photo(x_test[0], "uneven-gray", np.random.default_rng(1))
    digit = hdc.to_mnist_form(np.asarray(image.convert("L"), dtype=np.float32) / 255)
    rows, cols = np.flatnonzero(digit.max(axis=1) > 0.05), np.flatnonzero(digit.max(axis=0) > 0.05)
    assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 in (19, 20, 21)
    centre = np.array([(np.indices(digit.shape)[k] * digit).sum() / digit.sum() for k in (0, 1)])
    assert np.abs(centre - 14).max() < 1.5
    assert digit[:3].max() < 0.05 and digit.max() > 0.9  # clean background, saturated strokes


def test_bad_images_each_get_a_line_and_the_rest_are_predicted(trained, tmp_path):
    out, _, _ = trained
    (_, _, x_test, _), _ = hdc.load_mnist("bundled")
    good = tmp_path / "good.png"
    Image.fromarray(x_test[0]).save(good)
    (tmp_path / "notes.png").write_text("this is not a picture")
    Image.new("L", (200, 200), 255).save(tmp_path / "blank.png")
    result = run_cli("--predict", tmp_path / "missing.png", tmp_path / "notes.png", tmp_path / "blank.png", good,
                     "--model", out / "model.keras", "--output-dir", tmp_path / "pred")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = result.stderr.strip().splitlines()
    assert errors == [f"{tmp_path / 'missing.png'}: error: no such file",
                      f"{tmp_path / 'notes.png'}: error: not an image this program can read (UnidentifiedImageError)",
                      f"{tmp_path / 'blank.png'}: error: blank image: no digit found"]
    assert list(predictions(result.stdout)) == [str(good)]


def test_predict_without_a_model_says_train_first(tmp_path):
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    result = run_cli("--predict", tmp_path / "x.png", "--output-dir", tmp_path / "empty")
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "no trained model at" in message and "train first" in message
    assert not (tmp_path / "empty").exists()
