"""The command line: every option, its default and its checks, with no Keras (so --help and a
mistyped option answer at once), and the option names that library errors are told with."""

import argparse
import contextlib
import difflib
from pathlib import Path

from digits.errors import InputError, SetupError, printable
from digits.settings import (
    ARCHITECTURES,
    CNN_DENSE_UNITS,
    CNN_FILTERS,
    LEARNING_RATES,
    LR_SCHEDULES,
    PRECISIONS,
    max_conv_blocks,
    network_spec,
)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, with its error as one line: its usage dump buries the one line that matters."""

    def error(self, message):
        """Print the one line (with the option meant, for a misspelt one) and exit with status 2."""
        if message.startswith("unrecognized arguments:"):
            options = [name for action in self._actions for name in action.option_strings if name.startswith("--")]
            meant = [close for word in message.split()[2:] if word.startswith("--")
                     for close in [option_meant(word.split("=")[0], options)] if close]
            if meant:
                message += f" (did you mean {' '.join(meant)}?)"
        self.exit(2, printable(f"{self.prog}: error: {message} (see --help)") + "\n")


def option_meant(word, options):
    """The one of `options` ("--learning-rate", ...) a mistyped `word` most likely means, or None:
    its initials (--lr), a close spelling (--epoch, --learningrate), or the start of one option's name
    (--batch). Nothing for a word like none of them: a wrong guess misleads more than none."""
    name = word[2:]
    for option in options:
        if "-" in option[2:] and "".join(part[:1] for part in option[2:].split("-")) == name:
            return option
    close = difflib.get_close_matches(name, [option[2:] for option in options], n=1, cutoff=0.7)
    if close:
        return "--" + close[0]
    started = [option for option in options if option[2:].startswith(name)]
    return started[0] if len(started) == 1 else None


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown in --help, except the "(default: None)" that tells nothing."""

    def _get_help_string(self, action):
        return action.help if action.default is None or action.default is False else super()._get_help_string(action)


def whole_number(low, high=None):
    """An argparse type: a whole number from `low` (to `high`)."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value
    return parse


def real_number(low, high, example, low_included=True):
    """An argparse type: a real number in [low, high) (or (low, high)); `example` shows one."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number such as {example}, got {text!r}")
        if not (low <= value if low_included else low < value) or not value < high:  # NaN fails both
            bound = f"at least {low}" if low_included else f"above {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}{f' and below {high}' if high < float('inf') else ''}"
                                             f", got {value}")
        return value
    return parse


def build_parser():
    """The program's options, each with its default and its check."""
    parser = OneLineErrorParser(
        description="Train a CNN on MNIST, report how well it did and where it goes wrong; "
                    "or predict digits in your own images.",
        formatter_class=HelpFormatter,
        allow_abbrev=False,  # a typo such as --epoch must not pass for --epochs
    )
    positive_int = whole_number(1)
    parser.add_argument("--data", default="bundled", metavar="{bundled,keras,PATH}",
                        help="bundled: data/mnist/ (falls back to keras if absent); keras: "
                             "keras.datasets.mnist (downloads); PATH: a folder of the four IDX files "
                             "(gzipped or raw), a .npz with x_train, y_train, x_test, y_test, or a folder with "
                             "train/0/ ... train/9/ and test/0/ ... test/9/ folders of images")
    parser.add_argument("--epochs", type=positive_int, default=10, help="passes over the training images")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="training images per step")
    parser.add_argument("--seed", type=whole_number(0, 2**32 - 1), default=None,
                        help="make the run repeatable: the same seed gives the same numbers on the same "
                             "machine with the same --precision (on TensorFlow it turns on deterministic "
                             "ops, which may cost some speed)")
    parser.add_argument("--output-dir", default="outputs", type=Path,
                        help="where the pictures, model.keras and metrics.json go; an earlier run's move to "
                             "OUTPUT_DIR/previous/, a stopped run's go to OUTPUT_DIR/interrupted/")
    parser.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                        help="train on the first N training images only (quick runs)")
    parser.add_argument("--limit-test", type=positive_int, default=None, metavar="N",
                        help="evaluate on the first N test images only")
    parser.add_argument("--validation-split", type=real_number(0, 1, "0.1"), default=0.0, metavar="FRACTION",
                        help="hold out this last fraction of the training images: the curves watch them "
                             "and the test set is evaluated once, at the end (0: train on all of them and "
                             "watch the test set, as the original example did)")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto: on a GPU, bfloat16 mixed precision where it is native; on a CPU, whichever "
                             "trains faster in a few timed steps (printed), measured once per machine and "
                             "remembered in ~/.cache/handwritten-digits/")
    parser.add_argument("--augment", action="store_true",
                        help="randomly rotate (10 degrees), shift (10%%) and zoom (10%%) training images")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="cosine",
                        help="Adam's learning rate: cosine, warm-up over the first epoch to the peak then "
                             "cosine decay to 0; constant, the same rate throughout, as in the original")
    parser.add_argument("--learning-rate", type=real_number(0, float("inf"), "0.001", low_included=False),
                        default=None, metavar="RATE",
                        help="the cosine's peak (default 0.003) or the constant rate (default 0.001, Adam's own)")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="cnn",
                        help="cnn: the original example's family of networks, shaped by --filters and --dense-units; "
                             "resnet: a compact residual network for 28x28 digits (slower, more accurate)")
    parser.add_argument("--filters", type=positive_int, nargs="+", default=None, metavar="N",
                        help="cnn: the filters of each Conv2D 3x3 + MaxPool block, one number a block, at most "
                             f"{max_conv_blocks()} blocks (default: {' '.join(map(str, CNN_FILTERS))})")
    parser.add_argument("--dense-units", type=whole_number(0), default=None, metavar="N",
                        help=f"cnn: units of the hidden dense layer, 0 for none (default: {CNN_DENSE_UNITS})")
    parser.add_argument("--tensorboard", action="store_true",
                        help="write TensorBoard logs (loss, accuracy, learning rate per epoch) to OUTPUT_DIR/logs "
                             "(an earlier run's logs move to OUTPUT_DIR/previous/ with its other outputs when the run "
                             "saves its own); needs TensorFlow installed")
    parser.add_argument("--predict", nargs="+", metavar="IMAGE",
                        help="read the number in each image with a trained model instead of training: its digits, "
                             "left to right, one or several (up to 20: crop a page to the number)")
    parser.add_argument("--model", type=Path, default=None,
                        help="the trained model --predict, --draw, --evaluate and --adapt use (default: "
                             "OUTPUT_DIR/model.keras)")
    parser.add_argument("--reader", type=Path, default=None, metavar="PATH",
                        help="the number reader --predict and --draw read numbers with (default: "
                             "models/number_reader.keras, shipped; train another with train_number_reader.py)")
    parser.add_argument("--draw", action="store_true",
                        help="serve a page to draw digits on and watch the model read them, instead of training")
    parser.add_argument("--port", type=whole_number(0, 65535), default=8000,
                        help="the drawing page's port (0: any free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address the drawing page listens on; anything outside 127.0.0.0/8 and ::1 "
                             "makes it reachable from other machines")
    parser.add_argument("--evaluate", type=Path, default=None, metavar="DIR",
                        help="measure a trained model on your own labelled digits instead of training: DIR/0/ ... "
                             "DIR/9/ hold images of each digit, read as --predict reads them; prints the test "
                             "accuracy and writes confusion_matrix.png, misclassified.png and metrics.json")
    parser.add_argument("--collect", type=Path, default=None, metavar="DIR",
                        help="with --draw: show 'Save as' buttons that save each drawing to DIR/<digit>/, "
                             "for --evaluate DIR and --adapt DIR")
    parser.add_argument("--adapt", type=Path, default=None, metavar="DIR",
                        help="fine-tune the trained model on your own labelled digits (DIR/0/ ... DIR/9/, as "
                             "--evaluate reads them, at least 5 of each) mixed with MNIST's, instead of training: "
                             "a quarter of each digit is held out to measure before and after; writes "
                             "OUTPUT_DIR/adapt-DIRNAME/model.keras (a new file), before_after.png and metrics.json; "
                             "--seed makes it repeatable")
    return parser


# The options only training reads: given with --predict, --draw or --evaluate, they would be ignored
# (--adapt reads --seed too).
TRAINING_ONLY = ["data", "epochs", "batch_size", "seed", "limit_train", "limit_test", "validation_split", "precision",
                 "augment", "lr_schedule", "learning_rate", "architecture", "filters", "dense_units", "tensorboard"]


def parse_args(argv=None):
    """The checked options: anything that cannot work is refused here, in one line, exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    modes = [name for name, on in (("--predict", args.predict), ("--draw", args.draw), ("--evaluate", args.evaluate),
                                   ("--adapt", args.adapt)) if on]
    if len(modes) > 1:
        parser.error(f"{' and '.join(modes)} are different modes: give one of them")
    given = [dest for dest in TRAINING_ONLY if getattr(args, dest) != parser.get_default(dest)
             and not (dest == "seed" and modes == ["--adapt"])]
    if modes and given:  # say so, rather than train nothing with them
        flag = "--" + given[0].replace("_", "-")
        parser.error(f"{flag} is for training; {modes[0]} uses a trained model and would ignore it: drop {flag}")
    if args.model and not modes:
        parser.error("--model is only used with --predict, --draw, --evaluate or --adapt; training writes "
                     "OUTPUT_DIR/model.keras")
    if args.reader and not (args.predict or args.draw):
        parser.error("--reader is only used with --predict or --draw, which read numbers with it")
    if args.collect and not args.draw:
        parser.error("--collect saves the digits drawn on the drawing page: use it with --draw")
    try:
        args.network = network_spec(args.architecture, args.filters, args.dense_units)
    except InputError as e:  # argparse has checked each number: what is left is how they combine
        if args.architecture == "resnet":
            parser.error(f"--architecture resnet: {e}: drop --filters and --dense-units")
        parser.error(f"--filters {' '.join(map(str, args.filters))}: {e}")
    if args.architecture == "cnn":  # record what the run used, not None, in metrics.json
        args.filters, args.dense_units = list(args.network.filters), args.network.dense_units
    args.learning_rate = args.learning_rate or LEARNING_RATES[args.lr_schedule]
    return args


@contextlib.contextmanager
def option_named(option, advice=""):
    """Within the block, a library's InputError is told with the option behind it:
    "out is a file" -> "--output-dir: out is a file", then `advice` (option None: advice only). A
    SetupError (KERAS_BACKEND, say) is not the option's: it passes as it is."""
    try:
        yield
    except SetupError:
        raise
    except InputError as e:
        raise InputError(f"{option + ': ' if option else ''}{e}{advice}") from None
