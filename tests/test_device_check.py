"""benchmarks/device_check.py, the one command for a GPU machine, works before a GPU is ever lent: its
quick mode, on JAX on the CPU, through the real scripts, leaves a table row per step with sane figures."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT

DEVICE_CHECK = ROOT / "benchmarks" / "device_check.py"
needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None and os.environ.get("CI") != "true",
                               reason="JAX is not installed (pip install jax); CI installs it")


def run_device_check(*args, timeout=600):
    return subprocess.run([sys.executable, str(DEVICE_CHECK), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def table_rows(text):
    """{step: cells} from the markdown table device_check writes."""
    rows = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith(("| step ", "|---")):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = dict(zip(["backend", "device", "precision", "epochs", "first", "steady", "wall",
                                       "accuracy", "gpu_memory", "outcome"], cells[1:]))
    return rows


@needs_jax
def test_quick_device_check_writes_a_row_per_step_with_sane_figures(tmp_path):
    table = tmp_path / "device.md"
    result = run_device_check("--quick", "--steps", "probe,jax-float32,pytorch-loop", "--work-dir", tmp_path / "runs",
                              "--output", table, "--wheels", tmp_path / "no-wheels")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert "nothing to install" in result.stdout  # Keras imports here: no wheels needed, no network
    assert "[1/3] probe: jax, 1 epoch (limit " in result.stdout
    assert "  | Data: bundled" in result.stdout and "  | Test accuracy: " in result.stdout  # the run's own output
    text = table.read_text()
    assert text.startswith("Command: `python benchmarks/device_check.py --quick --steps probe,jax-float32,pytorch-loop")
    assert "Machine: " in text and "Quick mode: 1,000 training and 500 test images" in text
    rows = table_rows(text)
    assert list(rows) == ["probe: jax, 1 epoch", "jax, --precision float32", "pytorch loop"]

    probe, float32 = rows["probe: jax, 1 epoch"], rows["jax, --precision float32"]
    for row, epochs in ((probe, "1/1"), (float32, "2/2")):
        assert row["outcome"] == "ok" and row["backend"] == "jax" and row["epochs"] == epochs
        assert row["device"].startswith(("CPU (", "GPU ("))
        assert float(row["wall"]) > float(row["first"]) > 0
        assert 0.3 < float(row["accuracy"]) <= 1  # 1,000 images, 1-2 epochs: well above chance (0.1)
        assert row["gpu_memory"] == "—" or float(row["gpu_memory"].replace(",", "")) >= 0
    assert probe["precision"] in ("float32", "bfloat16") and probe["steady"] == "—"  # one epoch: no steady figure
    assert float32["precision"] == "float32" and float(float32["steady"]) > 0

    loop = rows["pytorch loop"]
    if importlib.util.find_spec("torch") is None:
        assert loop["outcome"] == "skipped: PyTorch is not installed" and loop["accuracy"] == "—"
    else:
        assert loop["outcome"] == "ok" and loop["backend"] == "pytorch loop" and loop["precision"] == "float32"
        assert loop["epochs"] == "2/2" and 0.3 < float(loop["accuracy"]) <= 1 and float(loop["steady"]) > 0


def test_an_unknown_step_is_refused_with_the_choices():
    result = run_device_check("--steps", "probe,gpu", timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        "error: --steps: no step gpu: choose from probe, jax, pytorch-loop, jax-float32, torch, jax-resnet")


needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="PyTorch is not installed: the baseline is checked by hand, not in CI")


@needs_torch
def test_the_pytorch_baseline_starts_each_run_afresh(tmp_path):
    """Without --seed, each run is a fresh draw, as its help says and as the benchmark's runs of each assume
    (the first batch's loss depends only on the initial weights and which images come first)."""
    first_losses = []
    for run in range(2):
        result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "pytorch_baseline.py"), "--device", "cpu",
                                 "--limit-train", "256", "--limit-test", "100", "--epochs", "1", "--log-interval", "1",
                                 "--output-dir", str(tmp_path / str(run))],
                                capture_output=True, text=True, timeout=300, check=False)
        assert result.returncode == 0, result.stderr
        assert "Test accuracy: " in result.stdout and "End to end: " in result.stdout
        metrics = json.loads((tmp_path / str(run) / "metrics.json").read_text())
        assert metrics["config"]["parameters"] == 179_926  # the program's default network
        first_losses.append(re.search(r"Train Epoch: 1 \[0/256 \(0%\)\]\tLoss: (\S+)", result.stdout).group(1))
    assert first_losses[0] != first_losses[1]
