"""The precision choice: float32 or bfloat16 mixed precision, whichever trains faster here."""

import time
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


class Precision(NamedTuple):
    """The precision chosen, the device, and the seconds a step took in each (None unless measured)."""

    name: str
    device: str
    timings: dict | None


def choose_precision(requested, build, images, labels):
    """float32 or bfloat16 as `requested`, or for 'auto' the one that suits the device.

    On a GPU, bfloat16 where it computes it natively. On a CPU no flag tells: AVX512-BF16 made this
    network 1.6x faster on an AMD EPYC and slower on an Intel Xeon. So time a few real training
    steps of both on a batch, alternating, and keep the faster by the median: a noisy moment does
    not decide. The chosen policy is left set.
    """
    device, gpu_bfloat16 = describe_device()
    timings = None
    if requested != "auto":
        name = requested
    elif device.startswith("GPU"):
        name = "bfloat16" if gpu_bfloat16 else "float32"
    else:
        timers = {name: training_step_timer(build, images, labels, name) for name in POLICIES}
        samples = {name: [] for name in timers}
        for _ in range(5):
            for name, timer in timers.items():
                samples[name].append(timer())
        timings = {name: float(np.median(seconds)) for name, seconds in samples.items()}
        name = min(timings, key=timings.get)
    use_precision(name)
    return Precision(name, device, timings)


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
