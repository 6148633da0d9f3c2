"""The settings a run is made of, and their rules, without Keras: the command line checks them
before Keras loads, and the networks and the trainer read them.

One owner for each rule: the cnn's defaults, how many convolution blocks fit a 28x28 image, that
the residual network takes no shape settings, the learning rates, the steps in an epoch.
"""

from dataclasses import dataclass

from digits.errors import IMAGE_SIZE, InputError

ARCHITECTURES = ("cnn", "resnet")
CNN_FILTERS = (32, 64)  # the original Keras example's network
CNN_DENSE_UNITS = 100
LR_SCHEDULES = ("cosine", "constant")
LEARNING_RATES = {"cosine": 3e-3, "constant": 1e-3}  # the cosine's peak; Adam's default, as in the original
PRECISIONS = ("auto", "float32", "bfloat16")
EVAL_BATCH_SIZE = 1000  # inference needs no small batches: large ones keep the cores busy
ADAPT_MINIMUM = 5  # --adapt: your images of each digit, at least: a quarter (at least one) is held out to measure


def max_conv_blocks(size=IMAGE_SIZE):
    """How many Conv2D 3x3 + MaxPool 2x2 blocks fit an image of this size: 28 -> 13 -> 5 -> 1, so 3."""
    blocks = 0
    while size - 2 >= 2:  # the convolution takes 2 pixels, the pooling then needs at least 2
        size, blocks = (size - 2) // 2, blocks + 1
    return blocks


@dataclass(frozen=True)
class NetworkSpec:
    """Which network to build: the cnn family with its filters and dense units, or the resnet."""

    architecture: str = "cnn"
    filters: tuple = CNN_FILTERS  # cnn only: () for the resnet
    dense_units: int = CNN_DENSE_UNITS  # cnn only: 0 for the resnet


def network_spec(architecture="cnn", filters=None, dense_units=None):
    """A checked NetworkSpec; None settings mean the family's defaults.

    Raises InputError for settings that cannot build a network.
    """
    if architecture == "resnet":
        if filters is not None or dense_units is not None:
            raise InputError("filters and dense units shape the cnn; the resnet has a fixed design")
        return NetworkSpec("resnet", (), 0)
    if architecture != "cnn":
        raise InputError(f"unknown architecture {architecture!r}: choose one of {', '.join(ARCHITECTURES)}")
    filters = CNN_FILTERS if filters is None else tuple(filters)
    dense_units = CNN_DENSE_UNITS if dense_units is None else dense_units
    allowed = max_conv_blocks()
    if not filters:
        raise InputError("the cnn needs at least one convolution block: give the filters of each")
    if any(n < 1 for n in filters):
        raise InputError(f"every number of filters must be at least 1, got {' '.join(map(str, filters))}")
    if len(filters) > allowed:
        raise InputError(f"{len(filters)} convolution blocks asked for, but a 28x28 image allows at most "
                         f"{allowed} (28 -> 13 -> 5 -> 1 pixels): give at most {allowed} numbers")
    if dense_units < 0:
        raise InputError(f"{dense_units} dense units: give 0 (no hidden layer) or a positive number")
    return NetworkSpec("cnn", filters, dense_units)


def steps_per_epoch(images, batch_size):
    """Training steps in one pass over `images` images, the last batch possibly smaller."""
    return -(-images // batch_size)
