"""The program is Keras alone: it trains and predicts on JAX in a process where TensorFlow cannot be imported."""
import importlib.util
import json
import os
import re

import pytest
from conftest import QUICK, bundled_mnist, run_cli
from PIL import Image

needs_jax = pytest.mark.skipif(importlib.util.find_spec("jax") is None and os.environ.get("CI") != "true",
                               reason="JAX is not installed (pip install jax); CI installs it")


@needs_jax
def test_jax_backend_without_tensorflow(tmp_path):
    blocked = tmp_path / "blocked" / "tensorflow"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("TensorFlow is blocked: the program must not need it")\n')
    env = {"KERAS_BACKEND": "jax", "PYTHONPATH": str(blocked.parent)}
    out = tmp_path / "out"
    # 2,000 augmented images, 2 epochs: 0.92 to 0.94 of the test images read right (seeds 1 to 3)
    result = run_cli("--limit-train", "2000", "--limit-test", "500", "--epochs", "2", "--batch-size", "32",
                     "--augment", "--output-dir", out, env=env)
    assert result.returncode == 0, result.stderr
    assert "Backend: jax, device: CPU" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["backend"] == "jax" and metrics["test_accuracy"] > 0.85

    _, _, x_test, y_test, _ = bundled_mnist()
    for i in range(3):
        Image.fromarray(255 - x_test[i]).resize((140, 140)).save(tmp_path / f"digit{i}.png")  # dark on light
    result = run_cli("--predict", *(tmp_path / f"digit{i}.png" for i in range(3)), "--output-dir", out, env=env)
    assert result.returncode == 0, result.stderr
    predicted = [int(m.group(1)) for m in re.finditer(r"^.+digit\d\.png: (\d) ", result.stdout, re.MULTILINE)]
    assert predicted == y_test[:3].tolist()
    assert (out / "predictions.png").is_file()

    result = run_cli(*QUICK, "--tensorboard", "--output-dir", tmp_path / "tb", env=env)
    assert result.returncode == 2 and "Epoch 1/" not in result.stdout
    assert result.stderr.strip() == ("error: --tensorboard: TensorBoard logs are written with TensorFlow and "
                                     "TensorBoard, whatever the backend: pip install tensorflow tensorboard, "
                                     "or drop --tensorboard")
