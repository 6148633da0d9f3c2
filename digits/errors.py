"""The program's shared vocabulary: the digit frame and the error a user can fix."""

IMAGE_SIZE = 28  # MNIST's digits are 28x28 pixels
NUM_CLASSES = 10


class InputError(Exception):
    """A problem the user can fix (bad data, a bad path, a bad setting).

    The script prints it as one line and exits with status 2. Library code words it in its own
    terms; the command line adds the name of the option behind it.
    """


class SetupError(InputError):
    """A problem with what is installed or set in the environment (KERAS_BACKEND, a missing package),
    not with an option: told without an option's name."""


def printable(text):
    """`text` fit for a terminal: each character that does not print (a newline, the escape that starts
    a terminal's control sequence, a byte the file system's encoding could not decode) written as
    Python's repr writes it (\\n, \\x1b, \\udcff); letters of any script are kept. For every name a user
    gave that reaches the terminal: a name holding a newline cannot print a line of its own."""
    text = str(text)
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def one_line(error):
    """A library's error message (numpy's can span lines) fit for the one-line report."""
    return " ".join(str(error).split()) or type(error).__name__


def percent(probability, decimals=1):
    """A probability as a percentage with `decimals` places, shown as 100% only when it is exactly 1:
    0.9996 is "99.9%", where rounding said "100.0%", a sure answer that may be wrong."""
    top = 1 - 10 ** -(decimals + 2)  # the largest shown below 100%: 0.999 for one decimal
    return f"{min(probability, top) if probability < 1 else probability:.{decimals}%}"
