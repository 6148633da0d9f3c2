"""Signal handling, in one place: Ctrl-C (SIGINT) and a plain kill (SIGTERM) are treated alike.

Outside training a stop signal raises KeyboardInterrupt and also sets a flag that outlives it:
Python ignores an exception raised where it cannot propagate (a weak-reference callback run by the
garbage collector prints "Exception ignored ... KeyboardInterrupt" and goes on), so whatever
publishes a run's outputs asks `stop_requested()` first. Quitting at once (`quit_at_once`) skips
every `finally`: the clean-ups registered with `cleaned_up_on_quit` run before it.
"""

import contextlib
import os
import signal
import sys

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_stop = {"requested": False}
_quit_cleanups = []


@contextlib.contextmanager
def handling_stop_signals(handler):
    """Within the block, SIGINT and SIGTERM call `handler` (or are ignored, for signal.SIG_IGN);
    afterwards the handlers are what they were."""
    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def held_off():
    """Within the block, Ctrl-C and SIGTERM wait: for steps that must not be cut in half."""
    return handling_stop_signals(signal.SIG_IGN)


def _request_stop(signum, frame):
    _stop["requested"] = True
    raise KeyboardInterrupt


def stop_on_signals():
    """Ctrl-C and a plain kill stop the program: KeyboardInterrupt, and stop_requested() from then on."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _request_stop)


def stop_requested():
    """Whether a stop signal came outside training (even if its KeyboardInterrupt was swallowed)."""
    return _stop["requested"]


def stop_if_requested():
    """Raise KeyboardInterrupt again if a stop signal came (see stop_requested)."""
    if _stop["requested"]:
        raise KeyboardInterrupt


@contextlib.contextmanager
def cleaned_up_on_quit(cleanup):
    """Within the block, quit_at_once() calls `cleanup()` before it exits."""
    _quit_cleanups.append(cleanup)
    try:
        yield
    finally:
        _quit_cleanups.remove(cleanup)


def quit_at_once(message):
    """Run the registered clean-ups, print `message` on stderr and exit with status 130 at once,
    without raising: an exception raised inside the backend's loops can crash the process."""
    for cleanup in reversed(_quit_cleanups):
        with contextlib.suppress(Exception):
            cleanup()
    print(message, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(130)
