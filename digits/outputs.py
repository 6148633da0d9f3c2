"""Writing a run's outputs: staged in a hidden folder, then published together or not at all, so a run
that fails or is stopped leaves the earlier outputs as they were. A finished run that replaces an
earlier one keeps it in previous/; a stopped run publishes into a folder of its own (see publish)."""

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

from digits.errors import InputError, printable
from digits.signals import cleaned_up_on_quit, held_off, stop_if_requested

PREVIOUS = "previous"  # where a finished run keeps the run it replaced


class NotSaved(Exception):
    """An output could not be written or published, so none was: the message says which, and why."""


def check_output_dir(path):
    """Refuse an output folder that could not be written, before any time is spent training."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{path} is a file, not a folder: choose another path")
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise InputError(f"{path} cannot be created: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise InputError(f"{path} is not writable ({e.strerror}): choose another folder")


def write_json(data, path):
    """`data` as indented JSON."""
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def staging_folder(output_dir):
    """A hidden folder inside output_dir where a run writes its outputs before they are published,
    named after the process (`.staging-PID-...`); those of processes that no longer run go first.

    Whatever happens before publish (an error, Ctrl-C, a second Ctrl-C that quits at once), the
    folder goes, and so do the folders made for it if nothing was published into them: output_dir
    holds what it held before, and a run leaves all its outputs or none.
    """
    made = [folder for folder in [output_dir, *output_dir.parents] if not folder.exists()]
    output_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(output_dir)
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=f".staging-{os.getpid()}-"))

    def clean_up():
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # deepest first; one that holds anything stays, and so do those above it
            try:
                folder.rmdir()
            except OSError:
                break

    with cleaned_up_on_quit(clean_up):
        try:
            yield staging
        finally:
            clean_up()


def remove_stale_staging(output_dir):
    """Remove the staging folders that runs which no longer run left in output_dir (a run killed with
    SIGKILL, or one that ran when the machine went down): a running process's folder stays."""
    for path in output_dir.glob(".staging-*"):
        pid = re.fullmatch(r"\.staging-([1-9][0-9]{0,9})-.+", path.name)
        if pid and path.is_dir() and not path.is_symlink() and not running(int(pid[1])):
            shutil.rmtree(path, ignore_errors=True)


def running(pid):
    """Whether a process with this ID runs on this machine (another user's included)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # another user's process (EPERM), or not an ID at all: leave it be
        return True
    return True


def write_outputs(outputs, staging):
    """Write each (name, write) into staging, in order, and return the names written. A write of None
    means the run has nothing to write under that name.

    The first write that fails (a full disk, a bug in one picture) stops the writing: NotSaved, and
    nothing is published; what was written goes with the staging folder. A stop signal that came
    before (see digits.signals.stop_requested) writes no more: KeyboardInterrupt.
    """
    written = []
    for name, write in outputs:
        stop_if_requested()  # a stop whose KeyboardInterrupt was swallowed: write no more
        if write is None:
            continue
        try:
            write(staging / name)
        except Exception as e:  # noqa: BLE001 -- whatever it was, nothing is published: said in one line
            raise NotSaved(f"could not write {name} ({why(e)}): {nothing_saved(staging.parent)}")
        written.append(name)
    return written


def why(error):
    """An error in a few words: the system's words for an OSError ("No space left on device")."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {printable(error)}"


def nothing_saved(output_dir):
    """What a run that failed to save left."""
    return f"nothing was saved, and {printable(output_dir)}{os.sep} is as it was"


class Published(NamedTuple):
    """Paths published, and the folder that keeps the earlier run they replaced (None if none did)."""

    done: list
    previous: Path | None = None


class _Moves:
    """Renames within one folder, each undone, last first, if a later one fails."""

    def __init__(self):
        self.done = []

    def move(self, source, target):
        os.rename(source, target)
        self.done.append((source, target))

    def make(self, folder):
        folder.mkdir()
        self.done.append((None, folder))

    def undo(self):
        for source, target in reversed(self.done):
            with contextlib.suppress(OSError):
                target.rmdir() if source is None else os.rename(target, source)


def publish(staging, output_dir, names, keep_previous=(), into=None):
    """Move the staged outputs `names` into output_dir together, or none of them: renames within one
    folder, signals held off, each undone if a later one fails (NotSaved).

    Each output takes the place of the file of its name (a staged folder, TensorBoard's logs, that of
    the folder), which goes with the staging folder; a folder in a file's place is not replaced.
    `keep_previous` names every output a run may write: where output_dir holds any of them, an earlier
    run's, they all move first into output_dir/previous/ (in place of an older previous/), so that
    output_dir holds one run's outputs and the run it replaced is kept. With `into`, the outputs go
    into output_dir/into/ instead, in place of an earlier folder of that name, whole. A stop signal
    that came before (see digits.signals.stop_requested) publishes nothing: KeyboardInterrupt.
    """
    moves, done, previous = _Moves(), [], None
    aside = staging / ".replaced"  # what publishing replaces: removed with the staging folder
    with held_off():
        stop_if_requested()
        step = f"write into {printable(output_dir)}"
        try:
            aside.mkdir()
            if into is not None:
                output_dir = output_dir / into
                if os.path.lexists(output_dir):
                    moves.move(output_dir, aside / into)
                moves.make(output_dir)
            earlier = [name for name in keep_previous if os.path.lexists(output_dir / name)]
            if earlier:
                previous, kept = output_dir / PREVIOUS, staging / ".previous"
                step = f"keep the earlier run in {printable(previous)}"
                kept.mkdir()
                for name in earlier:
                    moves.move(output_dir / name, kept / name)
                if os.path.lexists(previous):
                    moves.move(previous, aside / PREVIOUS)
                moves.move(kept, previous)
            for name in names:
                target = output_dir / name
                step = f"write {printable(target)}"
                if os.path.lexists(target):
                    if target.is_dir() and not target.is_symlink() and not (staging / name).is_dir():
                        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
                    moves.move(target, aside / name)
                moves.move(staging / name, target)
                done.append(target)
        except OSError as e:
            moves.undo()
            raise NotSaved(f"could not {step} ({e.strerror}): {nothing_saved(staging.parent)}")
    return Published(done, previous)


def recorded_accuracy(folder):
    """The test accuracy the metrics.json in `folder` records, or None (none there, or unreadable)."""
    try:
        accuracy = json.loads((folder / "metrics.json").read_text())["test_accuracy"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return accuracy if isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool) else None


def replaced(output_dir, previous, accuracy):
    """The line that says which run this one (of test accuracy `accuracy`) replaced, and where it is kept."""
    before = recorded_accuracy(previous)
    before = "unknown" if before is None else f"{before:.4f}"
    return (f"Replaced the run in {printable(output_dir)}{os.sep} (test accuracy {before}) with this one (test "
            f"accuracy {accuracy:.4f}); the replaced run is kept in {printable(previous)}{os.sep}")
