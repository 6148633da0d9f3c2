"""Writing a run's outputs: staged in a hidden folder, then published together, so a run that
fails or is stopped leaves the previous run's files as they were."""

import contextlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from digits.errors import InputError
from digits.signals import held_off


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

    Whatever happens before publish (an error, Ctrl-C), the folder goes and output_dir holds what
    it held before: a run leaves all its outputs or none.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=".staging-"))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class Written(NamedTuple):
    """Names that were written, and those that failed (each failure already reported on stderr)."""

    done: list
    failed: list


def write_outputs(outputs, staging):
    """Write each (name, write) into staging; a failure is reported and the others still written."""
    written = Written([], [])
    for name, write in outputs:
        try:
            write(staging / name)
            written.done.append(name)
        except Exception as e:  # noqa: BLE001 -- a full disk, a bug in one picture: keep the other outputs
            print(f"warning: could not write {name}: {type(e).__name__}: {e}", file=sys.stderr)
            written.failed.append(name)
    return written


def publish(staging, output_dir, names):
    """Move the staged outputs into place together: renames within one folder, signals held off.

    Returns Written with the published paths and the names that could not be moved.
    """
    published = Written([], [])
    with held_off():
        for name in names:
            try:
                os.replace(staging / name, output_dir / name)
                published.done.append(output_dir / name)
            except OSError as e:  # a folder in the file's place, say
                print(f"warning: could not write {output_dir / name}: {e.strerror}", file=sys.stderr)
                published.failed.append(name)
    return published
