"""Train the number reader: the small network that reads a whole line of digits in a photo or drawing.

    python train_number_reader.py                        # over an hour on 2 CPU cores: models/number_reader.keras
    python train_number_reader.py --steps 300 --output /tmp/reader.keras   # a quick try
    python train_number_reader.py --init models/number_reader.keras --steps 18000 --lr 5e-4  # train on
    python train_number_reader.py --init models/number_reader.keras --steps 0 --output-dir /tmp/m  # measure it

The default run's network reads one digit; this one reads a number (digits.reader). It learns from
lines written on the fly from MNIST *training* digits: 1 to 8 digits, spacing from crossing strokes
through touching to well apart, varied height, baseline, slant, width and stroke, as ink and as
photos on paper and on a chalkboard. It is measured on lines of MNIST *test* digits only, as ink, in
each photo look it trained on, and on a whiteboard, a look it never trained on. It prints and writes
its figures like a run: metrics.json and reader_lines.png (lines read right and wrong) in
--output-dir, with the same reading of ink lines of the training digits beside them. --init trains on
from a reader's weights instead of random ones (--filters and --units wider than its grow it first,
so that it starts reading exactly as it did); with --steps 0 it measures that reader. The trained reader
ships in the repository, so --predict and the drawing page read numbers without this step.

Story of a run: read the command line, load MNIST, write the photo lines, build, train, evaluate, save.
"""

import argparse
import functools
import json
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from digits.backend import load_keras, seed_everything
from digits.data import load_mnist
from digits.lines import LINE_HEIGHT, LOOKS, MAX_DIGITS, SPACINGS, batch_of, lines
from digits.reader import READER_FILE, build_reader, ctc_loss, load_reader, read_strips

PHOTO_SHARE = 0.4  # of training lines: photos (the rest is ink as written)
PHOTO_LOOKS = ("paper", "chalkboard")  # the looks trained on; the other photo look is held out


def parse_args(argv=None):
    """The command line's options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=44000,
                        help="training steps (default 44000); 0 with --init: measure that reader, train nothing")
    parser.add_argument("--batch-size", type=int, default=64, help="lines a step (default 64)")
    parser.add_argument("--lr", type=float, default=2e-3,
                        help="Adam's first learning rate, decayed along a cosine (default 2e-3)")
    parser.add_argument("--photos", type=int, default=12000, help="photo lines written before training, half "
                        "on paper, half on a chalkboard, each seen many times (default 12000, ~5 min)")
    parser.add_argument("--init", type=Path, help="start from this reader's weights (train on) instead of at random; "
                        "a narrower reader's are grown into this one, which then reads exactly as it did")
    parser.add_argument("--filters", type=int, nargs=3, default=(32, 64, 96), metavar="N",
                        help="the trunk's three convolutions' filters (default 32 64 96)")
    parser.add_argument("--units", type=int, default=128, help="each step's features (default 128)")
    parser.add_argument("--limit-train", type=int, help="train on the first N MNIST training digits only")
    parser.add_argument("--test-lines", type=int, default=2000, help="test lines of each look (default 2000)")
    parser.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                        help="training precision (bfloat16 pays on CPUs with AVX512-BF16 or AMX)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--output", type=Path, default=READER_FILE, help=f"the reader file (default {READER_FILE})")
    parser.add_argument("--output-dir", type=Path, default=Path("outputs") / "reader",
                        help="its figures: metrics.json, reader_lines.png (default outputs/reader)")
    args = parser.parse_args(argv)
    if args.steps < 0 or (args.steps == 0 and args.init is None):
        parser.error("--steps: at least 1, or 0 with --init READER to measure that reader")
    return args


class Lines:
    """Batches of training lines, written on the fly: each batch of similar lengths (so little paper
    pads them), a share of them photos drawn from a pool written once."""

    def __init__(self, x, y, photos, batch_size, rng):
        self.x, self.y, self.photos, self.batch_size, self.rng = x, y, photos, batch_size, rng
        self.by_length = {n: [p for p in photos if len(p.number) == n] for n in range(1, MAX_DIGITS + 1)}

    def batch(self):
        """One batch: (strips (N, 28, width, 1), labels (N, 8)), of 1 to 8 digits, lengths within one."""
        longest = int(self.rng.integers(1, MAX_DIGITS + 1))
        shortest = max(1, longest - 1)
        photo_count = self.rng.binomial(self.batch_size, PHOTO_SHARE) if self.photos else 0
        made = lines(self.x, self.y, self.batch_size - photo_count, self.rng, lengths=(shortest, longest))
        pool = [p for n in range(shortest, longest + 1) for p in self.by_length[n]]
        made += [pool[k] for k in self.rng.integers(0, len(pool), photo_count)] if pool else []
        return batch_of([line.strip for line in made], [line.number for line in made])


def train(model, data, steps, lr, started, save):
    """Train for `steps` batches, calling `save` every 10% of them (a long run stopped keeps its
    latest reader); the losses."""
    keras = load_keras()
    schedule = keras.optimizers.schedules.CosineDecay(lr, steps, alpha=0.02, warmup_target=None)
    model.compile(optimizer=keras.optimizers.Adam(schedule, clipnorm=5.0), loss=ctc_loss)
    losses = []
    report = max(1, steps // 40)
    with ThreadPoolExecutor(1) as writer:  # the next batches are written while the network trains
        coming = deque(writer.submit(data.batch) for _ in range(3))
        for step in range(1, steps + 1):
            images, labels = coming.popleft().result()
            if step + len(coming) < steps:
                coming.append(writer.submit(data.batch))
            losses.append(float(np.asarray(model.train_on_batch(images, labels))))
            if step % report == 0 or step == steps:
                print(f"step {step:,}/{steps:,}: CTC loss {np.mean(losses[-report:]):.3f} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
            if step % max(1, steps // 10) == 0 and step < steps:
                save(model)
    return losses


def evaluate(model, test_lines):
    """{look: figures} for test lines of each look: every digit right, by length and by spacing band."""
    figures = {}
    for look, made in test_lines.items():
        readings = read_strips(model, [line.strip for line in made])
        right = [reading.number == line.number for line, reading in zip(made, readings)]
        by_length = {n: [r for r, line in zip(right, made) if len(line.number) == n] for n in range(1, MAX_DIGITS + 1)}
        by_band = {name: [r for r, line in zip(right, made) if low <= line.spacing < high]
                   for low, high, name in [(-0.3, -0.15, "crossing"), *SPACINGS[:-1], (0.2, 0.81, "apart")]}
        misses = Counter(miss(line.number, reading.number) for line, reading in zip(made, readings)
                         if reading.number != line.number)
        figures[look] = {
            "lines": len(made), "read right": int(sum(right)), "accuracy": float(np.mean(right)),
            "misses": dict(misses.most_common()),
            "by length": {n: f"{sum(r)} of {len(r)}" for n, r in by_length.items() if r},
            "by spacing": {name: f"{sum(r)} of {len(r)}" for name, r in by_band.items() if r},
        }
        figures[look]["examples"] = [(line, reading.number) for line, reading in zip(made, readings)]
    return figures


def miss(number, read):
    """How a line was read wrong: one digit read as another, several, digits missing or too many."""
    if len(read) != len(number):
        return "digits missing" if len(read) < len(number) else "digits too many"
    return "one digit read as another" if sum(a != b for a, b in zip(number, read)) == 1 else "several read as others"


def picture(figures, path):
    """reader_lines.png: lines of each look read right (green) and wrong (red, with what was read)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    for look, figure in figures.items():
        examples = figure["examples"]
        rows += [(look, line, read) for line, read in examples if read == line.number][:3]
        rows += [(look, line, read) for line, read in examples if read != line.number][:3]
    fig, axes = plt.subplots(len(rows), 1, figsize=(8, 0.75 * len(rows) + 0.5))
    for ax, (look, line, read) in zip(np.atleast_1d(axes), rows):
        ax.imshow(line.strip, cmap="gray", aspect="equal")
        ok = read == line.number
        ax.set_title(f"{look}: {line.number} read as {read or '(nothing)'}", fontsize=9,
                     color="tab:green" if ok else "tab:red", loc="left")
        ax.axis("off")
    fig.suptitle("Number reader on lines of MNIST test digits: read right and wrong", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))  # the title above the first line's
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grow(model, smaller):
    """Copy a narrower reader's weights into `model` (the same layers, as many filters and units or
    more): each unit keeps its weights; new units get their fresh weights in and none out, so that the
    grown reader reads exactly as the smaller one did, and training gives the new units their say."""
    rows = LINE_HEIGHT // 4
    for layer in model.layers:
        old_weights = smaller.get_layer(layer.name).get_weights() if layer.weights else []
        grown = []
        for old, new in zip(old_weights, layer.get_weights()):
            shape = new.shape
            if any(o > n for o, n in zip(old.shape, shape)):
                raise ValueError(f"its layer {layer.name} is wider than this one's: pass --filters and --units at "
                                 "least as wide as its")
            if layer.name == "column" and new.ndim == 2:  # its inputs are (rows, filters) columns, flattened
                old, new = old.reshape(rows, -1, old.shape[-1]), new.reshape(rows, -1, new.shape[-1])
                inputs = 1
            else:
                inputs = {4: 2, 3: 1, 2: 0}.get(new.ndim)  # Conv2D, Conv1D, Dense kernels; a bias has none
            if inputs is not None:  # what new inputs say goes nowhere yet
                new[(slice(None),) * inputs + (slice(old.shape[inputs], None),)] = 0
            new[tuple(slice(0, n) for n in old.shape)] = old
            grown.append(new.reshape(shape))
        if grown:
            layer.set_weights(grown)


def save_reader(model, path, sizes=()):
    """The trained reader saved to `path` in float32, without the optimizer: a small file that reads
    on any backend, written whole or not at all. Returns the saved model."""
    keras = load_keras()
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    reader = build_reader(*sizes)
    keras.mixed_precision.set_global_policy(policy)
    reader.set_weights(model.get_weights())
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")
    reader.save(partial)
    partial.replace(path)
    return reader


def main(argv=None):
    """Load, write the photo lines, build, train, save, evaluate, report."""
    args = parse_args(argv)
    started = time.perf_counter()
    keras = load_keras()
    seed_everything(args.seed)
    rng = np.random.default_rng(args.seed)

    # 1. Data: MNIST's training digits write the training lines; its test digits the test lines.
    mnist = load_mnist("bundled")
    x_train, y_train = mnist.x_train[: args.limit_train], mnist.y_train[: args.limit_train]
    photos = []
    if args.photos and args.steps:
        photos = lines(x_train, y_train, args.photos, rng, looks=PHOTO_LOOKS)
    test_rng = np.random.default_rng(1000 + args.seed)
    test_lines = {look: lines(mnist.x_test, mnist.y_test, args.test_lines, test_rng, looks=(look,)) for look in LOOKS}
    held_out = [look for look in LOOKS if look not in ("ink", *PHOTO_LOOKS)]
    print(f"Data: {len(x_train):,} MNIST training digits write the training lines ({len(photos):,} photos on "
          f"{' and '.join(PHOTO_LOOKS)} written, {time.perf_counter() - started:.0f} s); {args.test_lines:,} "
          f"lines of test digits a look ({', '.join(LOOKS)}; {', '.join(held_out)} never trained on)", flush=True)

    # 2. Build and train.
    if args.precision == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    sizes = (tuple(args.filters), args.units)
    if args.steps:
        model = build_reader(*sizes)
        if args.init:
            try:
                grow(model, load_reader(args.init))
            except ValueError as e:
                raise SystemExit(f"error: --init {args.init}: {e}")
        print(f"Reader: {model.count_params():,} parameters{f', from {args.init}' if args.init else ''}; "
              f"{args.steps:,} steps of {args.batch_size} lines, {args.precision}", flush=True)
        save = functools.partial(save_reader, path=args.output, sizes=sizes)
        data = Lines(x_train, y_train, photos, args.batch_size, rng)
        losses = train(model, data, args.steps, args.lr, started, save)
        trained_seconds = time.perf_counter() - started

        # 3. Save, then evaluate the reader as saved.
        reader = save_reader(model, args.output, sizes)
    else:  # --steps 0: measure the reader as it is
        reader, losses, trained_seconds = load_reader(args.init), [], 0.0

    # 4. Evaluate on lines of test digits, print and write the figures.
    figures = evaluate(reader, test_lines)
    # the same reading of lines of the digits it trained on: how much of what it misses is new digits
    known = evaluate(reader, {"ink": lines(x_train, y_train, args.test_lines, np.random.default_rng(2000 + args.seed),
                                           looks=("ink",))})["ink"]
    known.pop("examples")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    picture(figures, args.output_dir / "reader_lines.png")
    for look, figure in figures.items():
        figure.pop("examples")
        print(f"{look}: {figure['read right']} of {figure['lines']} test lines read with every digit right "
              f"({figure['accuracy']:.2%}); by length {figure['by length']}; by spacing {figure['by spacing']}; "
              f"misses {figure['misses']}")
    print(f"ink, of MNIST training digits: {known['read right']} of {known['lines']} lines read with every digit right "
          f"({known['accuracy']:.2%}), against {figures['ink']['accuracy']:.2%} of test digits")
    metrics = {"reader": str(args.output if args.steps else args.init), "parameters": reader.count_params(),
               "init": str(args.init) if args.init else None, "steps": args.steps,
               "filters": [reader.get_layer(f"conv{n}").filters for n in (1, 2, 3)],
               "units": reader.get_layer("column").units, "seed": args.seed,
               # how it was trained: nothing, with --steps 0
               **{key: getattr(args, key) if args.steps else None for key in ("batch_size", "precision")},
               "training_seconds": round(trained_seconds, 1),
               "final_loss": float(np.mean(losses[-100:])) if losses else None,
               "test": figures, "training digits, ink": known}
    (args.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    saved = f"the reader to {args.output} and its figures" if args.steps else "the figures"
    print(f"Saved {saved} to {args.output_dir} ({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
