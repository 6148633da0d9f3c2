"""--adapt DIR: teach a trained model your handwriting. It is fine-tuned on your labelled digits
(DIR/0/ ... DIR/9/, read exactly as --evaluate reads them) mixed with MNIST's training images, so that
MNIST is not forgotten, and measured before and after, honestly.

A quarter of each digit's images (at least one) is held out before anything trains: every "before"
and "after" on your digits is measured on those alone, never on a digit the model was adapted on.
MNIST's 10,000 test images are measured before and after too. The adapted model is a new file,
OUTPUT_DIR/adapt-DIRNAME/model.keras, published with before_after.png and metrics.json (all or
none, as a training run's outputs); the model it started from is only read.

The folder, its counts and the output folder are checked before Keras loads: too few digits, an
empty or unreadable folder, are refused in one line.
"""

import os
import shlex
import sys
import time
from typing import NamedTuple

import numpy as np

from digits import data, folders, outputs
from digits.cli import option_named
from digits.errors import NUM_CLASSES, InputError, printable
from digits.settings import ADAPT_MINIMUM

SCRIPT = "handwritten_digit_classification.py"
HELD_OUT = 0.25  # of each digit's images, at least one: measured on, never adapted on
STEPS = 500  # fine-tuning steps, each a batch of BATCH_SIZE images
BATCH_SIZE = 128
MNIST_SHARE = 0.9  # of every batch: MNIST's training images, so that MNIST is not forgotten
LEARNING_RATE = 3e-4  # Adam's, decaying to 0 along a cosine: a tenth of training's peak
OUTPUTS = ["model.keras", "before_after.png", "metrics.json"]


class Split(NamedTuple):
    """Your images, split per digit: those the model adapts on and those held out to measure on."""

    adapt: np.ndarray  # indices into the images read
    held: np.ndarray


class Measure(NamedTuple):
    """A model measured on your held-out digits and on MNIST's test images."""

    held: object  # a digits.evaluation.Evaluation
    mnist: object

    def as_dict(self):
        """What metrics.json records of it."""
        confusion = self.held.confusion
        return {"held_out_accuracy": self.held.accuracy, "held_out_loss": self.held.loss,
                "per_digit": {str(d): float(confusion[d, d] / confusion[d].sum()) for d in range(NUM_CLASSES)},
                "confusion_matrix": confusion.tolist(), "mnist_test_accuracy": self.mnist.accuracy}


def plural(count, digit):
    """'1 more 7', '3 more 7s'."""
    return f"{count} more {digit}{'s' * (count != 1)}"


def check_counts(labels, folder, skipped=0):
    """Refuse (InputError) unless every digit has at least ADAPT_MINIMUM images read: say how many more
    of which (and how many of its files could not be read, `skipped`)."""
    counts = np.bincount(labels, minlength=NUM_CLASSES)
    short = [plural(int(ADAPT_MINIMUM - n), d) for d, n in enumerate(counts) if n < ADAPT_MINIMUM]
    unread = f" ({skipped} of its images could not be read or held no digit)" if skipped else ""
    if short:
        raise InputError(f"{folder} holds too few of your digits to adapt on and measure{unread}: {ADAPT_MINIMUM} "
                         f"of each digit at least (a quarter is held out to measure on); add {', '.join(short)}")
    return counts


def split(labels, seed=0):
    """A quarter of each digit's images (rounded, at least one) held out, chosen at random with `seed`."""
    rng = np.random.default_rng(seed)
    adapt, held = [], []
    for digit in range(NUM_CLASSES):
        mine = rng.permutation(np.flatnonzero(labels == digit))
        count = max(1, round(HELD_OUT * len(mine)))
        held.append(mine[:count])
        adapt.append(mine[count:])
    return Split(np.sort(np.concatenate(adapt)), np.sort(np.concatenate(held)))


def measure(model, x_held, y_held, mnist):
    """The model on your held-out digits and on MNIST's test images."""
    from digits.evaluation import evaluate

    return Measure(evaluate(model, x_held, y_held), evaluate(model, mnist.x_test, mnist.y_test))


def mixed_images(x_own, y_own, x_mnist, y_mnist, rng):
    """STEPS * BATCH_SIZE images in a random order: a MNIST_SHARE of MNIST's training images (each at
    most once), the rest yours, each as often as the others (give or take one)."""
    total = STEPS * BATCH_SIZE
    from_mnist = round(total * MNIST_SHARE)
    own = np.resize(rng.permutation(len(y_own)), total - from_mnist)
    picked = rng.choice(len(y_mnist), from_mnist, replace=False)
    x, y = np.concatenate([x_own[own], x_mnist[picked]]), np.concatenate([y_own[own], y_mnist[picked]])
    order = rng.permutation(total)
    return x[order], y[order]


def fine_tune(model, x, y, seed=None):
    """Train the whole model on the mixed images, once through, in batches of BATCH_SIZE: each image
    randomly turned, zoomed and shifted (the trainer's augmentation: your few images are not learnt
    by heart), Adam from LEARNING_RATE down a cosine to 0. Batch normalisation, where the network has
    it, is settled on the same images."""
    import keras

    from digits.backend import batches
    from digits.training import compile_trainer, make_trainer, settle_batch_norm

    trainer = make_trainer(model, augment=True, seed=seed)
    compile_trainer(trainer, keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(LEARNING_RATE, STEPS)))
    fed = batches(x[..., None], y, BATCH_SIZE, shuffle=False)  # already in a random order
    trainer.fit(fed.x, fed.y, batch_size=fed.batch_size, shuffle=fed.shuffle, epochs=1, verbose=0)
    settle_batch_norm(model, x)


def run(args, load_model):
    """--adapt: check the folder, load the model and MNIST, measure, fine-tune, measure again, and
    publish the adapted model with its report. Returns the exit status (1: the outputs could not be
    written); raises InputError for bad input, before anything is written."""
    started = time.perf_counter()
    folder = args.adapt
    with option_named("--adapt"):  # the layout first: answered before Keras loads
        files = folders.list_labelled(folder)
    report_dir = args.output_dir / f"adapt-{folder.resolve().name}"
    with option_named("--output-dir"):
        outputs.check_output_dir(report_dir)
    model_path = args.model or args.output_dir / "model.keras"
    adapted_path = report_dir / "model.keras"
    if os.path.abspath(adapted_path) == os.path.abspath(model_path):
        raise InputError(f"--model {model_path} is an adapted model this run would replace: pass another "
                         f"--output-dir, so that it stays as it is")
    with option_named("--adapt"):
        read = folders.read_labelled(folder, files)
        check_counts(read.labels, folder, len(read.skipped))
    for skipped in read.skipped:
        print(f"{printable(skipped.path)}: error: {skipped.reason}", file=sys.stderr)
    model = load_model(args)
    mnist = data.load_mnist("bundled")
    seed = 0 if args.seed is None else args.seed
    if args.seed is not None:
        from digits.backend import seed_everything

        seed_everything(args.seed)
    parts = split(read.labels, seed)
    x_held, y_held = read.images[parts.held], read.labels[parts.held]
    before = measure(model, x_held, y_held, mnist)
    tuned = time.perf_counter()
    x, y = mixed_images(read.images[parts.adapt], read.labels[parts.adapt], mnist.x_train, mnist.y_train,
                        np.random.default_rng(seed))
    fine_tune(model, x, y, args.seed)
    tuned = time.perf_counter() - tuned
    after = measure(model, x_held, y_held, mnist)
    metrics = {
        "folder": str(folder), "model": str(model_path), "adapted_model": str(adapted_path),
        "images": len(read.labels), "adapted_on": len(parts.adapt), "held_out": len(parts.held),
        "held_out_paths": [str(read.paths[i]) for i in parts.held],
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in read.skipped],
        "before": before.as_dict(), "after": after.as_dict(),
        "settings": {"steps": STEPS, "batch_size": BATCH_SIZE, "mnist_share": MNIST_SHARE,
                     "learning_rate": LEARNING_RATE, "held_out_share": HELD_OUT, "augment": True,
                     "seed": args.seed},
        "adapt_seconds": round(tuned, 2), "duration_seconds": None,
    }
    print(table(before, after, len(parts.adapt)))
    return publish(model, before, after, metrics, report_dir, started)


def table(before, after, adapted_on):
    """The per-digit accuracy on your held-out digits before and after, then the totals, as printed."""
    held = int(before.held.confusion.sum())
    lines = [f"Your held-out digits ({held}; adapted on the other {adapted_on}, never measured on):",
             "digit  before   after  images"]
    for d in range(NUM_CLASSES):
        row = [m.held.confusion[d, d] / m.held.confusion[d].sum() for m in (before, after)]
        lines.append(f"{d:>5}  {row[0]:6.1%}  {row[1]:6.1%}  {int(before.held.confusion[d].sum()):6d}")
    lines.append(f"Held-out accuracy: {before.held.accuracy:.4f} -> {after.held.accuracy:.4f}")
    lines.append(f"MNIST test accuracy: {before.mnist.accuracy:.4f} -> {after.mnist.accuracy:.4f}")
    return "\n".join(lines)


def publish(model, before, after, metrics, report_dir, started):
    """Write the adapted model, the picture and metrics.json together (an earlier adaptation's move to
    previous/), then say how to use the model. Returns the exit status."""
    from digits import backend, pictures

    metrics["duration_seconds"] = round(time.perf_counter() - started, 2)
    reports = [
        ("model.keras", lambda p: backend.save_model(model, p)),
        ("before_after.png", lambda p: pictures.plot_before_after(before.held, after.held, before.mnist.accuracy,
                                                                  after.mnist.accuracy, p)),
        ("metrics.json", lambda p: outputs.write_json(metrics, p)),
    ]
    try:
        with outputs.staging_folder(report_dir) as staging:
            published = outputs.publish(staging, report_dir, outputs.write_outputs(reports, staging), OUTPUTS)
    except outputs.NotSaved as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"Adapted in {metrics['adapt_seconds']:.1f} s ({STEPS} steps of {BATCH_SIZE} images, "
          f"{1 - MNIST_SHARE:.0%} yours, augmented, {MNIST_SHARE:.0%} MNIST's); "
          f"{metrics['duration_seconds']:.1f} s in all")
    print("Saved: " + ", ".join(printable(path) for path in published.done))
    if published.previous:
        print(f"The earlier adaptation is kept in {printable(published.previous)}{os.sep}")
    model = printable(shlex.quote(metrics["adapted_model"]))
    print(f"Use it: python {SCRIPT} --draw --model {model}\n"
          f"        python {SCRIPT} --predict IMAGE --model {model}\n"
          f"        python {SCRIPT} --evaluate DIR --model {model}")
    return 0
