"""Train a small convolutional network on MNIST, then show how well it did and where it goes wrong.

    python handwritten_digit_classification.py                 # train 10 epochs, write outputs/
    python handwritten_digit_classification.py --predict my_digit.jpg

The network is Conv2D(32) -> MaxPool -> Conv2D(64) -> MaxPool -> Dense(100) -> Dense(10), 179,926
parameters, trained with Adam on the copy of MNIST bundled in data/mnist/ (no internet needed).
The run prints the test accuracy and writes to outputs/: confusion_matrix.png, training_curves.png,
misclassified.png, filters.png, model.keras and metrics.json.

The file reads top to bottom: data, model, training, evaluation, reports, your own digits, command line.
"""

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import signal
import sys
import tempfile
import time
import zipfile
import zlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window: runs on servers and in CI

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from PIL import Image, ImageOps, UnidentifiedImageError

# TensorFlow's C++ start-up logs ("oneDNN custom operations are on", "Could not find cuda drivers")
# ignore TF_CPP_MIN_LOG_LEVEL and would bury the program's own output: hide stderr while it loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_stderr, _devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
os.dup2(_devnull, 2)
try:
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices("GPU")  # the CUDA probe logs too; let it do so now, silenced
finally:
    os.dup2(_stderr, 2)
    os.close(_stderr)
    os.close(_devnull)

HERE = Path(__file__).resolve().parent
BUNDLED_DIR = HERE / "data" / "mnist"
NUM_CLASSES = 10
IMAGE_SIZE = 28


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

# SHA-256 of each decompressed file, as published for the original MNIST.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class InputError(Exception):
    """A problem the user can fix (bad data, bad path): printed as one line, exit status 2."""


def read_idx(path, ndim):
    """Read one IDX file (gzipped or raw) into a uint8 array, refusing anything malformed."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, OSError, zlib.error) as e:
            raise InputError(f"{path} is a truncated or corrupt gzip file ({e}): download it again")
    if len(raw) < 4 or raw[:3] != b"\x00\x00\x08" or raw[3] != ndim:
        kind = "images (magic 0x00000803)" if ndim == 3 else "labels (magic 0x00000801)"
        raise InputError(f"{path} is not an IDX file of {kind}: check that the file is MNIST-style IDX")
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if len(raw) != header + int(np.prod(shape)):
        raise InputError(f"{path} holds {len(raw) - header} bytes of data where its header "
                         f"promises {shape}: the file is truncated, download it again")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape), raw


def find_idx_file(folder, name):
    """MNIST files circulate as train-images-idx3-ubyte and train-images.idx3-ubyte, gzipped or not."""
    dotted = name.replace("-idx", ".idx")
    for candidate in (name, name + ".gz", dotted, dotted + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise InputError(f"{folder} has no {name}[.gz] (nor {dotted}[.gz]): "
                     f"a data folder needs all four MNIST IDX files")


def load_idx_folder(folder, verify_checksums=False):
    arrays = []
    for name in MNIST_SHA256:
        path = find_idx_file(folder, name)
        array, raw = read_idx(path, ndim=3 if "images" in name else 1)
        if verify_checksums and hashlib.sha256(raw).hexdigest() != MNIST_SHA256[name]:
            raise InputError(f"{path} does not match MNIST's published SHA-256: the bundled copy is "
                             f"damaged, restore it with `git checkout -- data/mnist` or use --data keras")
        arrays.append(array)
    return arrays


def load_npz(path):
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a .npz file (a zip of .npy arrays): save it with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as npz:  # never unpickle: a .npz can carry code
            missing = [key for key in NPZ_KEYS if key not in npz.files]
            if missing:
                raise InputError(f"{path} lacks {', '.join(missing)}: a .npz needs the arrays "
                                 f"{', '.join(NPZ_KEYS)} (Keras' mnist.npz layout)")
            return [npz[key] for key in NPZ_KEYS]
    except ValueError as e:  # object arrays need pickle, which allow_pickle=False refuses
        raise InputError(f"{path} holds object arrays, which are refused (they would need "
                         f"unpickling): save plain numeric arrays ({e})")
    except (OSError, zlib.error, EOFError) as e:
        raise InputError(f"{path} is not a readable .npz file ({e})")


def load_keras_mnist():
    try:
        return keras.datasets.mnist.load_data()
    except Exception as e:  # no network, proxy, partial download: all end the same way for the user
        reason = " ".join(str(e).split())  # one line, whatever the network stack said
        raise InputError(f"could not download MNIST through Keras ({type(e).__name__}: {reason}); "
                         f"use the bundled copy or pass --data PATH to a folder or .npz")


def check_arrays(arrays, source):
    x_train, y_train, x_test, y_test = (np.asarray(a) for a in arrays)
    for split, x, y in (("training", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 3 or x.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
            raise InputError(f"{source}: {split} images have shape {x.shape}, expected (N, 28, 28)")
        if y.ndim != 1 or len(y) != len(x):
            raise InputError(f"{source}: {len(x)} {split} images but labels of shape {y.shape}: "
                             f"images and labels must match one to one")
        if len(x) == 0:
            raise InputError(f"{source}: the {split} set is empty")
        if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= NUM_CLASSES:
            raise InputError(f"{source}: {split} labels must be integers 0-9, found {y.dtype} "
                             f"from {y.min()} to {y.max()}")
        if not np.issubdtype(x.dtype, np.number) or x.min() < 0 or x.max() > 255:
            raise InputError(f"{source}: {split} images must be pixel values 0-255, found {x.dtype} "
                             f"from {x.min()} to {x.max()}")
    return x_train, y_train.astype("int32"), x_test, y_test.astype("int32")


def load_mnist(source):
    """Return (x_train, y_train, x_test, y_test) as raw arrays, and a description of where they came from."""
    if source == "bundled" and not BUNDLED_DIR.is_dir():
        source = "keras"
    if source == "bundled":
        arrays, description = load_idx_folder(BUNDLED_DIR, verify_checksums=True), f"bundled ({BUNDLED_DIR})"
    elif source == "keras":
        (x_train, y_train), (x_test, y_test) = load_keras_mnist()
        arrays, description = [x_train, y_train, x_test, y_test], "keras.datasets.mnist"
    else:
        path = Path(source)
        if path.is_dir():
            arrays = load_idx_folder(path)
        elif path.is_file() and path.suffix == ".npz":
            arrays = load_npz(path)
        elif path.exists():
            raise InputError(f"--data {source} is neither a folder of IDX files nor a .npz file")
        else:
            raise InputError(f"--data {source} does not exist: give 'bundled', 'keras', "
                             f"a folder of MNIST IDX files or a .npz file")
        description = str(path.resolve())
    return check_arrays(arrays, description), description


def preprocess(images):
    """(N, 28, 28) pixels 0-255 -> (N, 28, 28, 1) float32 in [0, 1], the form the network reads.

    Takes NumPy arrays, and TensorFlow tensors inside the input pipeline, where the training images
    stay uint8 until each batch is used: a quarter of the memory of converting them all up front.
    """
    return keras.ops.cast(keras.ops.reshape(images, (-1, IMAGE_SIZE, IMAGE_SIZE, 1)), "float32") / 255


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def cpu_has_fast_bfloat16():
    """Only AMX (Sapphire Rapids on) makes bfloat16 training faster here.

    AVX512-BF16 alone computes bfloat16 natively too, but measured on such a CPU with TensorFlow
    2.21 mixed_bfloat16 trained this network slower than float32 (see the README's benchmark).
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: assume no
        return False
    return "amx_bf16" in flags


def choose_precision(requested):
    """Pick float32 or bfloat16 and describe the device; auto means bfloat16 only where it is faster."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"GPU ({details.get('device_name', gpus[0].name)})"
        fast_bf16 = tuple(details.get("compute_capability", (0, 0))) >= (8, 0)
    else:
        device = f"CPU ({os.cpu_count()} cores)"
        fast_bf16 = cpu_has_fast_bfloat16()
    if requested == "auto":
        return ("bfloat16" if fast_bf16 else "float32"), device
    return requested, device


CNN_FILTERS = (32, 64)
CNN_DENSE_UNITS = 100
ARCHITECTURES = ("cnn", "resnet")


def max_conv_blocks(size=IMAGE_SIZE):
    """How many Conv2D 3x3 + MaxPool 2x2 blocks fit an image of this size: 28 -> 13 -> 5 -> 1, so 3."""
    blocks = 0
    while size - 2 >= 2:  # the convolution takes 2 pixels, the pooling then needs at least 2
        size, blocks = (size - 2) // 2, blocks + 1
    return blocks


def build_model(filters=CNN_FILTERS, dense_units=CNN_DENSE_UNITS):
    """The cnn family: one Conv2D 3x3 + ReLU + MaxPool 2x2 block per number in filters, Flatten,
    an optional hidden Dense layer, softmax. The defaults are the notebook's network, 179,926 parameters.
    """
    filters = tuple(filters)
    allowed = max_conv_blocks()
    shown = " ".join(map(str, filters))
    if not filters:
        raise InputError("--filters needs at least one number: the filters of each convolution block")
    if any(n < 1 for n in filters):
        raise InputError(f"--filters {shown}: every number of filters must be at least 1")
    if len(filters) > allowed:
        raise InputError(f"--filters {shown} asks for {len(filters)} convolution blocks, but a 28x28 image "
                         f"allows at most {allowed} (28 -> 13 -> 5 -> 1 pixels): give at most {allowed} numbers")
    if dense_units < 0:
        raise InputError(f"--dense-units {dense_units}: give 0 (no hidden layer) or a positive number")
    layers = [keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1))]
    for n in filters:
        layers += [keras.layers.Conv2D(n, (3, 3), activation="relu"), keras.layers.MaxPooling2D((2, 2))]
    layers.append(keras.layers.Flatten())
    if dense_units:
        layers.append(keras.layers.Dense(dense_units, activation="relu"))
    # Under mixed precision the softmax still runs in float32, so probabilities sum to 1.
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"))
    return keras.Sequential(layers, name="mnist_cnn")


RESNET_STAGES = ((16, 1), (32, 1), (64, 2))  # (channels, residual blocks) at 28x28, 14x14, 7x7


def conv_bn(x, channels, strides, name, relu=True):
    """3x3 convolution, batch normalisation (which makes the convolution's bias redundant), ReLU."""
    x = keras.layers.Conv2D(channels, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def residual_block(x, channels, strides, name):
    """Two 3x3 convolutions added to the block's input (He et al., 2016). Where the block halves the
    image or widens the channels, the input is brought to the new shape by a 1x1 convolution."""
    shortcut = x
    if strides != 1 or x.shape[-1] != channels:
        shortcut = keras.layers.Conv2D(channels, 1, strides=strides, use_bias=False, name=f"{name}_proj_conv")(x)
        shortcut = keras.layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    y = conv_bn(x, channels, strides, f"{name}_1")
    y = conv_bn(y, channels, 1, f"{name}_2", relu=False)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def build_resnet(stages=RESNET_STAGES):
    """A residual network sized for 28x28 digits and a CPU: 152,666 parameters.

    A 3x3 stem, then stages of residual blocks at 28x28, 14x14 and 7x7 (each later stage halves the
    image with a stride-2 convolution and doubles the channels), global average pooling, softmax.
    ResNet50 from keras.applications expects 224x224 photographs and would cost tens of times more.
    The extra block goes to the 7x7 stage: its convolutions cost the arithmetic of one at 28x28,
    but move a quarter of the activations through normalisation and see the whole digit.
    Only built-in Keras layers, so model.keras loads anywhere without this file.
    """
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1))
    x = conv_bn(inputs, stages[0][0], 1, "stem")
    for stage, (channels, blocks) in enumerate(stages, start=1):
        for block in range(1, blocks + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = residual_block(x, channels, strides, f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mnist_resnet")


def build_network(architecture="cnn", filters=None, dense_units=None):
    """The one entry point: architecture is 'cnn' or 'resnet'; None settings mean the family's defaults."""
    if architecture == "cnn":
        return build_model(CNN_FILTERS if filters is None else filters,
                           CNN_DENSE_UNITS if dense_units is None else dense_units)
    if architecture == "resnet":
        if filters is not None or dense_units is not None:
            raise InputError("--filters and --dense-units shape the cnn; the resnet has its own fixed "
                             "design: drop them or use --architecture cnn")
        return build_resnet()
    raise InputError(f"--architecture {architecture}: choose one of {', '.join(ARCHITECTURES)}")


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

EVAL_BATCH_SIZE = 1000  # inference needs no small batches: large ones keep the cores busy
STEPS_PER_EXECUTION = 16
PEAK_LEARNING_RATE = 3e-3


def augment_images(images):
    """Rotate (up to 10 degrees), zoom (10%) and shift (10%) each image at random, as handwriting varies.

    One combined affine transform per image, where Keras' RandomRotation, RandomZoom and
    RandomTranslation layers in a row would interpolate, and blur, three times.
    """
    count = tf.shape(images)[0]
    angle = tf.random.uniform([count], -10.0, 10.0) * (np.pi / 180)
    scale = tf.random.uniform([count], 0.9, 1.1)
    shift_x, shift_y = (tf.random.uniform([count], -0.1, 0.1) * IMAGE_SIZE for _ in range(2))
    # The transform maps each output pixel to where it is read from in the input.
    cos, sin, centre = tf.cos(angle) / scale, tf.sin(angle) / scale, (IMAGE_SIZE - 1) / 2
    zeros = tf.zeros([count])
    transform = tf.stack([cos, -sin, centre - (cos - sin) * centre + shift_x,
                          sin, cos, centre - (sin + cos) * centre + shift_y, zeros, zeros], axis=1)
    # fill 0: MNIST's background is black, not a mirror image of the digit
    return keras.ops.image.affine_transform(images, transform, fill_mode="constant", fill_value=0)


def make_datasets(x_train, y_train, x_test, y_test, batch_size, augment, seed):
    """tf.data pipelines from raw pixels: training shuffled every epoch (and augmented if asked), prefetched."""
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train))
    train = train.shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    prepare = (lambda x: augment_images(preprocess(x))) if augment else preprocess
    train = train.map(lambda x, y: (prepare(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(EVAL_BATCH_SIZE)
    test = test.map(lambda x, y: (preprocess(x), y))
    return train.prefetch(tf.data.AUTOTUNE), test.prefetch(tf.data.AUTOTUNE)


def make_optimizer(lr_schedule, epochs, steps_per_epoch):
    if lr_schedule == "cosine":
        # One epoch of warm-up to a higher peak, then cosine decay to zero: large early steps, fine late ones.
        warmup = min(steps_per_epoch, epochs * steps_per_epoch // 2)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            1e-4, decay_steps=epochs * steps_per_epoch - warmup, warmup_target=PEAK_LEARNING_RATE, warmup_steps=warmup)
    else:
        learning_rate = 1e-3  # Adam's default, as in the original
    return keras.optimizers.Adam(learning_rate)


class GracefulStop(keras.callbacks.Callback):
    """Ctrl-C or SIGTERM once: finish the batches under way, stop, save what was trained. Twice: quit.

    The handlers stay in place after training, so a second signal while saving also quits at once.
    """

    def __init__(self):
        super().__init__()
        self.interrupted = False
        self.epochs_completed = 0
        self.epoch_seconds = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.interrupted:
            for tmp in list(TEMP_FILES):
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            print("\nInterrupted: stopped at once, nothing new was saved.", file=sys.stderr, flush=True)
            os._exit(130)  # no exception: one raised inside TensorFlow's loops can crash the process
        self.interrupted = True
        if self.model is not None:
            self.model.stop_training = True
        print("\nStopping within a few batches to save what was trained; press Ctrl-C again to quit "
              "without saving.", file=sys.stderr, flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if not self.interrupted:  # the epoch cut short by a stop does not count as completed
            self.epochs_completed = epoch + 1
            self.epoch_seconds.append(round(time.perf_counter() - self._epoch_start, 3))


def train(model, train_ds, test_ds, epochs, optimizer):
    """Fit the model; the test set is only watched (for the curves), never used to choose anything."""
    # 16 steps per call into TensorFlow, less Python between batches: faster in side-by-side
    # trials on 2 CPU cores than one step per call.
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=STEPS_PER_EXECUTION)
    stop = GracefulStop()
    # shuffle=False: the dataset already reshuffles every epoch, Keras would only warn
    history = model.fit(train_ds, epochs=epochs, validation_data=test_ds, callbacks=[stop], shuffle=False,
                        verbose=1 if sys.stdout.isatty() else 2)  # a progress bar, or one line an epoch in logs
    completed = {key: [float(v) for v in values[: stop.epochs_completed]] for key, values in history.history.items()}
    completed["epoch_seconds"] = stop.epoch_seconds
    return completed, stop


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def evaluate(model, x_test, y_test):
    """Predict every test image once; loss, accuracy and the confusion matrix all come from that."""
    probabilities = model.predict(x_test, batch_size=EVAL_BATCH_SIZE, verbose=0)
    predicted = probabilities.argmax(axis=1)
    loss = float(keras.losses.sparse_categorical_crossentropy(y_test, probabilities).numpy().mean())
    confusion = tf.math.confusion_matrix(y_test, predicted, num_classes=NUM_CLASSES).numpy()
    accuracy = float(np.trace(confusion) / confusion.sum())
    return dict(loss=loss, accuracy=accuracy, probabilities=probabilities, predicted=predicted, confusion=confusion)


def per_class_report(confusion):
    """Precision, recall, F1 and support for each digit, read off the confusion matrix."""
    true_positives = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1)
    predicted_count = confusion.sum(axis=0)
    precision = np.divide(true_positives, predicted_count, out=np.zeros(NUM_CLASSES), where=predicted_count > 0)
    recall = np.divide(true_positives, support, out=np.zeros(NUM_CLASSES), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(NUM_CLASSES),
                   where=precision + recall > 0)
    return {
        str(digit): dict(precision=float(precision[digit]), recall=float(recall[digit]),
                         f1=float(f1[digit]), support=int(support[digit]))
        for digit in range(NUM_CLASSES)
    }


def most_confused(confusion, top=5):
    mistakes = confusion * (1 - np.eye(NUM_CLASSES, dtype=confusion.dtype))
    order = np.argsort(mistakes, axis=None)[::-1][:top]
    pairs = [np.unravel_index(i, mistakes.shape) for i in order]
    return [dict(true=int(t), predicted=int(p), count=int(mistakes[t, p])) for t, p in pairs if mistakes[t, p] > 0]


def format_report(per_class, confused):
    lines = ["digit  precision  recall     f1  support"]
    lines += [f"{digit:>5}  {r['precision']:9.4f}  {r['recall']:6.4f}  {r['f1']:.4f}  {r['support']:7d}"
              for digit, r in per_class.items()]
    lines.append("Most confused (true -> predicted: count): "
                 + (", ".join(f"{c['true']} -> {c['predicted']}: {c['count']}" for c in confused) or "none"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


TEMP_FILES = set()  # being written right now: a hard stop deletes them


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`, renamed onto it only when the block succeeds.

    A reader never sees a half-written file, and a failed or interrupted run leaves the
    previous run's file as it was.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    TEMP_FILES.add(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        TEMP_FILES.discard(tmp)
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_figure(fig, path):
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)


def plot_confusion_matrix(confusion, accuracy, path):
    """Counts in every cell; colour only for the mistakes, so the off-diagonal cells stand out."""
    support = confusion.sum(axis=1, keepdims=True)
    error_share = 100 * confusion / np.maximum(support, 1)
    diagonal = np.eye(NUM_CLASSES, dtype=bool)
    labels = np.where(confusion > 0, confusion.astype(str), "")
    fig, ax = plt.subplots(figsize=(9, 7.5))
    sns.heatmap(error_share, mask=diagonal, annot=labels, fmt="", cmap="Reds", vmin=0,
                vmax=max(error_share[~diagonal].max(), 0.5), linewidths=0.5, linecolor="#dddddd",
                cbar_kws={"label": "% of the true digit's images predicted as this digit"}, ax=ax)
    sns.heatmap(confusion, mask=~diagonal, annot=labels, fmt="", cmap=["#d9ead3"], cbar=False,
                annot_kws={"color": "#274e13", "weight": "bold"}, linewidths=0.5, linecolor="#dddddd", ax=ax)
    ax.set_xlabel("Predicted")
    ax.set_ylabel("True")
    ax.set_title(f"Confusion matrix: test accuracy {accuracy:.2%} on {int(confusion.sum()):,} images\n"
                 f"green diagonal = correct; red = mistakes, darker = a larger share of that digit",
                 fontsize=11)
    ax.tick_params(axis="y", rotation=0)
    save_figure(fig, path)


def plot_training_curves(history, path):
    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[metric], "o-", label="training")
        ax.plot(epochs, history[f"val_{metric}"], "s--", label="test (watched only, never used to tune)")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves")
    save_figure(fig, path)


def plot_misclassified(x_test, y_test, evaluation, path, limit=36):
    predicted, probabilities = evaluation["predicted"], evaluation["probabilities"]
    wrong = np.flatnonzero(predicted != y_test)
    wrong = wrong[np.argsort(-probabilities[wrong, predicted[wrong]])][:limit]  # most confident first
    columns = 6
    rows = max(1, -(-len(wrong) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 2.0 * rows + 0.6), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(x_test[i], cmap="gray_r")
        ax.set_title(f"true {y_test[i]}, pred {predicted[i]}\n{probabilities[i, predicted[i]]:.0%} sure",
                     fontsize=9, color="#990000")
    total = int((predicted != y_test).sum())
    title = (f"{total} misclassified test digits; the {len(wrong)} most confident mistakes" if total
             else "No misclassified test digits")
    fig.suptitle(title)
    save_figure(fig, path)


def grid_shape(count, most_columns=16):
    columns = min(most_columns, count)
    return -(-count // columns), columns


def plot_filters(model, digit, path, most=64):
    """The first convolution's learned kernels, and one digit seen through the first two convolutions.

    Any architecture: the first two Conv2D layers in the model's order, whatever their channel counts
    (a model with one convolution shows one). Where the first convolution reads several input
    channels, its kernels for channel 0 are shown; beyond `most` channels, the first `most`.
    """
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][:2]
    weights = convs[0].get_weights()[0]  # (height, width, input channels, filters)
    kernels = weights[:, :, 0, :]
    outputs = keras.Model(model.inputs, [conv.output for conv in convs]).predict(digit[None], verbose=0)
    maps = [np.asarray(m[0], np.float32) for m in (outputs if isinstance(outputs, list) else [outputs])]

    def shown(count, what):
        return f"{count} {what}" if count <= most else f"the first {most} of {count} {what}"

    channel = " for input channel 0" if weights.shape[2] > 1 else ""
    kernel_size = f"{weights.shape[0]}x{weights.shape[1]}"
    learned = shown(weights.shape[-1], f"learned {kernel_size} kernels")
    sections = [(kernels, f"First convolution: {learned}{channel} (red positive, blue negative)")]
    for m, name in zip(maps, ("The digit through the first convolution", "Through the second convolution")):
        sections.append((m, f"{name} ({shown(m.shape[-1], 'feature maps')}, {m.shape[0]}x{m.shape[1]})"))
    grids = [grid_shape(min(images.shape[-1], most)) for images, _ in sections]
    cell = 0.75  # inches for each small image
    widest = max(columns for _, columns in grids) + 1  # + 1: the input digit beside the first feature maps
    heights = [rows * cell + 0.45 for rows, _ in grids]  # + room for the section's title
    fig = plt.figure(figsize=(max(8, widest * cell), sum(heights)), layout="constrained")
    subfigures = fig.subfigures(len(sections), 1, height_ratios=heights, squeeze=False).flat
    for k, (subfig, (images, title), (rows, columns)) in enumerate(zip(subfigures, sections, grids)):
        axes = subfig.subplots(rows, columns + (k == 1), squeeze=False)
        for ax in axes.flat:
            ax.set_axis_off()
        if k == 1:
            axes[0, 0].imshow(digit[:, :, 0], cmap="gray_r")
            axes[0, 0].set_title("input", fontsize=9)
            axes = axes[:, 1:]
        limit = np.abs(kernels).max() or 1  # one colour scale for all kernels, zero in white
        for i, ax in enumerate(axes.flat[: min(images.shape[-1], most)]):
            if k == 0:
                ax.imshow(images[:, :, i], cmap="RdBu_r", vmin=-limit, vmax=limit)
            else:
                ax.imshow(images[:, :, i], cmap="viridis")
        subfig.suptitle(title)
    save_figure(fig, path)


def write_json(data, path):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2) + "\n")


def save_model(model, path):
    with atomic_path(path) as tmp:
        model.save(tmp)


# ---------------------------------------------------------------------------------------------
# Your own digits
# ---------------------------------------------------------------------------------------------


def read_image(path):
    """Any PNG or JPEG as grayscale in [0, 1]; a transparent background counts as white paper."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)  # phones store rotation in EXIF, not in the pixels
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
        return np.asarray(image.convert("L"), dtype=np.float32) / 255


def _sliding(array, size, reduce):
    """Min or max over a size x size window (separable, edge-padded): grey-scale erosion or dilation."""
    pad = size // 2
    for axis in (0, 1):
        padded = np.pad(array, [(pad, pad) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        array = reduce(np.lib.stride_tricks.sliding_window_view(padded, size, axis=axis), axis=-1)
    return array


def otsu_threshold(values):
    """The threshold that best splits values in [0, 1] into two classes (Otsu, 1979)."""
    counts, edges = np.histogram(values, bins=256, range=(0, 1))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(counts * centres) / np.maximum(weight_low, 1)
    mean_high = ((counts * centres).sum() - np.cumsum(counts * centres)) / np.maximum(weight_high, 1)
    return centres[np.argmax(weight_low * weight_high * (mean_low - mean_high) ** 2)]


def to_mnist_form(gray):
    """Turn a photo or scan of one digit into what the network was trained on.

    MNIST digits are light ink on black, scaled so the longer side is 20 pixels and centred by
    their centre of mass in a 28x28 frame. Returns None when no ink is found.
    """
    border = np.concatenate([gray[:2].ravel(), gray[-2:].ravel(), gray[:, :2].ravel(), gray[:, -2:].ravel()])
    if gray.shape == (IMAGE_SIZE, IMAGE_SIZE) and border.mean() < 0.1:
        return gray  # already MNIST-shaped: leave it exactly as it is
    scale = 256 / max(gray.shape)
    if scale < 1:  # large photos carry no more useful detail for a 20-pixel digit; this keeps it fast
        gray = np.asarray(Image.fromarray(gray).resize(
            (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))), Image.BOX))
    ink = 1 - gray if np.median(gray) > 0.5 else gray  # paper covers most of the picture
    # Uneven light: a grey-scale opening wider than any stroke keeps only the background; remove it.
    size = max(3, max(ink.shape) // 6) | 1
    ink = ink - _sliding(_sliding(ink, size, np.min), size, np.max)
    if ink.max() < 0.15:
        return None
    ink = np.where(ink > otsu_threshold(ink.ravel()), ink, 0)  # paper noise and JPEG speckle
    ink = np.clip(ink / np.percentile(ink[ink > 0], 90), 0, 1)
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = ink.shape
    factor = 20 / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    digit = np.clip(np.asarray(Image.fromarray(ink).resize(size, Image.LANCZOS)), 0, 1)
    # Centre of mass to the frame's centre, as MNIST did; clipped so no stroke leaves the frame.
    ys, xs = np.indices(digit.shape)
    mass = digit.sum()
    top = int(np.clip(round(IMAGE_SIZE / 2 - (ys * digit).sum() / mass), 0, IMAGE_SIZE - digit.shape[0]))
    left = int(np.clip(round(IMAGE_SIZE / 2 - (xs * digit).sum() / mass), 0, IMAGE_SIZE - digit.shape[1]))
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return frame


def load_trained_model(path):
    if not path.is_file():
        raise InputError(f"no trained model at {path}: train first with "
                         f"`python {Path(__file__).name}` or pass --model PATH")
    try:
        return keras.models.load_model(path)
    except Exception as e:  # a foreign or damaged file: Keras raises many kinds
        raise InputError(f"{path} is not a model this program can load ({type(e).__name__}: {e})")


def predict_images(model, paths):
    """One line per image; unreadable images get their own line and the rest are still predicted."""
    readable, failed = [], 0
    for path in paths:
        try:
            gray = read_image(path)
        except FileNotFoundError:
            error = "no such file"
        except (UnidentifiedImageError, OSError) as e:
            error = f"not an image this program can read ({type(e).__name__})"
        else:
            digit = to_mnist_form(gray)
            error = None if digit is not None else "blank image: no digit found"
        if error:
            print(f"{path}: error: {error}", file=sys.stderr)
            failed += 1
        else:
            readable.append((path, gray, digit))
    if not readable:
        return [], failed
    digits = np.stack([digit for _, _, digit in readable])[..., None]
    results = []
    for (path, gray, digit), probabilities in zip(readable, model.predict(digits, verbose=0)):
        ranked = np.argsort(probabilities)[::-1]
        line = f"{path}: {ranked[0]} ({probabilities[ranked[0]]:.1%})"
        if probabilities[ranked[0]] < 0.9:  # unsure: show what else it might be
            line += ", else " + ", ".join(f"{d} ({probabilities[d]:.1%})" for d in ranked[1:3])
        print(line)
        results.append((path, gray, digit, int(ranked[0]), float(probabilities[ranked[0]])))
    return results, failed


def plot_predictions(results, path, limit=24):
    """Each input beside the 28x28 image the model saw, four pairs a row."""
    shown = results[:limit]
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(3.2 * columns, 1.9 * rows + 0.5), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    pairs = axes.reshape(rows * columns, 2)
    for (name, gray, digit, label, confidence), (left, right) in zip(shown, pairs):
        left.imshow(gray, cmap="gray", vmin=0, vmax=1)
        left.set_title(Path(name).name[:22], fontsize=8)
        right.imshow(digit, cmap="gray", vmin=0, vmax=1)
        right.set_title(f"sees: {label} ({confidence:.0%})", fontsize=8)
    more = f" (the first {limit} of {len(results)})" if len(results) > limit else ""
    fig.suptitle(f"Your images, and the 28x28 digit the model saw{more}")
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage dump buries the one line that matters
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv=None):
    parser = OneLineErrorParser(
        description="Train a CNN on MNIST, report how well it did and where it goes wrong; "
                    "or predict digits in your own images.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--data", default="bundled", metavar="{bundled,keras,PATH}",
                        help="bundled: data/mnist/ (falls back to keras if absent); keras: "
                             "keras.datasets.mnist (downloads); PATH: a folder of the four IDX files "
                             "(gzipped or raw) or a .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--epochs", type=positive_int, default=10, help="passes over the training images")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="training images per step")
    parser.add_argument("--seed", type=int, default=None,
                        help="make the run repeatable: the same seed gives the same numbers on the same "
                             "machine (turns on TensorFlow's deterministic ops, which may cost some speed)")
    parser.add_argument("--output-dir", default="outputs", type=Path,
                        help="where the pictures, model.keras and metrics.json go")
    parser.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                        help="train on the first N training images only (quick runs)")
    parser.add_argument("--limit-test", type=positive_int, default=None, metavar="N",
                        help="evaluate on the first N test images only")
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="auto: bfloat16 mixed precision where the hardware makes it faster (GPUs from "
                             "Ampere on, CPUs with AMX), float32 elsewhere")
    parser.add_argument("--augment", action="store_true",
                        help="randomly rotate (10 degrees), shift (10%%) and zoom (10%%) training images")
    parser.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                        help="Adam's learning rate: cosine, one epoch of warm-up to 0.003 then cosine "
                             "decay to 0; constant, Adam's default 0.001 throughout, as in the original")
    parser.add_argument("--predict", nargs="+", metavar="IMAGE",
                        help="predict the digit in each image with a trained model instead of training")
    parser.add_argument("--model", type=Path, default=None,
                        help="the trained model --predict uses; None means OUTPUT_DIR/model.keras")
    return parser.parse_args(argv)


def check_output_dir(path):
    """Refuse an output folder we could not write, before any time is spent training."""
    if path.exists() and not path.is_dir():
        raise InputError(f"--output-dir {path} is a file, not a folder: choose another path")
    existing = next(p for p in [path, *path.absolute().parents] if p.exists())
    if not existing.is_dir():
        raise InputError(f"--output-dir {path} cannot be created: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise InputError(f"--output-dir {path} is not writable ({e.strerror}): choose another folder")


def write_report(path, write, saved, failures):
    """Write one output with write(path); a failure is reported and the other outputs are still written."""
    try:
        write(path)
        saved.append(path)
    except Exception as e:  # e.g. a full disk or a folder in the file's place: keep the other outputs
        print(f"warning: could not write {path}: {type(e).__name__}: {e}", file=sys.stderr)
        failures.append(path)


def predict_main(args):
    model = load_trained_model(args.model or args.output_dir / "model.keras")
    results, failed = predict_images(model, args.predict)
    if results:
        check_output_dir(args.output_dir)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        saved = []
        write_report(args.output_dir / "predictions.png", lambda p: plot_predictions(results, p), saved, [])
        if saved:
            print(f"Saved: {saved[0]}")
    return 1 if failed else 0


def main(argv=None):
    args = parse_args(argv)
    if args.predict:
        return predict_main(args)
    started = time.perf_counter()
    check_output_dir(args.output_dir)
    (x_train, y_train, x_test, y_test), source = load_mnist(args.data)
    x_train, y_train = x_train[: args.limit_train], y_train[: args.limit_train]
    x_test, y_test = x_test[: args.limit_test], y_test[: args.limit_test]
    print(f"Data: {source}: {len(x_train):,} training and {len(x_test):,} test images")

    if args.seed is not None:
        keras.utils.set_random_seed(args.seed)
        tf.config.experimental.enable_op_determinism()
    precision, device = choose_precision(args.precision)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    print(f"Device: {device}, precision: {precision}")

    model = build_model()
    model.summary()
    train_ds, test_ds = make_datasets(x_train, y_train, x_test, y_test, args.batch_size, args.augment, args.seed)
    optimizer = make_optimizer(args.lr_schedule, args.epochs, len(train_ds))
    train_started = time.perf_counter()
    history, stop = train(model, train_ds, test_ds, args.epochs, optimizer)
    train_seconds = time.perf_counter() - train_started

    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    saved, failures = [], []
    write_report(out / "model.keras", lambda p: save_model(model, p), saved, failures)
    test_images = np.asarray(preprocess(x_test))
    evaluation = evaluate(model, test_images, y_test)
    per_class = per_class_report(evaluation["confusion"])
    confused = most_confused(evaluation["confusion"])
    write_report(out / "confusion_matrix.png", lambda p: plot_confusion_matrix(
        evaluation["confusion"], evaluation["accuracy"], p), saved, failures)
    if history["loss"]:  # stopped before the first epoch ended: no curve to draw
        write_report(out / "training_curves.png", lambda p: plot_training_curves(history, p), saved, failures)
    write_report(out / "misclassified.png", lambda p: plot_misclassified(x_test, y_test, evaluation, p),
                 saved, failures)
    write_report(out / "filters.png", lambda p: plot_filters(model, test_images[0], p), saved, failures)
    config = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
              if key not in ("predict", "model")}
    metrics = {
        "test_accuracy": evaluation["accuracy"],
        "test_loss": evaluation["loss"],
        "interrupted": stop.interrupted,
        "epochs_completed": stop.epochs_completed,
        "history": history,
        "per_class": per_class,
        "most_confused": confused,
        "confusion_matrix": evaluation["confusion"].tolist(),
        "config": {**config, "precision": precision, "device": device},
        "data": {"source": source, "train_images": len(x_train), "test_images": len(x_test)},
        "train_seconds": round(train_seconds, 2),
        "duration_seconds": round(time.perf_counter() - started, 2),
    }
    write_report(out / "metrics.json", lambda p: write_json(metrics, p), saved, failures)

    print(format_report(per_class, confused))
    if stop.interrupted:
        print(f"Interrupted after {stop.epochs_completed} of {args.epochs} epochs; saved what was trained.")
    print(f"Test accuracy: {evaluation['accuracy']:.4f}")
    print(f"Test loss: {evaluation['loss']:.4f}")
    print("Saved: " + ", ".join(str(path) for path in saved))
    if stop.interrupted:
        return 130
    return 1 if failures else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\nInterrupted: stopped at once, nothing new was saved.", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)  # skip interpreter teardown: it can crash while TensorFlow's input threads run
