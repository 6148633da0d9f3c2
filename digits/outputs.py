"""Writing a run's outputs: staged in a hidden folder, then published together, so a run that
fails or is stopped leaves the previous run's files as they were, and one that publishes leaves
only its own."""

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from digits.errors import InputError, printable
from digits.signals import cleaned_up_on_quit, held_off, stop_if_requested


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
    """A hidden folder inside output_dir where a run writes its outputs before they are published.

    Whatever happens before publish (an error, Ctrl-C, a second Ctrl-C that quits at once), the
    folder goes, and so do the folders made for it if nothing was published into them: output_dir
    holds what it held before, and a run leaves all its outputs or none.
    """
    made = [folder for folder in [output_dir, *output_dir.parents] if not folder.exists()]
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=".staging-"))

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


class Written(NamedTuple):
    """Names that were written, and those that failed (each failure already reported on stderr)."""

    done: list
    failed: list


def write_outputs(outputs, staging):
    """Write each (name, write) into staging; a failure is reported and the others still written.
    A write of None means the run has nothing to write under that name. A stop signal that came
    before (see digits.signals.stop_requested) writes no more: KeyboardInterrupt."""
    written = Written([], [])
    for name, write in outputs:
        stop_if_requested()  # a stop whose KeyboardInterrupt was swallowed: write no more
        if write is None:
            continue
        try:
            write(staging / name)
            written.done.append(name)
        except Exception as e:  # noqa: BLE001 -- a full disk, a bug in one picture: keep the other outputs
            print(f"warning: could not write {name}: {type(e).__name__}: {printable(e)}", file=sys.stderr)
            written.failed.append(name)
    return written


class Published(NamedTuple):
    """Paths published, names that could not be, and paths of an earlier run's outputs removed."""

    done: list
    failed: list
    removed: list


def publish(staging, output_dir, names, replaces=()):
    """Move the staged outputs into place together: renames within one folder, signals held off.

    A staged folder (TensorBoard's logs) takes the place of the folder of that name. `replaces`
    names every output such a run may write: an earlier run's output under one of those names that
    this run did not write goes in the same step, so that output_dir holds one run's outputs. A stop
    signal that came before (see digits.signals.stop_requested) publishes nothing: KeyboardInterrupt.
    """
    published = Published([], [], [])
    with held_off():
        stop_if_requested()
        for name in names:
            target = output_dir / name
            try:
                if (staging / name).is_dir() and target.is_dir() and not target.is_symlink():
                    os.replace(target, staging / f".replaced-{name}")  # removed with the staging folder
                os.replace(staging / name, target)
                published.done.append(target)
            except OSError as e:  # a folder in the file's place, say
                print(f"warning: could not write {printable(target)}: {e.strerror}", file=sys.stderr)
                published.failed.append(name)
        for name in replaces:
            target = output_dir / name
            if name not in names and (target.exists() or target.is_symlink()):
                try:
                    os.replace(target, staging / f".replaced-{name}")
                    published.removed.append(target)
                except OSError as e:
                    print(f"warning: could not remove {printable(target)}, left by an earlier run: {e.strerror}",
                          file=sys.stderr)
    return published
