"""Training settings through the real command line: schedules, precision, validation split; the evaluation maths."""
import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import bundled_mnist, run_cli, run_main

from digits import evaluation, networks, precision, settings, training

CPU_FLAGS = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""


def test_auto_precision_keeps_the_faster_of_two_measured():
    x_train, y_train, _, _, _ = bundled_mnist()
    try:
        chosen = precision.choose_precision("auto", networks.build_cnn, x_train[:64, ..., None], y_train[:64])
        assert chosen.device.startswith("CPU (")  # the test machines have no GPU
        assert set(chosen.timings) == {"float32", "bfloat16"} and all(0 < t < 10 for t in chosen.timings.values())
        assert chosen.name == min(chosen.timings, key=chosen.timings.get)
        assert keras.mixed_precision.global_policy().name == precision.POLICIES[chosen.name]  # left set
        asked = precision.choose_precision("float32", networks.build_cnn, None, None)
        assert asked == ("float32", chosen.device, None, False)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_auto_precision_is_printed_and_recorded(trained):
    _, result, metrics = trained
    timings = metrics["config"]["precision_timings"]
    assert metrics["config"]["precision"] == min(timings, key=timings.get)
    assert (f"precision: {metrics['config']['precision']} (measured {1000 * timings['float32']:.1f} ms a step in "
            f"float32, {1000 * timings['bfloat16']:.1f} in bfloat16)") in result.stdout
    assert f"Backend: {keras.backend.backend()}, device: CPU" in result.stdout


def backend_line(stdout):
    return next(line for line in stdout.splitlines() if line.startswith("Backend: "))


def test_auto_precision_is_measured_once_per_machine_then_remembered(trained, tmp_path):
    """The first run on a machine measures (the `trained` run, in a cache of its own), the next ones
    with that cache remember, until it is damaged (runs given a copy of it, on the same network and batch)."""
    tiny = ["--limit-train", "256", "--limit-test", "100", "--epochs", "1", "--batch-size", "32"]
    env = {"XDG_CACHE_HOME": tmp_path / "cache"}
    cache = tmp_path / "cache" / "handwritten-digits" / "precision.json"

    def run(name):
        result = run_cli(*tiny, "--output-dir", tmp_path / name, env=env)
        assert result.returncode == 0, result.stderr
        config = json.loads((tmp_path / name / "metrics.json").read_text())["config"]
        return backend_line(result.stdout), config

    out, result, metrics = trained
    line, first = backend_line(result.stdout), metrics["config"]
    assert first["precision_remembered"] is False and "(measured " in line
    measured = out / "cache" / "handwritten-digits" / "precision.json"
    assert [entry["timings"] for entry in json.loads(measured.read_text()).values()] == [first["precision_timings"]]
    cache.parent.mkdir(parents=True)
    shutil.copy(measured, cache)
    line, second = run("second")  # no measurement: the same timings, and a line that says where they came from
    assert second["precision_remembered"] is True and second["precision_timings"] == first["precision_timings"]
    assert second["precision"] == first["precision"]
    assert f"(remembered: measured {1000 * first['precision_timings']['float32']:.1f} ms a step" in line
    assert f"delete {cache} to measure again" in line
    cache.write_text("{not json")  # a damaged cache is measured again, and rewritten whole
    line, third = run("third")
    assert third["precision_remembered"] is False and "(measured " in line
    assert [entry["timings"] for entry in json.loads(cache.read_text()).values()] == [third["precision_timings"]]


def test_precision_cache_that_cannot_be_written_is_only_not_remembered(tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    timings = {"float32": 0.02, "bfloat16": 0.01}
    precision.remember(blocked / "precision.json", "key", timings)  # its folder cannot be made: no error
    assert precision.recall(blocked / "precision.json", "key") is None
    precision.remember(tmp_path / "precision.json", "key", timings)
    assert precision.recall(tmp_path / "precision.json", "key") == timings
    assert precision.recall(tmp_path / "precision.json", "another machine") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "precision.json"]  # no temporary file left


@pytest.mark.skipif("avx512_bf16" not in CPU_FLAGS, reason="needs a CPU whose oneDNN runs bfloat16, capped below it")
def test_auto_precision_leaves_out_a_precision_the_kernels_cannot_run(tmp_path):
    """oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA) cannot run the bfloat16 steps TensorFlow gives it here:
    the run measures float32 alone, says so, and trains; the next run remembers it."""
    result = run_cli("--limit-train", "256", "--limit-test", "100", "--epochs", "1", "--batch-size", "32",
                     "--output-dir", tmp_path / "out", env={"XDG_CACHE_HOME": tmp_path / "cache",
                                                           "ONEDNN_MAX_CPU_ISA": "AVX2"})
    assert result.returncode == 0, result.stderr
    line = backend_line(result.stdout)
    assert "precision: float32 (measured " in line and "bfloat16 cannot run here" in line, line
    again = run_cli("--limit-train", "256", "--limit-test", "100", "--epochs", "1", "--batch-size", "32",
                    "--output-dir", tmp_path / "again", env={"XDG_CACHE_HOME": tmp_path / "cache",
                                                            "ONEDNN_MAX_CPU_ISA": "AVX2"})
    line = backend_line(again.stdout)  # the next run on this machine remembers float32's timing alone
    assert "precision: float32 (remembered: measured " in line and "bfloat16 cannot run here" in line, line


def test_the_precision_remembered_is_for_the_kernels_chosen_too(monkeypatch):
    """The same CPU with oneDNN capped at AVX2, or turned off, times differently: another entry."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    plain = precision.machine_key("CPU", "network")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = precision.machine_key("CPU", "network")
    assert capped != plain and "ONEDNN_MAX_CPU_ISA=AVX2" in capped


def test_bfloat16_trains(non_default_run):
    _, _, metrics = non_default_run  # --precision bfloat16
    assert metrics["config"]["precision"] == "bfloat16" and metrics["config"]["precision_timings"] is None
    assert metrics["test_accuracy"] > 0.85


def test_cosine_schedule_warms_up_then_decays(trained):
    _, _, metrics = trained
    rates = metrics["history"]["learning_rate"]  # QUICK: 2 epochs, so the warm-up is the first one
    assert rates[0] == pytest.approx(settings.LEARNING_RATES["cosine"], rel=1e-3)
    assert rates[1] == pytest.approx(0, abs=1e-6)


def test_constant_schedule_is_adams_default(non_default_run):
    _, _, metrics = non_default_run  # --lr-schedule constant
    assert metrics["history"]["learning_rate"] == pytest.approx([1e-3, 1e-3])
    assert metrics["test_accuracy"] > 0.85


def test_validation_split_watches_held_out_training_images(non_default_run):
    _, result, metrics = non_default_run  # --validation-split 0.2
    assert metrics["data"]["train_images"] == 2400 and metrics["data"]["validation_images"] == 600
    assert "2,400 training, 600 held out for validation and 1,000 test images" in result.stdout
    assert metrics["curves_watch"] == "validation"
    for accuracy in metrics["history"]["val_accuracy"]:  # counted over 600 images, not the 1,000 test ones
        assert accuracy * 600 == pytest.approx(round(accuracy * 600), abs=1e-3)
    assert metrics["test_accuracy"] * 1000 == pytest.approx(round(metrics["test_accuracy"] * 1000))
    assert metrics["test_accuracy"] > 0.85


@pytest.mark.parametrize("value", ["1", "-0.1", "half"])
def test_validation_split_must_be_a_fraction(tmp_path, value):
    result = run_main("--validation-split", value, "--output-dir", tmp_path / "out")
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


def test_training_batches_cover_every_image_once_an_epoch_in_a_new_order():
    """On TensorFlow on a CPU of a few cores (these machines), the batches come from the program's own
    tf.data pipeline: every image once an epoch, in batches of the size asked for, reshuffled each epoch."""
    from digits import backend

    images = (np.arange(1000) % 256).astype(np.uint8).reshape(1000, 1, 1, 1)
    labels = np.arange(1000, dtype=np.int32)  # each image's own index, to follow it
    fed = backend.batches(images, labels, 128, shuffle=True)
    if keras.backend.backend() != "tensorflow" or os.cpu_count() > backend.SMALL_CPU:
        assert fed == (images, labels, 128, True)  # Keras' own pipeline, as it takes arrays
        return
    assert fed.y is None and fed.batch_size is None and fed.shuffle is False  # shuffled by the dataset itself
    epochs = [[(np.asarray(x), np.asarray(y)) for x, y in fed.x] for _ in range(2)]
    for epoch in epochs:
        assert [len(y) for _, y in epoch] == [128] * 7 + [104]
        order = np.concatenate([y for _, y in epoch])
        assert sorted(order) == list(range(1000))
        assert all((x.ravel() == y % 256).all() for x, y in epoch)  # each label still with its image
    assert not np.array_equal(*(np.concatenate([y for _, y in epoch]) for epoch in epochs))
    watched = backend.batches(images, labels, 1000, shuffle=False)
    assert [np.asarray(y).tolist() for _, y in watched.x] == [list(range(1000))]  # in order, for the curves


def test_the_progress_never_counts_past_the_epochs_steps(capsys):
    """Keras runs 16 steps a call and names the call's last step as if all 16 ran: an epoch of 35 steps
    ended at "48/35" where Keras gathers the batches itself (machines of more than 4 cores). The bar
    and the count of steps trained stop at the epoch's own."""
    x_train, y_train, _, _, _ = bundled_mnist()
    network = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")])
    trainer = training.make_trainer(network)
    training.compile_trainer(trainer, keras.optimizers.Adam())
    stop, progress = training.GracefulStop(35), training.WatchedProgress("test")
    trainer.fit(x_train[: 35 * 32, ..., None], y_train[: 35 * 32], batch_size=32, epochs=1, verbose=1,
                callbacks=[stop, progress])  # arrays, as Keras takes them
    assert progress.seen == 35, progress.seen  # the step the bar was last moved to (on a terminal, drawn)
    assert stop.steps_done == 35 and stop.epochs_completed == 1
    out = capsys.readouterr().out
    assert "35/35" in out and "48/35" not in out, out
