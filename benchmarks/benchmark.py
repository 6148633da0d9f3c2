"""Time the program's default run against the original notebook's steps, side by side.

    python benchmarks/benchmark.py --seeds 3            # full MNIST, 10 epochs: about 20 minutes on 2 cores
    python benchmarks/benchmark.py --quick              # 2,000 images, 1 epoch: checks that it still runs
    python benchmarks/benchmark.py --also="--precision bfloat16"  # add another configuration as a row
    python benchmarks/benchmark.py --epochs 2 --also-backend jax  # the program on another Keras backend too
    # before/after a change (that checkout first):
    python benchmarks/benchmark.py --seeds 2 --only-also --also= \
        --also-program /tmp/before/handwritten_digit_classification.py
    python benchmarks/benchmark.py --pytorch --epochs 2 --limit-train 10000  # and the plain PyTorch loop
    python benchmarks/benchmark.py --seeds 3 --as-avx2   # an AVX2-only CPU, approximated on an AVX-512 one

Each configuration runs --seeds times, alternating, every run a fresh process with its own random
initialisation, so that slow and fast moments of the machine fall on both. End-to-end seconds are
the wall time of the whole process (start-up, data, training, evaluation, pictures); peak memory is
the process's maximum resident set size.
"""

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SEED_STYLE = ("seed-style script", [str(ROOT / "benchmarks" / "seed_style.py")])
DEFAULT = ("program default", [str(ROOT / "handwritten_digit_classification.py")])
PYTORCH = ("pytorch loop", [str(ROOT / "benchmarks" / "pytorch_baseline.py")])  # needs torch installed


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# The instruction sets that decide the speed here: AVX2 and AVX-512 for float32; AVX512-BF16 and AMX
# for bfloat16; with any of the last four, TensorFlow turns its oneDNN kernels on by itself.
INSTRUCTION_SETS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16")


def machine():
    cpu, flags = platform.processor() or platform.machine(), set()
    if Path("/proc/cpuinfo").exists():
        info = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
        flags = set(next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), []))
    sets = " ".join(name for name in INSTRUCTION_SETS if name in flags) or "not listed"
    packages = ", ".join(f"{name} {version(name)}" for name in ("keras", "tensorflow", "jax", "torch") if version(name))
    return f"{cpu} ({sets}), {os.cpu_count()} cores, Python {platform.python_version()}, {packages}"


def run_once(command, env, extra, output_dir):
    """Run one configuration in its own process; return its metrics, wall time and peak memory."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *command, *extra, "--output-dir", str(output_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, **env})
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage, not all children's
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(command)} failed:\n{process.stderr.read()}")
    metrics = json.loads((output_dir / "metrics.json").read_text())
    config, history = metrics.get("config", {}), metrics.get("history", {})
    validation = history["val_accuracy"][-1] if metrics.get("curves_watch") == "validation" else None
    return {"wall": wall, "peak_mb": usage.ru_maxrss / 1024, "accuracy": metrics["test_accuracy"],
            "validation": validation, "train_images": metrics.get("data", {}).get("train_images"),
            "train": metrics["train_seconds"], "epochs": metrics["epochs_completed"],
            "backend": config.get("backend", "tensorflow"), "precision": config.get("precision", "float32")
            + {True: " (remembered)", False: " (measured)"}.get(config.get("precision_remembered"), ""),
            "startup": metrics.get("startup_seconds"), "epoch_seconds": history.get("epoch_seconds")}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="runs of each configuration")
    parser.add_argument("--quick", action="store_true", help="2,000 training / 1,000 test images, 1 epoch")
    parser.add_argument("--also", action="append", default=[], metavar="FLAGS",
                        help="another configuration of the program, as its command-line flags")
    parser.add_argument("--also-backend", action="append", default=[], metavar="BACKEND",
                        help="the program's default run on this Keras backend too (KERAS_BACKEND=BACKEND)")
    parser.add_argument("--also-program", action="append", default=[], type=Path, metavar="SCRIPT",
                        help="another checkout's handwritten_digit_classification.py, run with the same flags "
                             "(before/after a change: git worktree add /tmp/before COMMIT)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs of every run (quick mode: 1)")
    parser.add_argument("--pytorch", action="store_true",
                        help="also the same network as a plain PyTorch loop (benchmarks/pytorch_baseline.py)")
    parser.add_argument("--limit-train", type=int, help="every run trains on the first N images (default: all)")
    parser.add_argument("--limit-test", type=int, help="every run tests on the first N images (default: all)")
    parser.add_argument("--only-also", action="store_true",
                        help="run only the --also-program, --also and --also-backend configurations; "
                             "compare with the first")
    parser.add_argument("--as-avx2", action="store_true",
                        help="approximate an AVX2-only CPU on one with AVX-512: oneDNN capped at AVX2 "
                             "(ONEDNN_MAX_CPU_ISA=AVX2) for every run, and the original steps on the kernels "
                             "TensorFlow picks itself on such a CPU (TF_ENABLE_ONEDNN_OPTS=0)")
    parser.add_argument("--output", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    epochs = 1 if args.quick else args.epochs
    if args.quick:
        args.limit_train, args.limit_test = 2000, 1000
    data_flags = [*(["--limit-train", str(args.limit_train)] if args.limit_train else []),
                  *(["--limit-test", str(args.limit_test)] if args.limit_test else [])]
    data_flags += ["--epochs", str(epochs)]
    configs = [] if args.only_also else [(*SEED_STYLE, {"TF_ENABLE_ONEDNN_OPTS": "0"} if args.as_avx2 else {}),
                                         (*DEFAULT, {})]
    configs += [(f"program at {script.resolve().parent}", [str(script.resolve())], {}) for script in args.also_program]
    configs += [(f"program {flags}" if flags.strip() else "program (this checkout)", DEFAULT[1] + flags.split(), {})
                for flags in args.also]
    configs += [(f"program, KERAS_BACKEND={backend}", DEFAULT[1], {"KERAS_BACKEND": backend})
                for backend in args.also_backend]
    configs += [(*PYTORCH, {})] if args.pytorch else []
    images = min(args.limit_train or 60000, 60000)
    if args.as_avx2:
        os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX2"

    results = {name: [] for name, _, _ in configs}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for n, (name, command, env) in enumerate(configs):
                result = run_once(command, env, data_flags, Path(tmp) / f"{n}-{seed}")
                results[name].append(result)
                print(f"run {seed + 1}/{args.seeds} {name}: {result['wall']:.1f} s, "
                      f"accuracy {result['accuracy']:.4f}", file=sys.stderr, flush=True)

    base_name = configs[0][0]
    base = results[base_name]
    base_wall, base_accuracy = np.mean([r["wall"] for r in base]), np.mean([r["accuracy"] for r in base])
    lines = [(f"Machine: {machine()}{'; as AVX2-only (--as-avx2)' if args.as_avx2 else ''}. "
              f"{args.seeds} runs of each, alternating; "
              f"{'quick mode: ' if args.quick else ''}"
              f"{f'{images:,} training images' if args.limit_train else 'full MNIST'}, {epochs} "
              f"epoch{'s' if epochs > 1 else ''}."), "",
             ("| configuration | backend, precision | start-up s | s/epoch | end-to-end s | images/s (training) "
              "| validation accuracy (mean) | test accuracy (mean ± sd) | peak memory MB "
              f"| speed-up vs {base_name} (end to end) | accuracy vs {base_name} (pp) |"),
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        wall = np.mean([r["wall"] for r in runs])
        train = np.mean([r["train"] / r["epochs"] for r in runs])
        accuracy = [r["accuracy"] for r in runs]
        chosen = ", ".join(sorted({f"{r['backend']}, {r['precision']}" for r in runs}))  # auto may differ per run
        trained = runs[0]["train_images"] or images  # fewer with --validation-split
        validation = [r["validation"] for r in runs if r["validation"] is not None]
        validation = f"{np.mean(validation):.4f}" if validation else "—"
        startup = [r["startup"] for r in runs if r["startup"] is not None]
        startup = f"{np.mean(startup):.1f}" if startup else "—"
        lines.append(f"| {name} | {chosen} | {startup} | {train:.2f} | {wall:.1f} | {trained / train:,.0f} "
                     f"| {validation} | "
                     f"{np.mean(accuracy):.4f} ± {np.std(accuracy):.4f} | {max(r['peak_mb'] for r in runs):,.0f} | "
                     f"{base_wall / wall:.2f}x | {100 * (np.mean(accuracy) - base_accuracy):+.2f} |")
    each = {name: ", ".join(f"{r['accuracy']:.4f}" for r in runs) for name, runs in results.items()}
    lines += ["", "Each run's test accuracy: " + "; ".join(f"{name}: {acc}" for name, acc in each.items())]
    lines += [f"Each epoch's seconds, {name}: "
              + "; ".join(" ".join(f"{t:.1f}" for t in r["epoch_seconds"]) for r in runs)
              for name, runs in results.items() if all(r["epoch_seconds"] for r in runs)]
    lines += ["", "Start-up: from the program's start to the end of its first training steps (loading Keras and the "
              "data, the precision, building the network, tracing the step), as its metrics.json records it."]
    table = "\n".join(lines)
    print(table)
    if args.output:
        args.output.write_text(f"Command: `python benchmarks/benchmark.py {shlex.join(sys.argv[1:])}`\n\n{table}\n")


if __name__ == "__main__":
    main()
