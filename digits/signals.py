"""Signal handling, in one place: Ctrl-C (SIGINT) and a plain kill (SIGTERM) are treated alike."""

import contextlib
import signal

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


def sigterm_as_keyboard_interrupt():
    """A plain kill then stops the program the way Ctrl-C does (KeyboardInterrupt)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
