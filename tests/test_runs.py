"""A training run as the command line gives it: which options it takes, what it prints, which files it
publishes (and which it removes), how it stops on a signal, and the model it saves."""

import importlib.util
import json
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile

import numpy as np
import pytest
from conftest import SCRIPT, refusal, run_cli, run_main

TINY = ["--limit-train", "1000", "--limit-test", "300", "--epochs", "1", "--batch-size", "64",
        "--precision", "float32"]  # no timing of the precisions: a run of a few seconds


# --- The command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("typo, meant", [(["--epoch", "2"], "--epochs"), (["--batch", "64"], "--batch-size"),
                                         (["--limit-t", "100"], "--limit-test")])
def test_an_abbreviated_option_is_refused_with_the_option_meant(tmp_path, typo, meant):
    message = refusal(run_main(*typo, "--output-dir", tmp_path / "out"))
    assert "unrecognized arguments" in message and meant in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("modes", [["--draw", "--predict", "x.png"], ["--predict", "x.png", "--draw"]])
def test_predict_and_draw_together_are_refused(tmp_path, modes):
    message = refusal(run_main(*modes, "--output-dir", tmp_path))
    assert "--predict and --draw" in message


# --- What a run prints and the model it saves ------------------------------------------------------------

def quick_run(out, *args):
    """A real run of a few seconds into `out`: (result, metrics)."""
    result = run_main(*TINY, "--seed", "0", "--output-dir", out, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result, json.loads((out / "metrics.json").read_text())


# The default network watching the test images: conftest's `trained` run; in bfloat16 mixed precision
# watching held-out training images: conftest's `non_default_run`.


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    """One tiny run of the residual network, 16 steps, with --tensorboard, into a folder that holds an
    earlier run's outputs and logs: (out, result, metrics)."""
    out = tmp_path_factory.mktemp("resnet") / "out"
    previous_run(out)
    return (out, *quick_run(out, "--architecture", "resnet", "--tensorboard"))


def summary_names(stdout):
    """The layer names in the printed model summary ('name (Type)' in its first column)."""
    return re.findall(r"^│ (\w+)(?: \(\w+\))? +│", stdout, re.MULTILINE)  # a long name's type wraps


def test_a_short_resnet_run_saves_a_model_that_reads_what_it_learned(resnet_run):
    """Batch normalisation's statistics are settled before the model is evaluated and saved."""
    _, _, metrics = resnet_run
    predicted = np.array(metrics["confusion_matrix"]).sum(axis=0)
    assert np.count_nonzero(predicted) >= 8, predicted  # not every digit read as one class
    assert metrics["test_accuracy"] > 0.4, metrics["test_accuracy"]  # 0.13 (all "1") before
    # The curves watched the test images with the statistics the saved model has.
    assert metrics["history"]["test_accuracy"][-1] == pytest.approx(metrics["test_accuracy"], abs=1e-6)


def test_the_printed_summary_names_each_layer_for_its_place(trained, resnet_run):
    assert summary_names(trained[1].stdout) == ["block1_conv", "block1_pool", "block2_conv", "block2_pool",
                                                "flatten", "hidden", "probabilities"]
    names = summary_names(resnet_run[1].stdout)
    assert names[:2] == ["image", "stem_conv"] and names[-2:] == ["pool", "probabilities"], names
    assert not [name for name in names if re.search(r"_\d+$", name) and not name.startswith("stage")], names


def test_the_printed_summary_is_whole_in_a_log(trained):
    """Printed to a pipe, the summary is 100 columns wide, its Param # column there (rich cut it at 80)."""
    table = [line for line in trained[1].stdout.splitlines() if line[:1] in "┏┃┡│├└"]
    assert "Param #" in table[1] and table[0].endswith("┓") and table[-1].endswith("┘"), "\n".join(table)
    assert {len(line) for line in table} == {100}


def test_a_seeded_run_prints_no_log_lines_of_tensorflow(trained):
    """--seed turns on TensorFlow's deterministic ops, which logged two 900-character "E0000 ...
    use_unbounded_threadpool" lines on stderr: C++ log lines of any level are silenced."""
    _, result, metrics = trained
    assert metrics["config"]["seed"] == 0 and metrics["config"]["backend"] == "tensorflow"
    assert not re.findall(r"^[IWEF]\d{4} .*$", result.stderr, re.MULTILINE), result.stderr


def test_the_console_names_the_watched_set_as_the_curves_do(trained, non_default_run):
    _, result, metrics = trained
    epoch_line = next(line for line in result.stdout.splitlines() if "- loss:" in line)
    assert "test_accuracy:" in epoch_line and "test_loss:" in epoch_line and "val_" not in epoch_line
    assert metrics["curves_watch"] == "test"
    assert set(metrics["history"]) == {"loss", "accuracy", "test_loss", "test_accuracy", "learning_rate",
                                       "epoch_seconds"}  # metrics.json names them as the console does

    _, result, metrics = non_default_run
    epoch_line = next(line for line in result.stdout.splitlines() if "- loss:" in line)
    assert "val_accuracy:" in epoch_line and "test_" not in epoch_line
    assert metrics["curves_watch"] == "validation" and "val_accuracy" in metrics["history"]


def test_a_network_trained_in_bfloat16_is_saved_in_float32(non_default_run):
    """--predict and --draw then compute in float32 on any machine; the run still trained in bfloat16."""
    out, _, metrics = non_default_run
    assert metrics["config"]["precision"] == "bfloat16"
    config = json.loads(zipfile.ZipFile(out / "model.keras").read("config.json"))
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


# --- Which files a run publishes, and how it stops -----------------------------------------------------

OUTPUTS = ["model.keras", "confusion_matrix.png", "training_curves.png", "misclassified.png", "filters.png",
           "metrics.json"]
LONG_EPOCH = ["--limit-train", "20000", "--limit-test", "300", "--epochs", "2", "--batch-size", "32",
              "--precision", "float32"]  # 625 steps an epoch: a signal after "Epoch 1/2" lands in epoch 1


class Running:
    """The program running in its own process, its output read as it comes (stdout and stderr)."""

    def __init__(self, *args, command=(sys.executable, str(SCRIPT))):
        self.process = subprocess.Popen([*command, *map(str, args)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines, self.output = queue.Queue(), []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text, timeout=180):
        """Block until a line with `text` is printed; fail the test (and stop the program) if it is not
        printed within `timeout` seconds or the program ends first."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            if text in line:
                return
        self.process.kill()
        self.process.wait()
        pytest.fail(f"never printed {text!r}:\n{''.join(self.output)}")

    def finish(self, timeout=180):
        """Wait for the program to end: (exit status, everything it printed)."""
        try:
            self.process.wait(timeout)
        finally:
            self.process.kill()
        self.reader.join(10)
        return self.process.returncode, "".join(self.output)


def previous_run(out, logs=True):
    """An earlier run's outputs (and TensorBoard logs), each file saying so: {path: text}."""
    (out / "logs").mkdir(parents=True) if logs else out.mkdir(parents=True)
    files = {out / name: f"previous run's {name}\n" for name in OUTPUTS + (["logs/events.previous"] if logs else [])}
    for path, text in files.items():
        path.write_text(text)
    return files


def listing(folder):
    """Every file and folder under `folder`, relative to it."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_a_stopped_run_is_kept_in_interrupted_and_the_finished_run_stays(tmp_path):
    """Stopped in epoch 1 (no curve to draw), with --tensorboard: what it trained goes to interrupted/ (in
    place of an earlier one), and the finished run's outputs and logs stay as they were."""
    out = tmp_path / "out"
    previous = previous_run(out)
    (out / "interrupted").mkdir()
    (out / "interrupted" / "model.keras").write_text("an earlier stopped run's model.keras\n")
    run = Running(*LONG_EPOCH, "--tensorboard", "--output-dir", out)
    run.wait_for("Epoch 1/2")
    run.process.send_signal(signal.SIGTERM)
    status, output = run.finish()
    assert status == 130, output
    assert all(path.read_bytes() == text.encode() for path, text in previous.items())  # as they were
    stopped = out / "interrupted"
    assert listing(out) == sorted([*map(str, (path.relative_to(out) for path in previous)), "logs", "interrupted",
                                   *(f"interrupted/{name}" for name in listing(stopped))]), listing(out)
    assert sorted(os.listdir(stopped)) == sorted({*OUTPUTS, "logs"} - {"training_curves.png"})
    assert any("tfevents" in name for name in listing(stopped / "logs"))
    metrics = json.loads((stopped / "metrics.json").read_text())
    assert metrics["interrupted"] and metrics["epochs_completed"] == 0
    steps = re.search(r"^Stopped in epoch 1 after (\d+) of 625 steps", output, re.MULTILINE)
    assert steps and 1 <= int(steps[1]) < 625, output  # not "Trained 0 epochs"
    assert "Trained 0 epochs" not in output and "Removed" not in output
    assert f"saved what was trained in {stopped}{os.sep}" in output


def test_tensorboard_keeps_the_earlier_logs_until_the_run_publishes(tmp_path):
    """Two SIGTERMs in epoch 1: nothing new was saved, and the earlier logs are there as they were."""
    out = tmp_path / "out"
    previous = previous_run(out)
    run = Running(*LONG_EPOCH, "--tensorboard", "--output-dir", out)
    run.wait_for("Epoch 1/2")
    run.process.send_signal(signal.SIGTERM)
    run.wait_for("Stopping after this step")
    run.process.send_signal(signal.SIGTERM)
    status, output = run.finish()
    assert status == 130 and "nothing new was saved" in output, output
    assert listing(out) == sorted(OUTPUTS + ["logs", "logs/events.previous"])  # no staging folder left
    assert all(path.read_text() == text for path, text in previous.items())


def test_tensorboard_logs_replace_the_earlier_ones_and_are_listed_as_saved(resnet_run):
    out, result, _ = resnet_run  # run with --tensorboard over an earlier run's outputs and logs
    logs = listing(out / "logs")
    assert "events.previous" not in logs and any("tfevents" in name for name in logs), logs
    saved = next(line for line in result.stdout.splitlines() if line.startswith("Saved: "))
    assert f"{out / 'logs'}{os.sep}" in saved.removeprefix("Saved: ").split(", "), saved
    assert not [name for name in os.listdir(out) if name.startswith(".")]
    # the earlier run, logs included, is kept in previous/; its metrics.json holds no accuracy
    assert (out / "previous" / "logs" / "events.previous").read_text() == "previous run's logs/events.previous\n"
    assert f"Replaced the run in {out}{os.sep} (test accuracy unknown) with this one" in result.stdout


SWALLOWED_SIGTERM = """
import gc, os, runpy, signal, sys, time

# The program, with a SIGTERM that arrives while the garbage collector runs a callback once training
# is over: Python then prints "Exception ignored in ... KeyboardInterrupt" and goes on.
state = {"training": False, "sent": False}

def collecting(phase, info):
    handler = signal.getsignal(signal.SIGTERM)
    if getattr(handler, "__name__", "") == "handle":  # training's own handler: training is under way
        state["training"] = True
    elif state["training"] and not state["sent"] and callable(handler):
        state["sent"] = True
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs here, inside the callback

gc.callbacks.append(collecting)
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(sys.argv[0]))  # as `python SCRIPT` has it
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_a_sigterm_swallowed_after_training_still_stops_the_run(tmp_path):
    """Whatever becomes of the KeyboardInterrupt, the stop is remembered: nothing is published, exit 130."""
    out = tmp_path / "out"
    previous = previous_run(out, logs=False)
    wrapper = tmp_path / "swallowed_sigterm.py"
    wrapper.write_text(SWALLOWED_SIGTERM)
    status, output = Running(SCRIPT, *TINY, "--output-dir", out, command=(sys.executable, str(wrapper))).finish()
    assert "Exception ignored" in output and "KeyboardInterrupt" in output, output  # it was swallowed
    assert status == 130 and "nothing new was saved" in output, output
    assert listing(out) == sorted(OUTPUTS)
    assert all(path.read_text() == text for path, text in previous.items())


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="oneDNN's switch is x86's")
def test_tensorflow_runs_on_onednn_on_every_x86_cpu_unless_the_user_says_otherwise():
    """TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX512-VNNI, AVX512-BF16 or
    AMX; the program asks for them on every x86 CPU (AVX2 laptops), and TF_ENABLE_ONEDNN_OPTS=0 still wins."""
    probe = ("from digits.backend import load_keras; load_keras(); "
             "from tensorflow.python.util import _pywrap_util_port as port; print(port.IsMklEnabled())")
    for setting, enabled in ((None, "True"), ("0", "False")):
        env = {key: value for key, value in os.environ.items() if key != "TF_ENABLE_ONEDNN_OPTS"}
        env.update({"KERAS_BACKEND": "tensorflow", **({"TF_ENABLE_ONEDNN_OPTS": setting} if setting else {})})
        result = subprocess.run([sys.executable, "-c", probe], cwd=SCRIPT.parent, env=env, capture_output=True,
                                text=True, timeout=300, check=False)
        assert result.returncode == 0 and result.stdout.split() == [enabled], (setting, result.stdout, result.stderr)


@pytest.mark.skipif(not all(map(importlib.util.find_spec, ["jax", "tensorflow", "tensorboard"])),
                    reason="needs JAX, and TensorFlow and TensorBoard installed beside it")
def test_a_run_on_jax_keeps_stderr_clean_though_keras_imports_tensorflow(tmp_path):
    result = run_cli(*TINY, "--seed", "0", "--tensorboard", "--output-dir", tmp_path,
                     env={**os.environ, "KERAS_BACKEND": "jax"})
    assert result.returncode == 0, result.stderr
    assert "Backend: jax" in result.stdout and (tmp_path / "logs" / "train").is_dir()
    assert result.stderr == ""  # TensorFlow's "oneDNN custom operations are on" (twice) before: Keras
    # imports TensorFlow to save a .keras file, to seed it with --seed, and to write TensorBoard's logs
