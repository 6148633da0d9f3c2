r"""One command for a GPU machine: the program on each backend against a plain PyTorch loop, one table.

Beforehand, on a machine that reaches the package registries, fill wheels/ (ignored by git, about
26 MB) with Keras and its dependencies for the GPU machine's Python (3.12 here; change --python-version
to match):

    python -m pip download --dest wheels --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 keras

Then on the GPU machine (JAX and/or PyTorch, NumPy, Matplotlib, Seaborn and Pillow installed; no
TensorFlow, no Keras, no internet needed):

    python benchmarks/device_check.py            # 5 minutes at most; writes benchmarks/device-<gpu>.md
    python benchmarks/device_check.py --quick    # the same steps on tiny slices, 2 epochs: any machine, CPU too

It installs whatever of Keras, NumPy, Matplotlib, Seaborn and Pillow is missing from wheels/ (nothing
when they import already), then runs each step in its own process under its own time limit, printing
its output as it comes: a probe (one epoch of the default network on JAX: a hang or a slow compile shows
in a minute, and the other JAX steps are skipped if it fails), the program's default run on JAX
(--precision auto), the plain PyTorch loop (benchmarks/pytorch_baseline.py), the program with
--precision float32, on the PyTorch backend, and --architecture resnet --augment. A step that reaches its
limit is stopped with SIGTERM, which the program answers by saving what it trained: its row shows the
epochs it finished. Figures come from each run's metrics.json; end to end is the process's wall time;
peak GPU memory is the most nvidia-smi showed in use above what was in use before the step (JAX runs
with XLA_PYTHON_CLIENT_PREALLOCATE=false, or it would show the 75% of the GPU it takes up front).
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = str(ROOT / "handwritten_digit_classification.py")
BASELINE = str(ROOT / "benchmarks" / "pytorch_baseline.py")
DOWNLOAD = ("python -m pip download --dest wheels --only-binary=:all: --python-version 3.12 --implementation cp "
            "--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 keras")
NEEDED = {"keras": "keras", "numpy": "numpy", "matplotlib": "matplotlib", "seaborn": "seaborn", "PIL": "pillow"}
QUICK = ["--limit-train", "1000", "--limit-test", "500"]
GRACE = 30  # seconds a stopped run has to evaluate and save what it trained (20 on a busy 2-core CPU)


class Step(NamedTuple):
    """One run: its key for --steps, its name in the table, the script and its flags, KERAS_BACKEND
    ("torch" for the plain loop), its time limit in seconds, and its epochs (None: 10, or 2 with --quick)."""

    key: str
    name: str
    command: list
    backend: str
    limit: int
    epochs: int | None = None


STEPS = [
    Step("probe", "probe: jax, 1 epoch", [PROGRAM], "jax", 60, epochs=1),
    Step("jax", "jax, --precision auto", [PROGRAM], "jax", 60),
    Step("pytorch-loop", "pytorch loop", [BASELINE], "torch", 45),
    Step("jax-float32", "jax, --precision float32", [PROGRAM, "--precision", "float32"], "jax", 50),
    Step("torch", "torch backend, --precision auto", [PROGRAM], "torch", 75),
    Step("jax-resnet", "jax, --architecture resnet --augment", [PROGRAM, "--architecture", "resnet", "--augment"],
         "jax", 60),
]
QUICK_LIMIT = 150  # seconds a step may take with --quick: on a busy CPU, loading JAX and compiling alone take 30



class Outcome(NamedTuple):
    """What a step left: 'ok', 'stopped' (at its limit), 'failed' or 'skipped'; why; its metrics.json;
    its wall time; the most GPU memory it held (MiB, None where unknown)."""

    status: str
    note: str
    metrics: dict | None
    wall: float | None
    peak_mib: float | None


def gpu_query(field):
    """One field of `nvidia-smi --query-gpu` for the first GPU, or None without nvidia-smi or a GPU."""
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def install_missing(wheels):
    """Install from `wheels` whatever of NEEDED does not import; exit with the download command if it cannot."""
    missing = [dist for module, dist in NEEDED.items() if importlib.util.find_spec(module) is None]
    if not missing:
        print(f"Keras {version('keras')}, NumPy, Matplotlib, Seaborn, Pillow import: nothing to install", flush=True)
        return
    if not wheels.is_dir() or not any(wheels.glob("*.whl")):
        sys.exit(f"error: {', '.join(missing)} not installed, and {wheels} holds no wheels: "
                 f"fill it beforehand on a machine with the registries: {DOWNLOAD}")
    print(f"Installing {', '.join(missing)} from {wheels} ...", flush=True)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--find-links", str(wheels),
                             *missing], capture_output=True, text=True, timeout=180, check=False)
    if result.returncode:
        sys.exit(f"error: pip could not install {', '.join(missing)} from {wheels}:\n{result.stdout}{result.stderr}")
    importlib.invalidate_caches()
    print(f"Installed in {time.perf_counter() - started:.0f} s: Keras {version('keras')}", flush=True)


def run_step(step, flags, out_dir, limit):
    """Run one step under `limit` seconds, its output printed as it comes; read its metrics.json."""
    shutil.rmtree(out_dir, ignore_errors=True)  # a figure read afterwards is this run's own
    env = {**os.environ, "KERAS_BACKEND": step.backend, "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
           "PYTHONUNBUFFERED": "1"}
    before = gpu_query("memory.used")
    peak = [None if before is None else 0.0]
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, *step.command, *flags, "--output-dir", str(out_dir)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tail = []

    def echo():
        for line in process.stdout:
            tail[:] = [*tail[-4:], line.rstrip()]
            if line.strip() and not re.match(r"^[│┃┏┗┡└┌━─ ]", line):  # the model summary's frame: noise
                print(f"  | {line.rstrip()}", flush=True)

    def watch_memory():
        while before is not None and process.poll() is None:
            used = gpu_query("memory.used")
            if used is not None:
                peak[0] = max(peak[0], float(used) - float(before))
            time.sleep(0.5)

    threads = [threading.Thread(target=echo, daemon=True), threading.Thread(target=watch_memory, daemon=True)]
    for thread in threads:
        thread.start()
    stopped = False
    try:
        process.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        stopped = True
        print(f"  ! {limit} s limit reached: stopping it (SIGTERM), {GRACE} s to save what it trained", flush=True)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    wall = time.perf_counter() - started
    for thread in threads:
        thread.join(timeout=5)
    metrics_path = out_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else None
    if stopped:
        epochs = metrics["epochs_completed"] if metrics else 0
        done = f"after {epochs} epoch{'s' * (epochs != 1)}" if epochs else "before finishing an epoch"
        done += "; it saved what it trained" if metrics else ""
        return Outcome("stopped", f"stopped at its {limit} s limit {done}", metrics, wall, peak[0])
    if process.returncode or metrics is None:
        last = next((line for line in reversed(tail) if line.strip()), "no output")
        last = last[:160].replace("|", "\\|")  # a table cell
        return Outcome("failed", f"failed (exit {process.returncode}): {last}", metrics, wall, peak[0])
    return Outcome("ok", "ok", metrics, wall, peak[0])


def cell(value, form):
    return "—" if value is None else format(value, form)


def table_row(step, outcome, epochs):
    """A markdown row: step, backend, device, precision, epochs, first and steady s/epoch, end to end,
    test accuracy, peak GPU memory, what happened."""
    m = outcome.metrics or {}
    config, seconds = m.get("config", {}), m.get("history", {}).get("epoch_seconds", [])
    steady = sorted(seconds[1:])[len(seconds[1:]) // 2] if len(seconds) > 1 else None
    done = f"{m['epochs_completed']}/{config.get('epochs', epochs)}" if m else "—"
    return (f"| {step.name} | {config.get('backend', step.backend)} | {config.get('device', '—')} | "
            f"{config.get('precision', '—')} | {done} | {cell(seconds[0] if seconds else None, '.2f')} | "
            f"{cell(steady, '.2f')} | {cell(outcome.wall, '.1f')} | {cell(m.get('test_accuracy'), '.4f')} | "
            f"{cell(outcome.peak_mib, ',.0f')} | {outcome.note} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 training and 500 test images, 2 epochs a step")
    parser.add_argument("--budget", type=int, default=None,
                        help="seconds for everything, install included (default: 300; with --quick, 900)")
    parser.add_argument("--steps", default=",".join(step.key for step in STEPS),
                        help="the steps to run, in this order, comma-separated (default: all)")
    parser.add_argument("--output", type=Path, help="the table's file (default: benchmarks/device-<gpu>.md; "
                                                    "with --quick, WORK_DIR/device-<gpu>-quick.md)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "device-check",
                        help="where each step's outputs go, one folder a step")
    parser.add_argument("--wheels", type=Path, default=ROOT / "wheels", help="the folder of wheels to install from")
    args = parser.parse_args()
    keys = {step.key: step for step in STEPS}
    unknown = [key for key in args.steps.split(",") if key not in keys]
    if unknown:
        parser.error(f"--steps: no step {', '.join(unknown)}: choose from {', '.join(keys)}")
    steps = [keys[key] for key in args.steps.split(",")]
    args.budget = args.budget or (900 if args.quick else 300)
    deadline = time.perf_counter() + args.budget
    install_missing(args.wheels)

    gpu = gpu_query("name")
    slug = re.sub(r"[^a-z0-9]+", "-", (gpu or "cpu").lower()).strip("-")
    output = args.output or (args.work_dir / f"device-{slug}-quick.md" if args.quick
                             else ROOT / "benchmarks" / f"device-{slug}.md")
    flags = QUICK if args.quick else []
    epochs = 2 if args.quick else 10
    has = {name: importlib.util.find_spec(name) is not None for name in ("jax", "torch")}
    outcomes = []
    for n, step in enumerate(steps, start=1):
        left = deadline - time.perf_counter() - GRACE
        limit = int(min(QUICK_LIMIT if args.quick else step.limit, left))
        print(f"\n[{n}/{len(steps)}] {step.name}", end="", flush=True)
        if not has["jax" if step.backend == "jax" else "torch"]:
            outcome = Outcome("skipped", f"skipped: {'JAX' if step.backend == 'jax' else 'PyTorch'} is not installed",
                              None, None, None)
        elif step.backend == "jax" and steps[0].key == "probe" and outcomes and not (
                outcomes[0].metrics and outcomes[0].metrics["epochs_completed"]):
            outcome = Outcome("skipped", "skipped: the JAX probe did not finish its epoch", None, None, None)
        elif limit < 10:
            outcome = Outcome("skipped", f"skipped: no time left in the {args.budget} s budget", None, None, None)
        else:
            step_flags = [*flags, "--epochs", str(step.epochs or epochs)]
            shown = ["python", os.path.relpath(step.command[0]), *step.command[1:], *step_flags]
            print(f" (limit {limit} s): {shlex.join(shown)}", flush=True)
            out_dir = args.work_dir / re.sub(r"[^a-z0-9]+", "-", step.name.lower()).strip("-")
            outcome = run_step(step, step_flags, out_dir, limit)
        print(f"\n  -> {outcome.note}" + (f" in {outcome.wall:.1f} s" if outcome.wall else ""), flush=True)
        outcomes.append(outcome)

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?") if Path("/proc/cpuinfo").exists() else "?"
    packages = ", ".join(f"{name} {version(name)}" for name in ("keras", "jax", "jaxlib", "torch", "numpy")
                         if version(name))
    device = f"{gpu} ({gpu_query('memory.total')} MiB, driver {gpu_query('driver_version')})" if gpu else "no GPU"
    lines = [f"Command: `python benchmarks/device_check.py {shlex.join(sys.argv[1:])}`", "",
             f"Machine: {device}; {cpu}, {os.cpu_count()} cores; Python {sys.version.split()[0]}, {packages}. "
             f"{'Quick mode: 1,000 training and 500 test images' if args.quick else 'Full MNIST'}, "
             f"{epochs} epochs a step (the probe 1), batch 128.", "",
             "| step | backend | device | precision | epochs | first epoch s | steady s/epoch | end to end s "
             "| test accuracy | peak GPU memory MiB | outcome |",
             "|---|---|---|---|---|---|---|---|---|---|---|",
             *(table_row(step, outcome, epochs) for step, outcome in zip(steps, outcomes)), "",
             "Steady s/epoch: the median of the epochs after the first (which compiles); every epoch includes the "
             "pass over the test images. End to end: the whole process's wall time. Peak GPU memory: the most "
             "nvidia-smi showed in use above what was in use before the step."]
    table = "\n".join(lines) + "\n"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(table)
    print("\n" + table + f"\nWritten to {output}")
    return 1 if any(outcome.status == "failed" for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
