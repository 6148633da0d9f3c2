"""Opening the user's files: only regular files are read, and what stops one from being read is told in
words (InputError). A named pipe (FIFO) or a device is refused from what stat says, never opened: opening
a FIFO waits for a writer that may never come, and a device such as /dev/zero never ends. No Keras.
"""

import os
import stat

from digits.errors import InputError

NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # an open that does not wait for a FIFO's writer (POSIX)
NOT_FILES = {stat.S_IFIFO: "a named pipe (FIFO)", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
             stat.S_IFSOCK: "a socket"}


def refused(mode, what):
    """The reason a file of this stat mode is not read as `what` ("an image"), or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"a folder, not {what}"
    return (f"{NOT_FILES.get(stat.S_IFMT(mode), 'not a regular file')}, not {what}: only regular files are read, "
            f"save what it holds to a file and give that")


def check_regular(path, what="a file"):
    """Raise InputError, in words without the path (the caller names it), unless `path` is a regular
    file: no such file, permission denied, a folder, a FIFO, a device. Nothing is opened."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise InputError(reason(e)) from None
    problem = refused(mode, what)
    if problem:
        raise InputError(problem)


def open_regular(path, what="a file"):
    """`path` opened for reading in binary, or check_regular's InputError. Opened without waiting, and
    checked again once open: a FIFO put in its place since the stat is refused all the same."""
    check_regular(path, what)
    try:
        descriptor = os.open(path, os.O_RDONLY | NONBLOCK | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise InputError(reason(e)) from None
    problem = refused(os.fstat(descriptor).st_mode, what)
    if problem:
        os.close(descriptor)
        raise InputError(problem)
    if NONBLOCK:
        os.set_blocking(descriptor, True)
    return os.fdopen(descriptor, "rb")


def open_named(path, what="a file"):
    """open_regular, its refusal told with the path: "data/x: permission denied: ..."."""
    try:
        return open_regular(path, what)
    except InputError as e:
        raise InputError(f"{path}: {e}") from None


def reason(error):
    """An OSError from stat or open, as the one-line reason a file cannot be read."""
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, PermissionError):
        return "permission denied: make it readable (chmod +r)"
    return f"cannot be read ({error.strerror or type(error).__name__})"
