import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "handwritten_digit_classification.py"
sys.path.insert(0, str(ROOT))

# A slice of the bundled MNIST that trains to >0.9 test accuracy in a few seconds.
QUICK = ["--limit-train", "3000", "--limit-test", "1000", "--epochs", "2", "--batch-size", "32"]


def run_cli(*args, script=SCRIPT, timeout=300, env=None):
    """Run the program as a user would, in its own process."""
    env = {**(env or os.environ), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


def refusal(result):
    """The message of a run refused as bad input: exit status 2, one line, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    return message


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One quick real training run, shared by the tests that read its outputs or use its model."""
    out = tmp_path_factory.mktemp("trained")
    result = run_cli(*QUICK, "--seed", "0", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    return out, result, json.loads((out / "metrics.json").read_text())
