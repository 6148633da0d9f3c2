"""Why an epoch takes 5 s one time and 10 s the next: epoch times of the default network under
several thread and input settings, each run a fresh process, settings alternating.

    python benchmarks/epoch_modes.py                      # every setting, 3 runs of 5 epochs each
    python benchmarks/epoch_modes.py --settings program interop1 --runs 2 --epochs 4
    python benchmarks/epoch_modes.py --quick              # 2,000 images, 2 epochs: checks that it runs

Every run trains the program's network (digits.networks.build_cnn) on the bundled MNIST in bfloat16
mixed precision (the precision the default run picks on the AMD EPYC; --precision to change), batch
128, through the program's own training.train() (the accuracy metric, the per-epoch pass over the
test images for the curves, Ctrl-C handling), unless the setting says otherwise:

- program: the program's training path as it is;
- interop1: TensorFlow's inter-op thread pool cut to one thread (the intra-op pool keeps its two);
- intra1: one intra-op thread (and one inter-op): the one-thread reference;
- no-watch: no per-epoch pass over the test images;
- private-data: the training data fed from a tf.data pipeline with its own one-thread pool;
- quiet: interop1 and private-data together, the batches gathered from a shuffled index;
- xla: the training step compiled by XLA (Keras leaves it off on a CPU).

A slow epoch is one over 1.4 times the run's fastest: the table counts them.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ("program", "interop1", "intra1", "no-watch", "private-data", "quiet", "xla")
ENVIRONMENT = {}
SLOW = 1.4


def worker(setting, epochs, limit, precision):
    """Train in this process under `setting`; print one JSON line of epoch seconds."""
    sys.path.insert(0, str(ROOT))
    from digits.backend import import_tensorflow_quietly, load_keras

    import_tensorflow_quietly()
    import tensorflow as tf

    if setting in ("interop1", "quiet"):  # before anything initialises TensorFlow's runtime
        tf.config.threading.set_inter_op_parallelism_threads(1)
    elif setting == "intra1":
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(1)
    load_keras()
    from digits import data, networks, training
    from digits import precision as precisions
    from digits.settings import steps_per_epoch

    mnist = data.load_mnist("bundled")
    x_train, y_train = mnist.x_train[:limit, ..., None], mnist.y_train[:limit]
    x_test, y_test = mnist.x_test[..., None], mnist.y_test
    precisions.use_precision(precision)
    trainer = training.make_trainer(networks.build_cnn())
    optimizer = training.make_optimizer("cosine", 3e-3, epochs, steps_per_epoch(len(x_train), 128))
    train_data = (x_train, y_train)
    if setting == "xla":  # the program's compile, then XLA on
        compile_trainer = training.compile_trainer

        def compile_with_xla(trainer, optimizer):
            compile_trainer(trainer, optimizer)
            trainer.jit_compile = True

        training.compile_trainer = compile_with_xla
    if setting == "quiet":
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        options.autotune.enabled = False
        images, labels = tf.constant(x_train), tf.constant(y_train)
        dataset = (tf.data.Dataset.range(len(x_train)).shuffle(len(x_train)).batch(128)
                   .map(lambda i: (tf.gather(images, i), tf.gather(labels, i))).prefetch(1).with_options(options))
        train_data = (dataset, None)
    if setting == "private-data":
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        options.autotune.enabled = False
        dataset = (tf.data.Dataset.from_tensor_slices(train_data).shuffle(len(x_train)).batch(128)
                   .prefetch(1).with_options(options))
        train_data = (dataset, None)
    watch = None if setting == "no-watch" else (x_test, y_test)
    started = time.perf_counter()
    if train_data[1] is None:  # a dataset: train() passes arrays, so fit it here the same way
        training.compile_trainer(trainer, optimizer)
        stop = training.GracefulStop(steps_per_epoch(len(x_train), 128))
        trainer.fit(train_data[0], epochs=epochs, validation_data=watch, validation_batch_size=1000,
                    callbacks=[stop], verbose=0)
        seconds = stop.epoch_seconds
    else:
        fit = training.train(trainer, train_data, watch, epochs, 128, optimizer)
        seconds = fit.history["epoch_seconds"]
    print(json.dumps({"setting": setting, "epoch_seconds": seconds, "total": time.perf_counter() - started}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS))
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per setting, alternating")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="bfloat16")
    parser.add_argument("--quick", action="store_true", help="2,000 images, 2 epochs, 1 run")
    parser.add_argument("--output", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.limit_train, args.epochs, args.runs = 2000, 2, 1
    if args.worker:
        return worker(args.worker, args.epochs, args.limit_train, args.precision)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from benchmark import machine

    results = {setting: [] for setting in args.settings}
    for run in range(args.runs):
        for setting in args.settings:
            command = [sys.executable, __file__, "--worker", setting, "--epochs", str(args.epochs),
                       "--precision", args.precision]
            if args.limit_train:
                command += ["--limit-train", str(args.limit_train)]
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **ENVIRONMENT.get(setting, {})}
            out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
            seconds = json.loads(out.strip().splitlines()[-1])["epoch_seconds"]
            results[setting].append(seconds)
            print(f"run {run + 1} {setting}: {' '.join(f'{s:.2f}' for s in seconds)}", flush=True)
    lines = [f"Machine: {machine()}.", "",
             f"{args.runs} runs of {args.epochs} epochs each, {args.precision}, "
             f"{'all' if not args.limit_train else args.limit_train} training images, batch 128; "
             f"a slow epoch is over {SLOW}x the run's fastest. Median and slow count leave out each run's first epoch "
             "(it traces the step).", "",
             "| setting | epoch seconds, each run | median s/epoch | slow epochs |", "|---|---|---|---|"]
    for setting, runs in results.items():
        later = [s for seconds in runs for s in seconds[1:]]
        slow = sum(s > SLOW * min(seconds) for seconds in runs for s in seconds[1:])
        shown = "; ".join(" ".join(f"{s:.1f}" for s in seconds) for seconds in runs)
        lines.append(f"| {setting} | {shown} | {statistics.median(later) if later else float('nan'):.2f} "
                     f"| {slow} of {len(later)} |")
    print("\n".join(lines))
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
