"""Why an epoch takes 5 s one time and 10 s the next: epoch times of the default network under
several thread and input settings, each run a fresh process, settings alternating.

    python benchmarks/epoch_modes.py                      # the first four settings, 3 runs of 6 epochs each
    python benchmarks/epoch_modes.py --settings program keras-pipeline --runs 2 --epochs 4
    python benchmarks/epoch_modes.py --quick              # 2,000 images, 2 epochs: checks that it runs

Every run trains the program's network (digits.networks.build_cnn) on the bundled MNIST in bfloat16
mixed precision (the precision the default run picks on the AMD EPYC; --precision to change), batch
128, through the program's own training.train() (the accuracy metric, the per-epoch pass over the
test images for the curves, Ctrl-C handling), under one of these settings:

- program: as the program runs: on TensorFlow on a CPU of up to 4 cores the batches are gathered
  without input threads of their own (digits.backend.batches);
- keras-pipeline: the arrays given to Keras as they are, fed by Keras' own input pipeline (its
  gathering and prefetching threads): the program before this change;
- one-op: the program with TensorFlow running one operation at a time (one inter-op thread);
- keras-pipeline-one-op: Keras' pipeline and one operation at a time;
- one-thread: the program with a single intra-op thread too, the one-thread reference;
- no-watch: the program without the per-epoch pass over the test images;
- xla: the program with the training step compiled by XLA (Keras leaves it off on a CPU).

A slow epoch is one over 1.4 times the run's fastest: the table counts them, and sets the idle time
of the machine's cores in the slow epochs beside that in the others (Linux: /proc/stat).
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
SETTINGS = ("program", "keras-pipeline", "one-op", "keras-pipeline-one-op", "one-thread", "no-watch", "xla")
SLOW = 1.4


def worker(setting, epochs, limit, precision):
    """Train in this process under `setting`; print one JSON line of epoch seconds."""
    sys.path.insert(0, str(ROOT))
    from digits import backend

    if setting.endswith("one-op") or setting == "one-thread":
        backend.import_tensorflow_quietly()  # threads are set before TensorFlow starts its runtime
        import tensorflow as tf

        tf.config.threading.set_inter_op_parallelism_threads(1)
        if setting == "one-thread":
            tf.config.threading.set_intra_op_parallelism_threads(1)
    backend.load_keras()
    from digits import data, networks, training
    from digits import precision as precisions
    from digits.settings import EVAL_BATCH_SIZE, steps_per_epoch

    mnist = data.load_mnist("bundled")
    x_train, y_train = mnist.x_train[:limit, ..., None], mnist.y_train[:limit]
    train_data = (x_train, y_train)
    watch = None if setting == "no-watch" else (mnist.x_test[..., None], mnist.y_test)
    if setting.startswith("keras-pipeline"):  # the arrays as they are, for Keras' own pipeline
        train_data = backend.Batches(x_train, y_train, 128, True)
        watch = backend.Batches(*watch, EVAL_BATCH_SIZE, False)
    precisions.use_precision(precision)
    trainer = training.make_trainer(networks.build_cnn())
    optimizer = training.make_optimizer("cosine", 3e-3, epochs, steps_per_epoch(len(x_train), 128))
    started = time.perf_counter()
    usage = Usage()
    fit = training.train(trainer, train_data, watch, epochs, 128, optimizer, callbacks=[usage],
                         jit_compile=True if setting == "xla" else "auto")
    print(json.dumps({"setting": setting, "epoch_seconds": fit.history["epoch_seconds"],
                      "cpu_seconds": usage.cpu, "idle_seconds": usage.idle, "total": time.perf_counter() - started}))


def machine_idle():
    """Seconds all cores have been idle since boot (Linux), or 0 where /proc/stat is not there."""
    try:
        with open("/proc/stat") as stat:
            return int(stat.readline().split()[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def Usage():  # noqa: N802 -- a callback class, made once Keras is loaded
    """A Keras callback recording each epoch's CPU seconds of this process and idle seconds of the machine."""
    import keras

    class EpochUsage(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.cpu, self.idle = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self._cpu, self._idle = time.process_time(), machine_idle()

        def on_epoch_end(self, epoch, logs=None):
            self.cpu.append(round(time.process_time() - self._cpu, 2))
            self.idle.append(round(machine_idle() - self._idle, 2))

    return EpochUsage()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", choices=SETTINGS, default=list(SETTINGS[:4]))
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per setting, alternating")
    parser.add_argument("--epochs", type=int, default=6)
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
    usage = {setting: [] for setting in args.settings}
    for run in range(args.runs):
        for setting in args.settings:
            command = [sys.executable, __file__, "--worker", setting, "--epochs", str(args.epochs),
                       "--precision", args.precision]
            if args.limit_train:
                command += ["--limit-train", str(args.limit_train)]
            env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
            out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
            run_result = json.loads(out.strip().splitlines()[-1])
            seconds = run_result["epoch_seconds"]
            results[setting].append(seconds)
            usage[setting].append(list(zip(seconds, run_result["cpu_seconds"], run_result["idle_seconds"])))
            print(f"run {run + 1} {setting}: " + " ".join(
                f"{s:.2f} (cpu {c:.1f}, idle {i:.1f})"
                for s, c, i in zip(seconds, run_result["cpu_seconds"], run_result["idle_seconds"])), flush=True)
    lines = [f"Machine: {machine()}.", "",
             f"{args.runs} runs of {args.epochs} epochs each, {args.precision}, "
             f"{'all' if not args.limit_train else args.limit_train} training images, batch 128; "
             f"a slow epoch is over {SLOW}x the run's fastest. Median and slow count leave out each run's first epoch "
             "(it traces the step).", "",
             "| setting | epoch seconds, each run | median s/epoch | slow epochs | process CPU s/epoch "
             "| cores idle s/epoch: other epochs, slow ones |", "|---|---|---|---|---|---|"]
    for setting, runs in results.items():
        later = [s for seconds in runs for s in seconds[1:]]
        epochs = [(s, c, i, s > SLOW * min(r[0] for r in run)) for run in usage[setting] for s, c, i in run[1:]]
        slow = sum(is_slow for *_, is_slow in epochs)

        def median(values):
            return f"{statistics.median(values):.1f}" if values else "-"

        shown = "; ".join(" ".join(f"{s:.1f}" for s in seconds) for seconds in runs)
        lines.append(f"| {setting} | {shown} | {statistics.median(later) if later else float('nan'):.2f} "
                     f"| {slow} of {len(later)} | {median([c for _, c, _, _ in epochs])} "
                     f"| {median([i for _, _, i, s in epochs if not s])}, "
                     f"{median([i for _, _, i, s in epochs if s])} |")
    print("\n".join(lines))
    if args.output:
        args.output.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
