"""End to end through the real command line: a quick real training run and what it leaves behind."""
import re

import keras
import numpy as np
import pytest
from conftest import bundled_mnist, run_main
from PIL import Image

from digits import cli, data

PNGS = {  # name: smallest sensible (width, height) for a person to read at 100% zoom
    "confusion_matrix.png": (600, 500),
    "training_curves.png": (700, 300),
    "misclassified.png": (500, 300),
    "filters.png": (900, 700),
}


def test_run_prints_accuracy_and_metrics_agree(trained):
    out, result, metrics = trained
    accuracy = float(re.search(r"^Test accuracy: (0\.\d{4})$", result.stdout, re.MULTILINE).group(1))
    loss = float(re.search(r"^Test loss: (\d+\.\d{4})$", result.stdout, re.MULTILINE).group(1))
    assert accuracy > 0.9
    assert accuracy == round(metrics["test_accuracy"], 4) and loss == round(metrics["test_loss"], 4)
    assert "Total params: 179,926" in result.stdout
    assert metrics["epochs_completed"] == 2 and not metrics["interrupted"]
    assert len(metrics["history"]["loss"]) == len(metrics["history"]["test_accuracy"]) == 2
    assert metrics["data"] == {"source": metrics["data"]["source"], "train_images": 3000, "validation_images": 0,
                               "test_images": 1000}
    assert metrics["curves_watch"] == "test" and metrics["config"]["parameters"] == 179_926
    assert metrics["config"]["epochs"] == 2 and metrics["config"]["batch_size"] == 32
    assert metrics["duration_seconds"] >= metrics["train_seconds"] > 0
    # start-up: from the start to the first training steps, which lie inside the training's time
    assert 0 < metrics["startup_seconds"] < metrics["duration_seconds"] - metrics["train_seconds"] + \
        metrics["history"]["epoch_seconds"][0]
    each = metrics["history"]["epoch_seconds"]
    printed = re.search(r"^Trained 2 epochs in ([\d.]+) s \(([\d.]+)-([\d.]+) s an epoch\); "
                        r"the first steps ran ([\d.]+) s after the start$", result.stdout, re.MULTILINE)
    assert np.allclose([float(v) for v in printed.groups()],  # printed to 0.1 s, recorded to 0.01 s
                       [metrics["train_seconds"], min(each), max(each), metrics["startup_seconds"]], atol=0.051)
    for name in [*PNGS, "model.keras", "metrics.json"]:
        assert str(out / name) in result.stdout


def test_report_numbers_agree_with_confusion_matrix(trained):
    _, result, metrics = trained
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.shape == (10, 10) and confusion.sum() == 1000
    assert np.trace(confusion) / 1000 == pytest.approx(metrics["test_accuracy"])
    for digit, row in metrics["per_class"].items():
        d = int(digit)
        assert row["support"] == confusion[d].sum()
        assert row["recall"] == pytest.approx(confusion[d, d] / confusion[d].sum())
        assert row["precision"] == pytest.approx(confusion[d, d] / confusion[:, d].sum())
        assert row["f1"] == pytest.approx(2 * row["precision"] * row["recall"] / (row["precision"] + row["recall"]))
        cells = [f"{row[key]:.4f}" for key in ("precision", "recall", "f1")]
        assert re.search(rf"^\s+{d}\s+" + r"\s+".join(cells) + rf"\s+{row['support']}$", result.stdout, re.MULTILINE)
    mistakes = confusion - np.diag(np.diag(confusion))
    top = metrics["most_confused"][0]
    assert top["count"] == mistakes.max() == mistakes[top["true"], top["predicted"]]
    assert f"{top['true']} -> {top['predicted']}: {top['count']}" in result.stdout


@pytest.mark.parametrize("name", PNGS)
def test_each_picture_is_a_readable_png(trained, name):
    out, _, _ = trained
    with Image.open(out / name) as image:
        assert image.format == "PNG"
        width, height = image.size
        pixels = np.asarray(image.convert("L"), dtype=float)
    min_width, min_height = PNGS[name]
    assert min_width <= width <= 3000 and min_height <= height <= 3000
    assert pixels.std() > 20  # not a blank canvas


def test_saved_model_reproduces_the_reported_accuracy(trained):
    out, _, metrics = trained
    model = keras.models.load_model(out / "model.keras")
    _, _, x_test, y_test, _ = bundled_mnist()
    predicted = model.predict(data.preprocess(x_test[:1000]), verbose=0).argmax(axis=1)
    assert (predicted == y_test[:1000]).mean() == pytest.approx(metrics["test_accuracy"])


def test_help_shows_every_option_with_its_default():
    result = run_main("--help")
    assert result.returncode == 0
    text_of_help = " ".join(result.stdout.split())  # argparse wraps lines to the terminal's width
    assert "(default: None)" not in text_of_help and "(default: False)" not in text_of_help
    options = [action for action in cli.build_parser()._actions if action.option_strings != ["-h", "--help"]]
    assert len(options) >= 20
    for action in options:
        assert action.option_strings[0] in text_of_help
        if action.default not in (None, False):
            assert f"(default: {action.default})" in text_of_help, action.dest


# An .npz data source end to end: tests/test_data.py trains on two (test_float_pixels_in_0_1_train_exactly_like_uint8).


def test_model_without_predict_is_refused(tmp_path):
    result = run_main("--model", tmp_path / "m.keras", "--output-dir", tmp_path / "out")
    assert result.returncode == 2
    assert "--model is only used with --predict, --draw, --evaluate or --adapt" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv,flag,mode", [
    (["--predict", "x.png", "--epochs", "3"], "--epochs", "--predict"),
    (["--draw", "--seed", "1"], "--seed", "--draw"),
    (["--evaluate", "mine", "--limit-test", "100"], "--limit-test", "--evaluate"),
])
def test_a_training_option_with_another_mode_is_refused_not_ignored(capsys, argv, flag, mode):
    from digits.cli import parse_args

    with pytest.raises(SystemExit) as stopped:
        parse_args(argv)
    assert stopped.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{flag} is for training; {mode} uses a trained model and would ignore it: drop {flag}" in message


@pytest.mark.parametrize("argv, meant", [(["--lr", "0.01"], "--learning-rate"), (["--lr=0.01"], "--learning-rate"),
                                         (["--learningrate", "3"], "--learning-rate"), (["--seeds", "1"], "--seed"),
                                         (["--colour", "red"], None), (["--rate", "3"], None)])
def test_an_unknown_option_suggests_the_option_meant_or_none(capsys, argv, meant):
    """--lr is the initials of --learning-rate, not a misspelt --filters; a word like no option gets no guess."""
    with pytest.raises(SystemExit) as exit_:
        cli.parse_args(argv)
    message = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and message.startswith(f"{cli.build_parser().prog}: error: unrecognized arguments: ")
    assert message.endswith(f" (did you mean {meant}?) (see --help)" if meant else f"{argv[-1]} (see --help)"), message
