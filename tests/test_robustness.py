"""Interruption keeps what was trained; a second Ctrl-C writes nothing; a seed makes runs repeatable."""
import json
import os
import signal
import subprocess
import sys

import pytest

import handwritten_digit_classification as hdc
from conftest import SCRIPT, run_cli

SMALL = ["--limit-train", "2000", "--limit-test", "500", "--batch-size", "32"]


def start(out, *args):
    return subprocess.Popen([sys.executable, str(SCRIPT), *SMALL, "--epochs", "40", "--output-dir", str(out), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def read_until(process, text):
    lines = []
    for line in process.stdout:
        lines.append(line)
        if text in line:
            return "".join(lines)
    raise AssertionError(f"never printed {text!r}:\n" + "".join(lines))


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
    assert len(metrics["history"]["loss"]) == metrics["epochs_completed"]
    assert f"Interrupted after {metrics['epochs_completed']} of 40 epochs" in output
    model = hdc.keras.models.load_model(out / "model.keras")
    assert model.count_params() == 179_926
    assert f"Test accuracy: {metrics['test_accuracy']:.4f}" in output
    assert (out / "confusion_matrix.png").stat().st_size > 10_000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_second_signal_stops_at_once_and_keeps_the_previous_run(tmp_path, sig):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("previous run\n")
    process = start(out)
    read_until(process, "Epoch 2/40")
    process.send_signal(sig)
    read_until(process, "Stopping within a few batches")
    process.send_signal(sig)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 130, output
    assert "nothing new was saved" in output and "Traceback" not in output
    assert [p.name for p in out.iterdir()] == ["metrics.json"]
    assert (out / "metrics.json").read_text() == "previous run\n"


def test_same_seed_same_numbers(tmp_path):
    runs = []
    for name, seed in [("a", 7), ("b", 7), ("c", 8)]:
        result = run_cli(*SMALL, "--epochs", "2", "--seed", seed, "--output-dir", tmp_path / name)
        assert result.returncode == 0, result.stderr
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        metrics["history"].pop("epoch_seconds")
        runs.append({key: metrics[key] for key in ("test_accuracy", "test_loss", "history", "confusion_matrix")})
    assert runs[0] == runs[1]
    assert runs[0]["history"]["loss"] != runs[2]["history"]["loss"]  # the seed is what fixed them
