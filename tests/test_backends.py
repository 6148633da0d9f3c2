"""The program is Keras alone: it trains and predicts on JAX in a process where TensorFlow cannot be imported."""
import importlib.util
import json
import os
import re

import pytest
from conftest import QUICK, bundled_mnist, make_idx_folder, refusal, run_cli
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


@pytest.mark.parametrize("mode", ["train", "predict"])
@pytest.mark.parametrize("backend,words", [
    ("jax", ["error: KERAS_BACKEND=jax, but Keras cannot load it (ImportError: jax is blocked",
             "pip install jax, or set KERAS_BACKEND to another of tensorflow, jax or torch"]),
    ("pytorch", ["error: KERAS_BACKEND=pytorch is not a Keras backend: set KERAS_BACKEND to tensorflow, jax or torch"]),
])
def test_a_backend_keras_cannot_load_is_one_line(tmp_path, mode, backend, words):
    """KERAS_BACKEND=jax where JAX cannot be imported, or a typo: one line that says what to install or
    set, told as the environment's problem, not --model's."""
    blocked = tmp_path / "blocked" / "jax"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text('raise ImportError("jax is blocked: as if it were not installed")\n')
    if mode == "train":
        make_idx_folder(tmp_path / "d")
        args = ["--data", tmp_path / "d", "--epochs", "1"]
    else:
        Image.new("L", (28, 28)).save(tmp_path / "x.png")
        (tmp_path / "model.keras").write_bytes(b"PK\x03\x04 a model's first bytes")
        args = ["--predict", tmp_path / "x.png", "--model", tmp_path / "model.keras"]
    result = run_cli(*args, "--output-dir", tmp_path / "out",
                     env={"KERAS_BACKEND": backend, "PYTHONPATH": str(blocked.parent)})
    message = refusal(result)
    for word in words:
        assert word in message, message
