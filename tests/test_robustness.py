"""Signals during and after training, outputs that appear together, repeatable seeds, file modes."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import SCRIPT, bundled_mnist, run_main

from digits import augment, data, networks, training

# float32 pinned: the same run on every machine, without the seconds of `auto`'s timing (tested elsewhere)
SMALL = ["--limit-train", "2000", "--limit-test", "500", "--batch-size", "32", "--precision", "float32"]


def start(out, *args, epochs=40):
    return subprocess.Popen([sys.executable, str(SCRIPT), *SMALL, "--epochs", str(epochs), "--output-dir", str(out),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", "KERAS_BACKEND": "tensorflow"})


def read_until(process, text):
    lines = []
    for line in process.stdout:
        lines.append(line)
        if text in line:
            return "".join(lines)
    raise AssertionError(f"never printed {text!r}:\n" + "".join(lines))


def previous_run(out):
    out.mkdir()
    (out / "metrics.json").write_text("previous run\n")


def assert_previous_run_untouched(out):
    assert [p.name for p in out.iterdir()] == ["metrics.json"]  # no new file, no staging folder left
    assert (out / "metrics.json").read_text() == "previous run\n"


# One signal a scenario: SIGINT and SIGTERM share one handler (digits.signals), so each is sent in one of them.
def test_a_plain_kill_after_the_first_epoch_saves_what_was_trained(tmp_path):
    run = tmp_path / "out"
    process = start(run)
    read_until(process, "Epoch 2/40")
    process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "Traceback" not in output
    assert os.listdir(run) == ["interrupted"]  # what it trained, apart from finished runs; no staging folder
    out = run / "interrupted"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True
    assert 1 <= metrics["epochs_completed"] < 40
    assert len(metrics["history"]["loss"]) == len(metrics["history"]["epoch_seconds"]) == metrics["epochs_completed"]
    assert re.search(rf"^Interrupted (in epoch {metrics['epochs_completed'] + 1} after \d+ of 63 steps|after epoch "
                     rf"{metrics['epochs_completed']}): saved what was trained in {re.escape(str(out))}/", output,
                     re.MULTILINE), output
    model = keras.models.load_model(out / "model.keras")
    assert model.name == "mnist_cnn" and model.inputs[0].dtype == "float32"  # the network, not the training wrapper
    assert f"Test accuracy: {metrics['test_accuracy']:.4f}" in output
    assert (out / "confusion_matrix.png").stat().st_size > 10_000


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_previous_run(tmp_path):
    out = tmp_path / "out"
    previous_run(out)
    process = start(out)
    read_until(process, "Epoch 2/40")
    process.send_signal(signal.SIGINT)
    read_until(process, "Stopping after this step")
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "nothing new was saved" in output and "Traceback" not in output
    assert_previous_run_untouched(out)


def test_signal_after_training_writes_nothing(tmp_path):
    """Training is over and the outputs are being made: Ctrl-C quits, and the run leaves nothing."""
    out = tmp_path / "out"
    previous_run(out)
    process = start(out, epochs=1)
    read_until(process, "Trained 1 epoch in")  # training is over: evaluation and pictures come next
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "nothing new was saved" in output and "Traceback" not in output
    assert "Interrupted after" not in output  # a complete run is not reported as cut short
    assert_previous_run_untouched(out)


def test_ctrl_c_while_keras_loads_is_one_line(tmp_path):
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--output-dir", str(tmp_path / "out")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    maps = Path(f"/proc/{process.pid}/maps")
    deadline = time.monotonic() + 120
    while process.poll() is None and "libtensorflow" not in maps.read_text():  # until the backend loads
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("TensorFlow's library never appeared in the process within 120 s")
        time.sleep(0.01)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "Interrupted while loading Keras; nothing was done."
    assert not (tmp_path / "out").exists()


def test_ctrl_c_while_the_data_is_read_is_one_line(tmp_path):
    out = tmp_path / "out"
    previous_run(out)
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--output-dir", str(out)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "KERAS_BACKEND": "tensorflow"})
    deadline = time.monotonic() + 60

    def reading_images():
        try:
            return any("train-images" in os.readlink(fd) for fd in Path(f"/proc/{process.pid}/fd").iterdir())
        except OSError:  # a descriptor closed while we looked
            return False

    while not reading_images():  # the bundled training images are open: decompressed and checksummed now
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"never saw the program read its data: {process.communicate()}")
        time.sleep(0.002)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "Interrupted: stopped at once, nothing new was saved." and "Data:" not in stdout
    assert_previous_run_untouched(out)


def test_main_leaves_the_ctrl_c_handler_as_it_found_it(tmp_path, capsys):
    import handwritten_digit_classification as program

    def ours(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, ours)
    try:
        assert program.main(["--limit-train", "256", "--limit-test", "100", "--epochs", "1", "--batch-size", "32",
                             "--precision", "float32", "--output-dir", str(tmp_path / "out")]) == 0
        assert signal.getsignal(signal.SIGINT) is ours
    finally:
        signal.signal(signal.SIGINT, previous)
    assert (tmp_path / "out" / "model.keras").is_file()


def small_fit(epochs, callbacks=()):
    """The real training.train() of the real network on 1,024 MNIST images (two calls into the backend
    an epoch), watched on 2,000 test images; returns it and the SIGINT handler in force afterwards.

    A SIGINT that train() does not take reaches the handler set here and fails the test, rather than
    interrupting pytest itself.
    """
    x_train, y_train, x_test, y_test, _ = bundled_mnist()
    trainer = training.make_trainer(networks.build_cnn())
    escaped = []

    def fallback(signum, frame):
        escaped.append(signum)

    previous = signal.signal(signal.SIGINT, fallback)
    try:
        fit = training.train(trainer, (x_train[:1024, ..., None], y_train[:1024]),
                             (x_test[:2000, ..., None], y_test[:2000]), epochs, 32, "adam", callbacks)
        after = signal.getsignal(signal.SIGINT)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert not escaped, "a SIGINT during training escaped train()'s handler"
    return fit, after is fallback


class SignalAt(keras.callbacks.Callback):
    """Sends this process a real SIGINT the first time training reaches a point in a given epoch."""

    def __init__(self, point, epoch=0):
        super().__init__()
        self.point, self.epoch, self.current_epoch = point, epoch, -1

    def on_train_begin(self, logs=None):
        if self.point == "before training":
            signal.raise_signal(signal.SIGINT)

    def on_epoch_begin(self, epoch, logs=None):
        self.current_epoch = epoch

    def _maybe_signal(self, point):
        if point == self.point and self.current_epoch == self.epoch:
            self.epoch = None  # once
            signal.raise_signal(signal.SIGINT)

    def on_test_batch_end(self, batch, logs=None):
        self._maybe_signal("test pass")

    def on_train_batch_end(self, batch, logs=None):
        self._maybe_signal("mid-epoch")


def test_signal_during_the_test_pass_keeps_the_epoch_it_follows(capsys):
    fit, restored = small_fit(5, [SignalAt("test pass", epoch=1)])
    assert fit.interrupted and fit.epochs_completed == 2  # the second epoch was fully trained
    assert len(fit.history["loss"]) == len(fit.history["epoch_seconds"]) == 2  # and nothing after it ran
    assert fit.partial_steps == 0 and fit.stopped_where() == "after epoch 2"
    assert restored  # the handler in force before training is back


def test_signal_mid_epoch_drops_only_that_epoch(capsys):
    fit, restored = small_fit(5, [SignalAt("mid-epoch", epoch=1)])
    assert fit.interrupted and fit.epochs_completed == 1
    assert len(fit.history["loss"]) == len(fit.history["epoch_seconds"]) == 1  # the cut epoch is not kept
    assert 0 < fit.partial_steps < fit.steps_per_epoch == 32  # how far it got in the cut epoch
    assert fit.stopped_where() == f"in epoch 2 after {fit.partial_steps} of 32 steps"
    assert restored


def test_signal_before_training_starts_is_not_lost(capsys):
    fit, restored = small_fit(5, [SignalAt("before training")])
    assert fit.interrupted and fit.epochs_completed == 0 and fit.history["loss"] == []
    assert restored


def test_outputs_get_the_usual_file_mode(tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(["sh", "-c", f'umask 027 && exec "{sys.executable}" "{SCRIPT}" "$@"', "sh", *SMALL,
                             "--limit-train", "300", "--epochs", "1", "--output-dir", str(out)],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert set(modes) == {"model.keras", "metrics.json", "confusion_matrix.png", "training_curves.png",
                          "misclassified.png", "filters.png"}
    assert set(modes.values()) == {0o640}, modes  # as a plain write under that umask makes them


def seeded_run(tmp_path, name, seed, *flags):
    result = run_main("--limit-train", "640", "--limit-test", "200", "--batch-size", "32", "--epochs", "2",
                      "--precision", "float32", "--seed", seed, *flags, "--output-dir", tmp_path / name)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    metrics["history"].pop("epoch_seconds")
    return {key: metrics[key] for key in ("test_accuracy", "test_loss", "history", "confusion_matrix")}


def test_same_seed_same_numbers(tmp_path):
    """With --augment, so that the random transforms are fixed by the seed too."""
    first, again, other = (seeded_run(tmp_path, name, seed, "--augment")
                           for name, seed in [("a", 7), ("b", 7), ("c", 8)])
    assert first == again
    assert first["history"]["loss"] != other["history"]["loss"]  # the seed is what fixed them


@pytest.mark.parametrize("seed", ["-1", "4294967296", "seven"])
def test_seed_out_of_range_is_refused(tmp_path, seed):
    result = run_main("--seed", seed, "--output-dir", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--seed" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_augmentation_turns_counter_clockwise_like_numpy_rot90():
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 3:10, 5:8] = 1  # an asymmetric mark: any other turn or a flip would not match
    image[0, 20, 3:25] = 0.5
    quarter, one, zero = np.array([np.pi / 2], np.float32), np.ones(1, np.float32), np.zeros(1, np.float32)
    for transform, expected in [(augment.affine_transforms(quarter, one, zero, zero), np.rot90(image[0, :, :, 0])),
                                (augment.affine_transforms(zero, one, zero + 3, zero + 2),
                                 np.roll(image[0, :, :, 0], (2, 3), axis=(0, 1)))]:
        moved = keras.ops.image.affine_transform(image, transform, interpolation="nearest", fill_mode="constant")
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(moved)[0, :, :, 0], expected)


def test_augmentation_only_in_training():
    layer = augment.RandomAffine(seed=1)
    x_train, _, _, _, _ = bundled_mnist()
    images = data.preprocess(x_train[:64])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    moved = keras.ops.convert_to_numpy(layer(images, training=True))
    changed = np.abs(moved - images).reshape(64, -1).max(axis=1) > 0.1
    assert changed.all()  # every image gets its own transform
    assert abs(moved.sum() / images.sum() - 1) < 0.15  # turned, zoomed and shifted, not lost off the frame
