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


def one_line(error):
    """A library's error message (numpy's can span lines) fit for the one-line report."""
    return " ".join(str(error).split()) or type(error).__name__
