"""What a run's outputs become: written all or none, published together, an earlier finished run kept in
previous/, and staging folders of killed runs cleaned up (never a running one's)."""
import contextlib
import hashlib
import io
import json
import os
import resource
import shutil
import signal
import subprocess

import pytest

import handwritten_digit_classification as program
from digits import outputs

OUTPUTS = ["model.keras", "confusion_matrix.png", "training_curves.png", "misclassified.png", "filters.png",
           "metrics.json"]
TINY = ["--limit-train", "500", "--limit-test", "200", "--epochs", "1", "--batch-size", "64",
        "--precision", "float32"]  # a run of a few seconds in this process


def snapshot(folder):
    """Every file and folder under `folder`: {relative path: the SHA-256 of its bytes (None for a folder)}."""
    return {str(p.relative_to(folder)): None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


def earlier_run(trained, out):
    """A copy of conftest's `trained` run's outputs in `out`: a finished run, as a user's folder holds it."""
    out.mkdir(parents=True)
    for name in OUTPUTS:
        shutil.copy2(trained[0] / name, out / name)
    return snapshot(out)


@contextlib.contextmanager
def file_size_limit(size):
    """Within the block, a write past `size` bytes fails with EFBIG, "File too large", as writes fail on a
    full disk (SIGXFSZ, which would kill the process, is ignored); afterwards the limit is what it was."""
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, limits[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


# --- Writing: all or none ------------------------------------------------------------------------------

def test_the_first_output_that_fails_stops_the_writing(tmp_path):
    def broken(path):
        path.write_text("half")
        raise RuntimeError("the picture could not be drawn")

    staging = tmp_path / "staging"
    staging.mkdir()
    written = []
    with pytest.raises(outputs.NotSaved, match=r"^could not write b\.png \(RuntimeError: the picture could not "
                                               r"be drawn\): nothing was saved"):
        outputs.write_outputs([("a.json", lambda p: written.append(outputs.write_json({"a": 1}, p))),
                               ("b.png", broken), ("c.json", lambda p: written.append("c"))], staging)
    assert written == [None]  # c.json was not even tried


def test_a_folder_in_a_files_place_publishes_nothing(tmp_path):
    staging, out = tmp_path / "out" / ".staging", tmp_path / "out"
    staging.mkdir(parents=True)
    (out / "a.json").write_text("earlier a")
    (out / "c.json").mkdir()  # a folder in the file's place: that one cannot be published
    names = outputs.write_outputs([(name, lambda p: p.write_text("new")) for name in ("a.json", "c.json")], staging)
    with pytest.raises(outputs.NotSaved, match=r"could not write .*c\.json \(Is a directory\): nothing was saved"):
        outputs.publish(staging, out, names)
    assert (out / "a.json").read_text() == "earlier a" and (out / "c.json").is_dir()  # as they were


def test_the_staging_folder_goes_whatever_happens(tmp_path):
    kept, fresh = tmp_path / "kept", tmp_path / "fresh" / "out"
    kept.mkdir()
    (kept / "metrics.json").write_text("previous run")
    for out in (kept, fresh):
        try:
            with outputs.staging_folder(out) as staging:
                (staging / "model.keras").write_text("half")
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
    assert [p.name for p in kept.iterdir()] == ["metrics.json"]  # as it was
    assert not (tmp_path / "fresh").exists()  # the folders made for the run go with it


def test_a_run_that_cannot_write_an_output_publishes_nothing_and_removes_nothing(trained, tmp_path, capsys):
    """As on a full disk: model.keras (about 700 KB) cannot be written past 256 KB."""
    out = tmp_path / "out"
    before = earlier_run(trained, out)
    with file_size_limit(256 * 1024):
        status = program.main([*TINY, "--output-dir", str(out)])
    printed = capsys.readouterr()
    assert status == 1, printed.err
    assert snapshot(out) == before  # the earlier run as it was; no staging folder, no half-written file
    told = [line for line in printed.err.splitlines() if "could not" in line]
    assert told == [f"error: could not write model.keras (File too large): nothing was saved, and {out}{os.sep} is "
                    "as it was"], printed.err
    assert "Saved:" not in printed.out and "Removed" not in printed.out


# --- A finished run keeps the one it replaces; staging folders of killed runs go ----------------------------

@pytest.fixture(scope="module")
def replacing_run(trained, tmp_path_factory):
    """A tiny run (main() in this process) into a folder holding conftest's `trained` run, an older previous/,
    an interrupted/, a --predict picture, and the staging folders of a killed run and of a running one:
    (out, the earlier run's files, exit status, stdout)."""
    out = tmp_path_factory.mktemp("replacing") / "out"
    earlier = earlier_run(trained, out)
    for name in ["previous/metrics.json", "interrupted/metrics.json", "predictions.png"]:
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text(f"earlier {name}\n")
    killed = subprocess.Popen(["true"])
    killed.wait()  # its process ID is free now: no process runs under it
    running = subprocess.Popen(["sleep", "600"])
    for process in (killed, running):
        (out / f".staging-{process.pid}-x1y2z3").mkdir()
        (out / f".staging-{process.pid}-x1y2z3" / "model.keras").write_text("half-written\n")
    try:
        with contextlib.redirect_stdout(io.StringIO()) as stdout:
            status = program.main([*TINY, "--output-dir", str(out)])
    finally:
        running.kill()
        running.wait()
    return out, earlier, status, stdout.getvalue(), (killed.pid, running.pid)


def test_a_finished_run_keeps_the_run_it_replaces_in_previous(replacing_run):
    out, earlier, status, stdout, _ = replacing_run
    assert status == 0, stdout
    assert snapshot(out / "previous") == earlier  # exactly the earlier run: not the older previous/, nor interrupted/
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["limit_train"] == 500  # this run's outputs in its place
    _, running = replacing_run[4]
    assert sorted(os.listdir(out)) == sorted([*OUTPUTS, "previous", "interrupted", "predictions.png",
                                              f".staging-{running}-x1y2z3"])  # the running run's staging folder
    assert (out / "interrupted" / "metrics.json").read_text() == "earlier interrupted/metrics.json\n"
    assert (out / "predictions.png").read_text() == "earlier predictions.png\n"
    before = json.loads((out / "previous" / "metrics.json").read_text())["test_accuracy"]
    assert (f"Replaced the run in {out}{os.sep} (test accuracy {before:.4f}) with this one (test accuracy "
            f"{metrics['test_accuracy']:.4f}); the replaced run is kept in {out / 'previous'}{os.sep}") in stdout


def test_a_run_removes_the_staging_folders_of_killed_runs_only(replacing_run):
    out, _, _, _, (killed, running) = replacing_run
    assert not (out / f".staging-{killed}-x1y2z3").exists()
    assert (out / f".staging-{running}-x1y2z3" / "model.keras").read_text() == "half-written\n"
