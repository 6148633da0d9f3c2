"""Signals during and after training, outputs that appear together, repeatable seeds, file modes."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SCRIPT, run_cli

import handwritten_digit_classification as hdc

SMALL = ["--limit-train", "2000", "--limit-test", "500", "--batch-size", "32"]


def start(out, *args, epochs=40):
    return subprocess.Popen([sys.executable, str(SCRIPT), *SMALL, "--epochs", str(epochs), "--output-dir", str(out),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


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


def test_sigint_after_first_epoch_saves_what_was_trained(tmp_path):
    out = tmp_path / "out"
    process = start(out)
    read_until(process, "Epoch 2/40")
    process.send_signal(signal.SIGINT)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "Traceback" not in output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] is True
    assert 1 <= metrics["epochs_completed"] < 40
    assert len(metrics["history"]["loss"]) == len(metrics["history"]["epoch_seconds"]) == metrics["epochs_completed"]
    assert f"Interrupted after {metrics['epochs_completed']} of 40 epochs" in output
    model = hdc.keras.models.load_model(out / "model.keras")
    assert model.name == "mnist_cnn" and model.inputs[0].dtype == "float32"  # the network, not the training wrapper
    assert f"Test accuracy: {metrics['test_accuracy']:.4f}" in output
    assert (out / "confusion_matrix.png").stat().st_size > 10_000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_second_signal_stops_at_once_and_keeps_the_previous_run(tmp_path, sig):
    out = tmp_path / "out"
    previous_run(out)
    process = start(out)
    read_until(process, "Epoch 2/40")
    process.send_signal(sig)
    read_until(process, "Stopping after this step")
    process.send_signal(sig)
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
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    maps = f"/proc/{process.pid}/maps"
    for _ in range(600):  # until the backend's library is being loaded
        if process.poll() is not None or "libtensorflow" in Path(maps).read_text():
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip() == "Interrupted while loading Keras; nothing was done."
    assert not (tmp_path / "out").exists()


def small_fit(epochs, callbacks=()):
    """A real fit of the real network on 1,024 MNIST images (two calls into the backend an epoch),
    watched on 2,000 test images."""
    (x_train, y_train, x_test, y_test), _ = hdc.load_mnist("bundled")
    trainer = hdc.make_trainer(hdc.build_model(), augment=False, seed=None)
    hdc.compile_trainer(trainer, "adam")
    with hdc.GracefulStop(steps_per_epoch=32) as stop:
        inside = signal.getsignal(signal.SIGINT)
        history = trainer.fit(x_train[:1024, ..., None], y_train[:1024], batch_size=32, epochs=epochs,
                              validation_data=(x_test[:2000, ..., None], y_test[:2000]), validation_batch_size=100,
                              callbacks=[stop, *callbacks], verbose=0)
    return stop, history, inside


class SignalAt(hdc.keras.callbacks.Callback):
    """Sends this process a real SIGINT the first time training reaches a point in a given epoch."""

    def __init__(self, point, epoch):
        super().__init__()
        self.point, self.epoch, self.current_epoch = point, epoch, -1

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
    before = signal.getsignal(signal.SIGINT)
    stop, history, inside = small_fit(5, [SignalAt("test pass", epoch=1)])
    assert stop.interrupted and stop.epochs_completed == 2  # the second epoch was fully trained
    assert len(history.history["loss"]) == 2  # and nothing after it ran
    assert inside != before and signal.getsignal(signal.SIGINT) is before  # restored after training


def test_signal_mid_epoch_drops_only_that_epoch(capsys):
    stop, history, _ = small_fit(5, [SignalAt("mid-epoch", epoch=1)])
    assert stop.interrupted and stop.epochs_completed == 1 and len(stop.epoch_seconds) == 1
    assert len(history.history["loss"]) == 2  # Keras logs the cut epoch; it is not counted


def test_signal_before_training_starts_is_not_lost(capsys):
    (x_train, y_train, _, _), _ = hdc.load_mnist("bundled")
    trainer = hdc.make_trainer(hdc.build_model(), augment=False, seed=None)
    hdc.compile_trainer(trainer, "adam")
    with hdc.GracefulStop(steps_per_epoch=32) as stop:
        signal.raise_signal(signal.SIGINT)  # before fit begins
        history = trainer.fit(x_train[:1024, ..., None], y_train[:1024], batch_size=32, epochs=5, callbacks=[stop],
                              verbose=0)
    assert stop.interrupted and stop.epochs_completed == 0 and len(history.history["loss"]) == 1


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
    result = run_cli(*SMALL, "--epochs", "2", "--precision", "float32", "--seed", seed, *flags,
                     "--output-dir", tmp_path / name)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    metrics["history"].pop("epoch_seconds")
    return {key: metrics[key] for key in ("test_accuracy", "test_loss", "history", "confusion_matrix")}


@pytest.mark.parametrize("flags", [[], ["--augment"]], ids=["plain", "augment"])
def test_same_seed_same_numbers(tmp_path, flags):
    first, again, other = (seeded_run(tmp_path, name, seed, *flags) for name, seed in [("a", 7), ("b", 7), ("c", 8)])
    assert first == again
    assert first["history"]["loss"] != other["history"]["loss"]  # the seed is what fixed them


@pytest.mark.parametrize("seed", ["-1", "4294967296", "seven"])
def test_seed_out_of_range_is_refused(tmp_path, seed):
    result = run_cli("--seed", seed, "--output-dir", tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--seed" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_augmentation_turns_counter_clockwise_like_numpy_rot90():
    image = np.zeros((1, 28, 28, 1), np.float32)
    image[0, 3:10, 5:8] = 1  # an asymmetric mark: any other turn or a flip would not match
    image[0, 20, 3:25] = 0.5
    quarter, one, zero = np.array([np.pi / 2], np.float32), np.ones(1, np.float32), np.zeros(1, np.float32)
    for transform, expected in [(hdc.affine_transforms(quarter, one, zero, zero), np.rot90(image[0, :, :, 0])),
                                (hdc.affine_transforms(zero, one, zero + 3, zero + 2),
                                 np.roll(image[0, :, :, 0], (2, 3), axis=(0, 1)))]:
        moved = hdc.keras.ops.image.affine_transform(image, transform, interpolation="nearest", fill_mode="constant")
        np.testing.assert_array_equal(hdc.keras.ops.convert_to_numpy(moved)[0, :, :, 0], expected)


def test_augmentation_only_in_training():
    layer = hdc.RandomAffine(seed=1)
    (x_train, _, _, _), _ = hdc.load_mnist("bundled")
    images = hdc.preprocess(x_train[:64])
    np.testing.assert_array_equal(hdc.keras.ops.convert_to_numpy(layer(images, training=False)), images)
    moved = hdc.keras.ops.convert_to_numpy(layer(images, training=True))
    changed = np.abs(moved - images).reshape(64, -1).max(axis=1) > 0.1
    assert changed.all()  # every image gets its own transform
    assert abs(moved.sum() / images.sum() - 1) < 0.15  # turned, zoomed and shifted, not lost off the frame
