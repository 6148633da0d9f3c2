"""The precision choice: float32 or bfloat16 mixed precision, whichever trains faster here,
measured once per machine, Keras and backend and remembered in a small cache file."""

import contextlib
import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import time
from pathlib import Path
from typing import NamedTuple

import keras
import numpy as np

from digits.backend import describe_device
from digits.training import make_trainer

POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}  # precision -> Keras dtype policy


def use_precision(precision):
    """Make `precision` ('float32' or 'bfloat16') the policy of the layers built from now on."""
    keras.mixed_precision.set_global_policy(POLICIES[precision])


def training_step_timer(build, images, labels, precision):
    """A function that times 3 training steps of a fresh copy of build() under `precision`, warmed
    up, and returns the seconds a step took."""
    use_precision(precision)
    trainer = make_trainer(build())
    trainer.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    for _ in range(3):  # the first steps compile the step and fill caches
        trainer.train_on_batch(images, labels)

    def step_seconds():
        started = time.perf_counter()
        for _ in range(3):
            trainer.train_on_batch(images, labels)
        return (time.perf_counter() - started) / 3

    return step_seconds


def measure(build, images, labels):
    """Seconds a training step takes in each precision: a few real steps of both on a batch,
    alternating, the median of five rounds, so that a noisy moment does not decide. A precision the
    backend cannot train in here (its steps fail) is left out."""
    timers = {}
    for name in POLICIES:
        try:
            timers[name] = training_step_timer(build, images, labels, name)
        except Exception:  # noqa: BLE001 -- the CPU's kernels cannot run it (oneDNN without bfloat16): no choice
            if name == "float32":
                raise
    samples = {name: [] for name in timers}
    for _ in range(5):
        for name, timer in timers.items():
            samples[name].append(timer())
    return {name: float(np.median(seconds)) for name, seconds in samples.items()}


def describe(timings):
    """'19.1 ms a step in float32, 11.5 in bfloat16' ('bfloat16 cannot run here' where it failed)."""
    bfloat16 = f"{1000 * timings['bfloat16']:.1f} in bfloat16" if "bfloat16" in timings else "bfloat16 cannot run here"
    return f"{1000 * timings['float32']:.1f} ms a step in float32, {bfloat16}"


KERNEL_SETTINGS = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA")  # which kernels TensorFlow runs on the CPU


def cache_path():
    """Where measured precisions are remembered: $XDG_CACHE_HOME (or ~/.cache)/handwritten-digits/."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "handwritten-digits" / "precision.json"


def machine_key(device, network):
    """What a measurement holds for: this CPU (its name, cores and instruction sets, and the settings
    that choose its kernels), Keras, the backend and their versions, and the network and batch
    (`network`, a description) it was measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        info = Path("/proc/cpuinfo").read_text()
        cpu = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), cpu)
        flags = next((line for line in info.splitlines() if line.startswith(("flags", "Features"))), "")
        cpu += " " + hashlib.sha256(flags.encode()).hexdigest()[:12]
    except OSError:
        pass
    backend = keras.backend.backend()
    package = {"tensorflow": "tensorflow", "jax": "jaxlib", "torch": "torch"}.get(backend, backend)
    try:
        version = importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        version = "?"
    kernels = "".join(f" {name}={os.environ[name]}" for name in KERNEL_SETTINGS if name in os.environ)
    return f"{cpu}{kernels} | {device} | keras {keras.__version__} | {backend} {version} | {network}"


def recall(path, key):
    """The timings remembered for `key` (float32's, and bfloat16's where it could run), or None (no
    file, another machine, an unreadable file)."""
    try:
        entry = json.loads(path.read_text()).get(key)
        timings = {name: float(seconds) for name, seconds in entry["timings"].items() if name in POLICIES}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return timings if "float32" in timings and all(0 < t < 60 for t in timings.values()) else None


def remember(path, key, timings, keep=20):
    """Add `timings` for `key` to the file (the newest `keep` kept), written whole or not at all;
    a cache that cannot be written is only not remembered."""
    try:
        entries = json.loads(path.read_text())
        entries = entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        entries = {}
    entries.pop(key, None)
    entries[key] = {"timings": timings, "measured": datetime.date.today().isoformat()}
    entries = dict(list(entries.items())[-keep:])
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(entries, indent=1) + "\n")
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()


class Precision(NamedTuple):
    """The precision chosen, the device, the seconds a step took in each (None unless measured),
    and whether those timings were remembered from an earlier run rather than measured now."""

    name: str
    device: str
    timings: dict | None
    remembered: bool = False


def choose_precision(requested, build, images, labels, network=None):
    """float32 or bfloat16 as `requested`, or for 'auto' the one that suits the device.

    On a GPU, bfloat16 where it computes it natively. On a CPU no flag tells: AVX512-BF16 made this
    network 1.6x faster on an AMD EPYC and slower on an Intel Xeon. So time real training steps of
    both (see measure) and keep the faster. With `network` (a description of the network and batch
    built), the timings are remembered per machine in cache_path() and reused: the next run on this
    machine, with this Keras and backend, skips the measurement. The chosen policy is left set.
    """
    device, gpu_bfloat16 = describe_device()
    timings, remembered = None, False
    if requested != "auto":
        name = requested
    elif device.startswith("GPU"):
        name = "bfloat16" if gpu_bfloat16 else "float32"
    else:
        key = network and machine_key(device, network)
        timings = key and recall(cache_path(), key)
        remembered = bool(timings)
        if not timings:
            timings = measure(build, images, labels)
            if key:
                remember(cache_path(), key, timings)
        name = min(timings, key=timings.get)
    use_precision(name)
    return Precision(name, device, timings, remembered)


def float32_network(network, build):
    """The trained network as it is evaluated and saved: in float32 throughout.

    Under mixed precision the weights are float32 already and only the computing is bfloat16; a
    network saved that way would make --predict and --draw compute in bfloat16 too, slowly on a CPU
    without bfloat16 instructions. So a network trained in bfloat16 is rebuilt (by `build`) under
    float32 with the same weights; a float32 one is returned as it is. The float32 policy stays set.
    """
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in network.layers):
        return network
    use_precision("float32")
    copy = build()
    copy.set_weights(network.get_weights())
    return copy
