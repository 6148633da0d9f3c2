"""A training run as the command line gives it: which options it takes, what it prints, which files it
publishes (and which it removes), how it stops on a signal, and the model it saves."""

import json
import re
import zipfile

import numpy as np
import pytest
from conftest import refusal, run_cli

TINY = ["--limit-train", "1000", "--limit-test", "300", "--epochs", "1", "--batch-size", "64",
        "--precision", "float32"]  # no timing of the precisions: a run of a few seconds


# --- The command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("typo, meant", [(["--epoch", "2"], "--epochs"), (["--batch", "64"], "--batch-size"),
                                         (["--limit-t", "100"], "--limit-test")])
def test_an_abbreviated_option_is_refused_with_the_option_meant(tmp_path, typo, meant):
    message = refusal(run_cli(*typo, "--output-dir", tmp_path / "out"))
    assert "unrecognized arguments" in message and meant in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("modes", [["--draw", "--predict", "x.png"], ["--predict", "x.png", "--draw"]])
def test_predict_and_draw_together_are_refused(tmp_path, modes):
    message = refusal(run_cli(*modes, "--output-dir", tmp_path))
    assert "--predict and --draw" in message


# --- What a run prints and the model it saves ------------------------------------------------------------

def quick_run(out, *args):
    """A real run of a few seconds into `out`: (result, metrics)."""
    result = run_cli(*TINY, "--seed", "0", "--output-dir", out, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory):
    """One tiny run of the default network, watching the test images."""
    return quick_run(tmp_path_factory.mktemp("cnn"))


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    """One tiny run of the residual network: 16 steps."""
    return quick_run(tmp_path_factory.mktemp("resnet"), "--architecture", "resnet")


def summary_names(stdout):
    """The layer names in the printed model summary ('name (Type)' in its first column)."""
    return re.findall(r"^│ (\w+)(?: \(\w+\))? +│", stdout, re.MULTILINE)  # a long name's type wraps


def test_a_short_resnet_run_saves_a_model_that_reads_what_it_learned(resnet_run):
    """Batch normalisation's statistics are settled before the model is evaluated and saved."""
    _, metrics = resnet_run
    predicted = np.array(metrics["confusion_matrix"]).sum(axis=0)
    assert np.count_nonzero(predicted) >= 8, predicted  # not every digit read as one class
    assert metrics["test_accuracy"] > 0.4, metrics["test_accuracy"]  # 0.13 (all "1") before
    # The curves watched the test images with the statistics the saved model has.
    assert metrics["history"]["val_accuracy"][-1] == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_the_printed_summary_names_each_layer_for_its_place(cnn_run, resnet_run):
    assert summary_names(cnn_run[0].stdout) == ["block1_conv", "block1_pool", "block2_conv", "block2_pool",
                                                "flatten", "hidden", "probabilities"]
    names = summary_names(resnet_run[0].stdout)
    assert names[:2] == ["image", "stem_conv"] and names[-2:] == ["pool", "probabilities"], names
    assert not [name for name in names if re.search(r"_\d+$", name) and not name.startswith("stage")], names


def test_the_console_names_the_watched_set_as_the_curves_do(cnn_run, tmp_path):
    epoch_line = next(line for line in cnn_run[0].stdout.splitlines() if "- loss:" in line)
    assert "test_accuracy:" in epoch_line and "test_loss:" in epoch_line and "val_" not in epoch_line
    assert cnn_run[1]["curves_watch"] == "test"

    result, metrics = quick_run(tmp_path / "out", "--validation-split", "0.2")
    epoch_line = next(line for line in result.stdout.splitlines() if "- loss:" in line)
    assert "val_accuracy:" in epoch_line and "test_" not in epoch_line
    assert metrics["curves_watch"] == "validation"


def test_a_network_trained_in_bfloat16_is_saved_in_float32(tmp_path):
    """--predict and --draw then compute in float32 on any machine; the run still trained in bfloat16."""
    _, metrics = quick_run(tmp_path, "--precision", "bfloat16")
    assert metrics["config"]["precision"] == "bfloat16"
    config = json.loads(zipfile.ZipFile(tmp_path / "model.keras").read("config.json"))
    policies = set(dtype_policies(config))
    assert policies == {"float32"}, policies  # {'float32', 'mixed_bfloat16'} before


def dtype_policies(config):
    """Every layer's dtype policy in a saved model's config.json."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy":
            yield config["config"]["name"]
        for value in config.values():
            yield from dtype_policies(value)
    elif isinstance(config, list):
        for value in config:
            yield from dtype_policies(value)
