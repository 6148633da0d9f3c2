"""Training settings through the real command line: schedules, precision, validation split; the evaluation maths."""
import json

import keras
import numpy as np
import pytest
from conftest import QUICK, bundled_mnist, run_cli

from digits import evaluation, networks, precision, settings, training


def quick_run(tmp_path, *flags):
    out = tmp_path / "out"
    result = run_cli(*QUICK, "--precision", "float32", *flags, "--output-dir", out)  # flags may override it
    assert result.returncode == 0, result.stderr
    return result, json.loads((out / "metrics.json").read_text())


def test_auto_precision_keeps_the_faster_of_two_measured():
    x_train, y_train, _, _, _ = bundled_mnist()
    try:
        chosen = precision.choose_precision("auto", networks.build_cnn, x_train[:64, ..., None], y_train[:64])
        assert chosen.device.startswith("CPU (")  # the test machines have no GPU
        assert set(chosen.timings) == {"float32", "bfloat16"} and all(0 < t < 10 for t in chosen.timings.values())
        assert chosen.name == min(chosen.timings, key=chosen.timings.get)
        assert keras.mixed_precision.global_policy().name == precision.POLICIES[chosen.name]  # left set
        assert precision.choose_precision("float32", networks.build_cnn, None, None) == ("float32", chosen.device, None)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_auto_precision_is_printed_and_recorded(trained):
    _, result, metrics = trained
    timings = metrics["config"]["precision_timings"]
    assert metrics["config"]["precision"] == min(timings, key=timings.get)
    assert (f"precision: {metrics['config']['precision']} (measured {1000 * timings['float32']:.1f} ms a step in "
            f"float32, {1000 * timings['bfloat16']:.1f} in bfloat16)") in result.stdout
    assert f"Backend: {keras.backend.backend()}, device: CPU" in result.stdout


def test_bfloat16_trains(tmp_path):
    _, metrics = quick_run(tmp_path, "--precision", "bfloat16")
    assert metrics["config"]["precision"] == "bfloat16" and metrics["config"]["precision_timings"] is None
    assert metrics["test_accuracy"] > 0.85


def test_cosine_schedule_warms_up_then_decays(trained):
    _, _, metrics = trained
    rates = metrics["history"]["learning_rate"]  # QUICK: 2 epochs, so the warm-up is the first one
    assert rates[0] == pytest.approx(settings.LEARNING_RATES["cosine"], rel=1e-3)
    assert rates[1] == pytest.approx(0, abs=1e-6)


def test_constant_schedule_is_adams_default(tmp_path):
    _, metrics = quick_run(tmp_path, "--lr-schedule", "constant")
    assert metrics["history"]["learning_rate"] == pytest.approx([1e-3, 1e-3])
    assert metrics["test_accuracy"] > 0.85


def test_validation_split_watches_held_out_training_images(tmp_path):
    result, metrics = quick_run(tmp_path, "--validation-split", "0.2")
    assert metrics["data"]["train_images"] == 2400 and metrics["data"]["validation_images"] == 600
    assert "2,400 training, 600 held out for validation and 1,000 test images" in result.stdout
    assert metrics["curves_watch"] == "validation"
    for accuracy in metrics["history"]["val_accuracy"]:  # counted over 600 images, not the 1,000 test ones
        assert accuracy * 600 == pytest.approx(round(accuracy * 600), abs=1e-3)
    assert metrics["test_accuracy"] * 1000 == pytest.approx(round(metrics["test_accuracy"] * 1000))
    assert metrics["test_accuracy"] > 0.85


@pytest.mark.parametrize("value", ["1", "-0.1", "half"])
def test_validation_split_must_be_a_fraction(tmp_path, value):
    result = run_cli("--validation-split", value, "--output-dir", tmp_path / "out")
    assert result.returncode == 2 and "--validation-split" in result.stderr and "Traceback" not in result.stderr


def test_confusion_matrix_rows_are_true_digits():
    labels = np.array([0, 0, 1, 2, 2, 2, 9])
    predicted = np.array([0, 1, 1, 2, 2, 7, 9])
    expected = np.zeros((10, 10), int)
    for true, guess in zip(labels, predicted):
        expected[true, guess] += 1
    np.testing.assert_array_equal(evaluation.confusion_matrix(labels, predicted), expected)


def test_report_says_n_a_where_there_is_nothing_to_divide_by():
    confusion = np.diag([5] * 10)
    confusion[3, 3] = 0  # no test images of 3, never predicted as 3
    report = evaluation.per_class_report(confusion)
    assert report["3"] == {"precision": None, "recall": None, "f1": None, "support": 0}
    assert report["4"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 5}
    line = next(line for line in evaluation.format_report(report, []).splitlines() if line.strip().startswith("3 "))
    assert line.split() == ["3", "n/a", "n/a", "n/a", "0"]


def test_cosine_schedule_at_its_turning_points():
    """Warm-up from a thirtieth of the peak over the first epoch, then a cosine down to zero."""
    optimizer = training.make_optimizer("cosine", 0.003, epochs=4, steps=10)  # 40 steps, 10 of warm-up

    def rate_at(step):
        optimizer.iterations.assign(step)
        return float(keras.ops.convert_to_numpy(optimizer.learning_rate))

    assert rate_at(0) == pytest.approx(0.0001)
    assert rate_at(5) == pytest.approx(0.0001 + (0.003 - 0.0001) / 2)  # mid warm-up: linear
    assert rate_at(10) == pytest.approx(0.003)  # the peak, at the end of the first epoch
    assert rate_at(25) == pytest.approx(0.0015)  # mid decay: half the peak on a cosine
    assert rate_at(40) == pytest.approx(0, abs=1e-9)
    constant = training.make_optimizer("constant", 0.001, epochs=4, steps=10)
    constant.iterations.assign(25)
    assert float(keras.ops.convert_to_numpy(constant.learning_rate)) == pytest.approx(0.001)
