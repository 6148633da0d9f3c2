"""The one backend-specific place: what Keras has no portable call for.

Loading Keras quietly, naming the device and whether it computes bfloat16 natively, deterministic
kernels, how many steps one call into the backend may run, how the training batches are fed, and
TensorBoard's log writer. Each backend's own module is imported only inside the function that
needs it.
"""

import contextlib
import os
import platform
import sys
from typing import NamedTuple

from digits.errors import InputError, SetupError, one_line

BACKENDS = "tensorflow, jax or torch"  # those this program is tested on (README: Backends and GPUs)
SMALL_CPU = 4  # cores: up to this many, the training batches are gathered without input threads


@contextlib.contextmanager
def silenced_stderr():
    """Within the block, whatever is written to file descriptor 2 is dropped: the backends' C++
    start-up logs ignore TF_CPP_MIN_LOG_LEVEL and Python's own sys.stderr alike."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def load_keras():
    """Import Keras and let its backend probe the devices with stderr silenced; return keras.

    TensorFlow's C++ start-up logs ("oneDNN custom operations are on", "Could not find cuda
    drivers") would bury the program's own output; so would its C++ log lines of level ERROR later
    (with --seed, two 900-character "E0000 ... use_unbounded_threadpool" lines; "oneDNN supports
    DT_BOOL only on platforms with AVX-512"), which are no errors of the run: TF_CPP_MIN_LOG_LEVEL 3,
    unless set already. Python's errors and warnings are not C++ logs: they still show. Ctrl-C while
    the backend loads ends the program with one line, not a traceback from inside it.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if platform.machine().lower() in ("x86_64", "amd64"):
        # TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX512-VNNI, AVX512-BF16
        # or AMX; on the rest (AVX2 laptops, AMD Zen 3) it trains on its older Eigen kernels, an
        # epoch 1.37 times as long for this network (docs/speed.md). Asked for, oneDNN runs on any x86 CPU.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    try:
        with silenced_stderr():
            import keras

            if keras.backend.backend() != "torch":  # Keras lists no devices for PyTorch, which logs nothing here
                keras.distribution.list_devices()  # the GPU probe logs too: let it do so now, silenced
    except KeyboardInterrupt:
        print("\nInterrupted while loading Keras; nothing was done.", file=sys.stderr)
        raise SystemExit(130)
    except (ImportError, ValueError) as e:  # Keras missing, a backend it does not know, or one not installed
        raise cannot_load(e) from None
    return keras


def cannot_load(error):
    """Why `import keras` failed, as a SetupError that says what to install or set."""
    if isinstance(error, ImportError) and error.name == "keras":
        return SetupError(f"Keras is not installed ({one_line(error)}): pip install -r requirements.txt")
    config = sys.modules.get("keras.src.backend.config")  # read before the failure: names the backend chosen
    name = config.backend() if config else os.environ.get("KERAS_BACKEND", "tensorflow")
    chosen = (f"KERAS_BACKEND={name}" if os.environ.get("KERAS_BACKEND")
              else f"the backend {name!r} of {getattr(config, '_config_path', '~/.keras/keras.json')}")
    if isinstance(error, ValueError) and "Unable to import backend" in str(error):
        return SetupError(f"{chosen} is not a Keras backend: set KERAS_BACKEND to {BACKENDS}")
    return SetupError(f"{chosen}, but Keras cannot load it ({type(error).__name__}: {one_line(error)}): "
                      f"pip install {name}, or set KERAS_BACKEND to another of {BACKENDS}")


class Batches(NamedTuple):
    """What Model.fit reads: x, y, batch_size and shuffle as its arguments of those names (y and
    batch_size None where x is a dataset of batches)."""

    x: object
    y: object
    batch_size: int | None
    shuffle: bool

    @property
    def validation_data(self):
        """As fit's validation_data takes them."""
        return self.x if self.y is None else (self.x, self.y)


def batches(images, labels, batch_size, shuffle):
    """Batches of `batch_size` of `images` and `labels` (reshuffled every epoch if `shuffle`), as
    Model.fit reads them.

    On TensorFlow on a CPU of a few cores, a tf.data pipeline that adds no threads of its own: each
    batch is gathered by index from the arrays, in the thread that asks for it, when it asks.
    Keras' own pipeline for arrays gathers and prefetches batches in threads of its own beside the
    training step; on 2 cores that put about half the epochs in a mode twice as slow, the cores
    idle half the time for the same work (benchmarks/epoch_modes.py, docs/speed.md). Elsewhere the
    arrays, as Keras takes them.
    """
    if backend_name() != "tensorflow" or (os.cpu_count() or 1) > SMALL_CPU:
        return Batches(images, labels, batch_size, shuffle)
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    images, labels = tf.constant(images), tf.constant(labels)
    count = int(images.shape[0])
    order = tf.data.Dataset.range(count)
    if shuffle:
        order = order.shuffle(count, reshuffle_each_iteration=True)
    dataset = order.batch(batch_size).map(lambda i: (tf.gather(images, i), tf.gather(labels, i)))
    return Batches(dataset.with_options(options), None, None, False)  # shuffled by the dataset itself


def import_tensorflow_quietly():
    """Import TensorFlow, if installed, with its start-up logs silenced; whether it is installed.

    Keras imports TensorFlow whatever the backend where it is installed, to save a .keras file
    (its serialiser checks for TensorFlow's shapes) or write TensorBoard logs; on the JAX or
    PyTorch backend that import would print TensorFlow's logs in the middle of the run.
    """
    try:
        with silenced_stderr():
            import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def save_model(model, path):
    """model.save(path), without TensorFlow's start-up logs on the other backends."""
    import_tensorflow_quietly()
    model.save(path)


def backend_name():
    """'tensorflow', 'jax' or 'torch'."""
    import keras

    return keras.backend.backend()


def steps_per_execution():
    """Training steps per call into the backend, so less Python runs between batches; Keras'
    PyTorch trainer only takes one."""
    return 1 if backend_name() == "torch" else 16


def describe_device():
    """('GPU (name)' or 'CPU (N cores)', whether that GPU computes bfloat16 natively)."""
    backend = backend_name()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            native = details.get("compute_capability", (0,)) >= (8, 0)
            return f"GPU ({details.get('device_name', gpus[0].name)})", native
    elif backend == "jax":
        import jax

        if jax.default_backend() == "gpu":
            gpu = jax.devices()[0]
            return f"GPU ({gpu.device_kind})", float(getattr(gpu, "compute_capability", 0)) >= 8
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            return f"GPU ({torch.cuda.get_device_name()})", torch.cuda.is_bf16_supported()
    return f"CPU ({os.cpu_count()} cores)", False


def seed_everything(seed):
    """Fix every random number with `seed`; TensorFlow also needs its deterministic kernels asked for.

    Keras seeds TensorFlow too wherever it is installed, whatever the backend: it is imported
    quietly first (see import_tensorflow_quietly).
    """
    import keras

    import_tensorflow_quietly()
    keras.utils.set_random_seed(seed)
    if backend_name() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def tensorboard_callback(logs):
    """A TensorBoard callback writing to the folder `logs`, refused up front where TensorFlow and
    TensorBoard, its log writer whatever the backend, are not installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        tensorboard = None
    if tensorboard is None or not import_tensorflow_quietly():
        raise InputError("TensorBoard logs are written with TensorFlow and TensorBoard, whatever the backend: "
                         "pip install tensorflow tensorboard")
    import keras

    if backend_name() != "tensorflow":  # TensorFlow's first look for a GPU logs too: let it, silenced
        import tensorflow as tf

        with silenced_stderr():
            tf.config.list_physical_devices()
    return keras.callbacks.TensorBoard(logs, write_graph=False)
