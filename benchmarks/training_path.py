"""What one epoch of the default run costs beyond its bare training steps, on this machine.

    python benchmarks/training_path.py             # full MNIST, batch 128, float32 and bfloat16
    python benchmarks/training_path.py --repeats 1 --limit-train 2000   # checks that it still runs

Times, per epoch of the training images (all 60,000 unless --limit-train; medians of --repeats
epochs after a warm-up epoch):
- bare steps: the compiled training step called on batches already in memory, one call a step;
- fit: the program's own `train()` path without the per-epoch test pass (shuffling, batching,
  uint8-to-float in the step, steps_per_execution);
- fit + test pass: the same with the 10,000 test images evaluated after every epoch, as the
  default run does for its curves.
"""

import argparse
import shlex
import sys
import time
from pathlib import Path

import keras
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from digits.backend import describe_device
from digits.data import load_mnist
from digits.networks import build_cnn
from digits.settings import EVAL_BATCH_SIZE
from digits.training import compile_trainer, make_trainer


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs of each")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limit-train", type=int, help="train on the first N images only (a quick check it runs)")
    parser.add_argument("--output", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    x_train, y_train, x_test, y_test, _ = load_mnist("bundled")
    x_train, y_train, x_test = x_train[: args.limit_train, ..., None], y_train[: args.limit_train], x_test[..., None]
    steps = len(x_train) // args.batch_size
    lines = [(f"Backend {keras.backend.backend()} (Keras {keras.__version__}), {describe_device()[0]}, "
             f"{steps} steps of {args.batch_size} an epoch; medians of {args.repeats} epochs after a warm-up one."), "",
             ("| precision | bare steps s/epoch | fit s/epoch | fit + test pass s/epoch | fit / bare "
              "| test pass share |"),
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for precision, policy in (("float32", "float32"), ("bfloat16", "mixed_bfloat16")):
        keras.mixed_precision.set_global_policy(policy)
        trainer = make_trainer(build_cnn(), augment=False, seed=None)
        compile_trainer(trainer, "adam")
        size = args.batch_size
        batches = [(x_train[i * size:(i + 1) * size], y_train[i * size:(i + 1) * size]) for i in range(steps)]
        bare = []
        for _ in range(args.repeats + 1):
            started = time.perf_counter()
            for x, y in batches:
                trainer.train_on_batch(x, y)
            bare.append(time.perf_counter() - started)
        timings = {}
        for name, watch in (("fit", None), ("fit + test pass", (x_test, y_test))):
            timer = EpochTimer()
            trainer.fit(x_train[: steps * size], y_train[: steps * size], batch_size=size,
                        epochs=args.repeats + 1, validation_data=watch, validation_batch_size=EVAL_BATCH_SIZE,
                        callbacks=[timer], verbose=0)
            timings[name] = float(np.median(timer.seconds[1:]))
        floor = float(np.median(bare[1:]))
        lines.append(f"| {precision} | {floor:.2f} | {timings['fit']:.2f} | {timings['fit + test pass']:.2f} | "
                     f"{timings['fit'] / floor:.2f}x | {timings['fit + test pass'] / timings['fit'] - 1:.0%} |")
        print(lines[-1], flush=True)
    if args.output:
        args.output.write_text(f"Command: `python benchmarks/training_path.py {shlex.join(sys.argv[1:])}`\n\n"
                               + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
