"""Experiments through the real command line: other network shapes, the residual network, TensorBoard logs."""
import json
import re

import numpy as np
import pytest
from conftest import bundled_mnist, refusal, run_main
from PIL import Image

from digits import networks

# Enough for the residual network to read >0.9 of the test images (0.94 to 0.95, seeds 1 to 4) in
# two epochs; float32, without the seconds of `auto`'s timing (tested elsewhere).
RESNET_QUICK = ["--limit-train", "2000", "--limit-test", "500", "--epochs", "2", "--batch-size", "32",
                "--precision", "float32"]


def test_resnet_quick_run_saves_a_model_that_predict_reads(tmp_path):
    out = tmp_path / "out"
    result = run_main(*RESNET_QUICK, "--architecture", "resnet", "--tensorboard", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    config = metrics["config"]
    assert config["architecture"] == "resnet" and config["filters"] is None and config["dense_units"] is None
    assert config["parameters"] == networks.build_resnet().count_params()
    assert f"Total params: {config['parameters']:,}" in result.stdout
    assert metrics["test_accuracy"] > 0.8

    _, _, x_test, y_test, _ = bundled_mnist()
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(255 - x_test[i]).resize((112, 112)).save(paths[-1])
    result = run_main("--predict", *paths, "--output-dir", out)
    assert result.returncode == 0, result.stderr
    predicted = [int(m.group(1)) for m in re.finditer(r"digit\d\.png: (\d) ", result.stdout)]
    assert len(predicted) == 5 and np.mean(np.array(predicted) == y_test[:5]) >= 0.8

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    for split, tags in [("train", {"epoch_loss", "epoch_accuracy", "epoch_learning_rate"}),
                        ("validation", {"epoch_loss", "epoch_accuracy"})]:
        events = EventAccumulator(str(out / "logs" / split))
        events.Reload()
        assert tags <= set(events.Tags()["tensors"]), events.Tags()
        assert [event.step for event in events.Tensors("epoch_loss")] == [0, 1]


def test_a_wider_cnn_without_hidden_layer(tmp_path):
    out = tmp_path / "out"
    small = ["--limit-train", "500", "--limit-test", "200", "--epochs", "1", "--precision", "float32"]  # its shape only
    result = run_main(*small, "--filters", "16", "32", "64", "--dense-units", "0", "--learning-rate", "0.002",
                      "--output-dir", out)
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "metrics.json").read_text())["config"]
    # 3x3x1x16+16, 3x3x16x32+32, 3x3x32x64+64 (28 -> 13 -> 5 -> 1 pixels), then 64x10+10
    assert config["parameters"] == 160 + 4640 + 18496 + 650
    assert (config["filters"], config["dense_units"], config["learning_rate"]) == ([16, 32, 64], 0, 0.002)
    assert "Total params: 23,946" in result.stdout


def test_defaults_are_recorded(trained):
    _, _, metrics = trained
    config = metrics["config"]
    assert (config["architecture"], config["filters"], config["dense_units"]) == ("cnn", [32, 64], 100)
    assert config["learning_rate"] == 0.003 and config["lr_schedule"] == "cosine"


@pytest.mark.parametrize("flags,words", [
    (["--filters", "8", "16", "32", "64"], ["4 convolution blocks", "at most 3"]),
    (["--filters", "0"], ["--filters", "at least 1"]),
    (["--dense-units", "-3"], ["--dense-units"]),
    (["--architecture", "resnet", "--filters", "8"], ["resnet has a fixed design"]),
    (["--learning-rate", "0"], ["--learning-rate", "above 0"]),
    (["--architecture", "vgg"], ["--architecture", "invalid choice"]),
])
def test_impossible_settings_are_refused_before_training(tmp_path, flags, words):
    result = run_main(*flags, "--output-dir", tmp_path / "out")
    message = refusal(result)
    for word in words:
        assert word in message, message
    assert "Epoch 1/" not in result.stdout and "Data:" not in result.stdout and not (tmp_path / "out").exists()
