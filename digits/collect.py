"""Collecting your own labelled digits from the drawing page (--draw --collect DIR).

Each saved drawing becomes DIR/<digit>/<name>.png, the drawing as it was rendered for the network
(light ink on black, the form --evaluate reads back through the same steps), and the 28x28 image the
model saw goes beside it in DIR/<digit>/.seen/<name>.png, a hidden folder that --evaluate skips.
Files are written to a hidden temporary name and moved into place with os.replace: a reader never
sees half a file. Names come from the server (time, a counter, random letters), never the client;
the only thing a client chooses is the digit, a whole number 0-9. An undo removes only a file this
server wrote, while it is still the file written. The whole collection holds at most MAX_BYTES.
NumPy and Pillow only: no Keras.
"""

import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from digits.errors import NUM_CLASSES, InputError

MAX_PER_DIGIT = 10_000  # drawings saved in one digit's folder: a bound on what a page can write
MAX_BYTES = 2 * 2**30  # the collection's files, all digits and .seen/ together: 100,000 drawings at ~20 KB
UMASK = os.umask(os.umask(0o022))  # the process's umask, read once (setting it is the only way to read it)
SEEN = ".seen"  # the 28x28 images the model saw, beside the drawings, hidden from --evaluate


class Gone(LookupError):
    """A save to undo whose file is no longer there as it was written."""


class Saved(NamedTuple):
    """A drawing saved: its file, relative to the collection's folder, and the counts after it."""

    name: str
    counts: dict


def check_digit(digit):
    """The digit a drawing is saved under: a whole number 0-9 (not a string, not True), or ValueError."""
    if isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit < NUM_CLASSES:
        raise ValueError(f"digit must be a whole number from 0 to 9, got {digit!r}")
    return digit


def write_png(pixels, path):
    """Write uint8 grayscale pixels to `path` as a PNG, atomically: a hidden temporary file in the same
    folder, then os.replace."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".saving-", suffix=".png")
    try:
        with os.fdopen(descriptor, "wb") as file:
            Image.fromarray(pixels, "L").save(file, "PNG")
        os.chmod(temporary, 0o666 & ~UMASK)  # readable as any file the user saves (mkstemp makes it 0600)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class Collection:
    """The folder a drawing page saves into: DIR/0/ ... DIR/9/. Thread-safe; one lock for all saves.

    Raises InputError where the folder cannot be made or written. It remembers the files it wrote
    (their inode and size): the only ones undo() removes.
    """

    def __init__(self, folder, max_bytes=MAX_BYTES):
        self.folder, self.max_bytes, self.written = Path(folder), max_bytes, {}
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(f"{self.folder} is a file, not a folder: choose another path")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.folder):
                pass
        except OSError as e:
            raise InputError(f"{self.folder} cannot be written ({e.strerror}): choose another folder")
        self.lock = threading.Lock()
        self.serial = 0

    def count(self, digit):
        """How many drawings DIR/<digit>/ holds (its visible files: what --evaluate reads)."""
        try:
            with os.scandir(self.folder / str(digit)) as entries:
                return sum(1 for entry in entries if not entry.name.startswith(".") and entry.is_file())
        except (FileNotFoundError, NotADirectoryError):
            return 0

    def size(self):
        """The bytes of the collection's files: DIR/<digit>/ and DIR/<digit>/.seen/, hidden ones included."""
        total = 0
        for folder in (self.folder / str(d) / sub for d in range(NUM_CLASSES) for sub in ("", SEEN)):
            try:
                with os.scandir(folder) as entries:
                    total += sum(entry.stat().st_size for entry in entries if entry.is_file(follow_symlinks=False))
            except (FileNotFoundError, NotADirectoryError):
                pass
        return total

    def counts(self):
        """{"0": n, ..., "9": n}: the drawings saved so far under each digit, this session's and earlier."""
        return {str(digit): self.count(digit) for digit in range(NUM_CLASSES)}

    def save(self, drawing, seen, digit):
        """Save `drawing` (grayscale in [0, 1], as rendered) and `seen` (the 28x28 digit in [0, 1]) under
        `digit`; a Saved. Raises ValueError for a bad digit, OverflowError when the folder is full (in
        drawings for the digit, or in bytes for the collection)."""
        digit = check_digit(digit)
        with self.lock:
            if self.count(digit) >= MAX_PER_DIGIT:
                raise OverflowError(f"{self.folder / str(digit)} already holds {MAX_PER_DIGIT:,} drawings, "
                                    f"as many as one page saves")
            if (size := self.size()) >= self.max_bytes:
                raise OverflowError(f"{self.folder} already holds {size / 2**20:,.1f} MiB of drawings, as much as "
                                    f"one page saves ({self.max_bytes / 2**20:,.1f} MiB): collect into another folder")
            folder = self.folder / str(digit)
            (folder / SEEN).mkdir(parents=True, exist_ok=True)
            while True:  # a name no file has: this server's counter, and random letters for any other one
                self.serial += 1
                name = f"{digit}-{time.strftime('%Y%m%d-%H%M%S')}-{self.serial:04d}-{secrets.token_hex(3)}.png"
                if not (folder / name).exists() and not (folder / SEEN / name).exists():
                    break
            write_png(np.round(np.clip(seen, 0, 1) * 255).astype(np.uint8), folder / SEEN / name)
            try:
                write_png(np.round(np.clip(drawing, 0, 1) * 255).astype(np.uint8), folder / name)
            except BaseException:  # the drawing is not saved: neither is what the model saw of it
                (folder / SEEN / name).unlink(missing_ok=True)
                raise
            written = (folder / name).stat()
            self.written[f"{digit}/{name}"] = (written.st_ino, written.st_size)
            return Saved(f"{digit}/{name}", self.counts())

    def undo(self, saved):
        """Remove the drawing saved as `saved` ("7/7-....png", as save() named it) and its .seen/ copy;
        the counts after it. Only a file this collection wrote, and only while it is the file written:
        LookupError for a name it did not save (or has undone), Gone where the file has gone or changed."""
        with self.lock:
            if not isinstance(saved, str) or saved not in self.written:
                raise LookupError(f"{str(saved)[:80]!r} is not a drawing this page saved: nothing removed")
            digit, name = saved.split("/")
            path = self.folder / digit / name
            try:
                now = path.stat()
            except FileNotFoundError:
                now = None
            if now is None or (now.st_ino, now.st_size) != self.written[saved]:
                del self.written[saved]  # whatever is there now is not this page's to remove
                raise Gone(f"{saved} is no longer there as it was saved: nothing removed")
            path.unlink()
            del self.written[saved]
            (self.folder / digit / SEEN / name).unlink(missing_ok=True)
            return self.counts()

