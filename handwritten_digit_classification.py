"""Train a small convolutional network on MNIST, then show how well it did and where it goes wrong.

    python handwritten_digit_classification.py                 # train 10 epochs, write outputs/
    python handwritten_digit_classification.py --predict my_digit.jpg
    python handwritten_digit_classification.py --draw          # draw digits in the browser

The network is Conv2D(32) -> MaxPool -> Conv2D(64) -> MaxPool -> Dense(100) -> Dense(10), 179,926
parameters, trained with Adam on the copy of MNIST bundled in data/mnist/ (no internet needed).
The run prints the test accuracy and writes to outputs/: confusion_matrix.png, training_curves.png,
misclassified.png, filters.png, model.keras and metrics.json. Keras alone: any backend runs it.

The file reads top to bottom: data, model, training, evaluation, reports, your own digits, drawing
page, command line.
"""

import argparse
import base64
import contextlib
import errno
import functools
import gzip
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
import warnings
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no window: runs on servers and in CI

import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from PIL import Image, ImageDraw, ImageOps

# TensorFlow's C++ start-up logs ("oneDNN custom operations are on", "Could not find cuda drivers")
# ignore TF_CPP_MIN_LOG_LEVEL and would bury the program's own output: hide stderr while Keras
# loads its backend and probes the devices.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_stderr, _devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
os.dup2(_devnull, 2)
try:
    import keras

    if keras.backend.backend() != "torch":  # Keras lists no devices for PyTorch, which logs nothing here
        keras.distribution.list_devices()  # the GPU probe logs too: let it do so now, silenced
except KeyboardInterrupt:  # Ctrl-C while the backend loads: one line, not a traceback from inside it
    os.dup2(_stderr, 2)
    print("\nInterrupted while loading Keras; nothing was done.", file=sys.stderr)
    raise SystemExit(130)
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
# Bounds on what a data set of 28x28 digits can be, checked against a file's header before memory is
# spent on what it promises. EMNIST ByClass, among the largest, has 814,255 images in all.
MAX_IMAGES = 1_000_000
MAX_ARRAY_BYTES = 4 * 2**30
MAX_NPY_HEADER = 10_000  # numpy's own limit for loading a header safely
IMAGE_FORMS = {(IMAGE_SIZE, IMAGE_SIZE): "", (IMAGE_SIZE, IMAGE_SIZE, 1): "(N, 28, 28, 1) images, channel dropped",
               (IMAGE_SIZE * IMAGE_SIZE,): "rows of 784 pixels, reshaped to 28x28"}
SCALED = "float pixels in [0, 1], scaled to 0-255"
READ_CHUNK = 1 << 20  # inflate this much at a time: a read(n) allocates n bytes before it reads any


class InputError(Exception):
    """A problem the user can fix (bad data, bad path): printed as one line, exit status 2."""


def one_line(error):
    """A library's error message (numpy's can span lines) fit for the one-line report."""
    return " ".join(str(error).split()) or type(error).__name__


def split_of(key):
    """x_train -> ('training', 'images'), y_test -> ('test', 'labels')."""
    return ("training" if key.endswith("train") else "test"), ("images" if key.startswith("x") else "labels")


def check_shape(shape, split, kind, source):
    """Refuse a shape that cannot be N 28x28 images or N labels, from a header before its data is read."""
    if kind == "images":
        fits = len(shape) >= 2 and tuple(shape[1:]) in IMAGE_FORMS
        expected = "(N, 28, 28), (N, 28, 28, 1) or (N, 784)"
    else:
        fits = len(shape) == 1 or (len(shape) == 2 and shape[1] == NUM_CLASSES)
        expected = "(N,) class indices 0-9 (or (N, 10) one-hot)"
    if not fits or min(shape) < 0:
        raise InputError(f"{source}: {split} {kind} have shape {tuple(shape)}, expected {expected}")
    if shape[0] > MAX_IMAGES:
        raise InputError(f"{source}: {split} {kind} declare {shape[0]:,} entries, more than the {MAX_IMAGES:,} "
                         f"this program reads: the file is damaged, or not a data set of 28x28 digits")


def read_exactly(stream, size, path, shape):
    """Read the size bytes a header promised, in chunks, and refuse a stream that holds more or less.

    Memory is bounded by the promise, never by the stream: a gzip bomb is stopped one byte past it.
    """
    array = np.empty(size, np.uint8)  # pages are only committed as they are filled
    filled = 0
    while filled < size:
        chunk = stream.read(min(READ_CHUNK, size - filled))
        if not chunk:
            raise InputError(f"{path} holds {filled:,} bytes of data where its header promises {shape}: "
                             f"the file is truncated, download it again")
        array[filled : filled + len(chunk)] = np.frombuffer(chunk, np.uint8)
        filled += len(chunk)
    if stream.read(1):
        raise InputError(f"{path} holds more data than its header declares for shape {shape}: the file is damaged "
                         f"or not MNIST-style IDX, download it again")
    return array


def read_idx(path, ndim, split="", kind=""):
    """Read one IDX file (gzipped or raw) into a uint8 array; return it with the SHA-256 of its bytes.

    The 4-byte magic and the dimensions are read first, and nothing past what they promise is read.
    """
    kind = kind or ("images" if ndim == 3 else "labels")
    with path.open("rb") as file:
        gzipped = file.read(2) == b"\x1f\x8b"
        file.seek(0)
        stream = gzip.GzipFile(fileobj=file, mode="rb") if gzipped else file
        try:
            magic = stream.read(4)
            if len(magic) < 4 or magic[:3] != b"\x00\x00\x08" or magic[3] != ndim:
                what = "images (magic 0x00000803)" if ndim == 3 else "labels (magic 0x00000801)"
                raise InputError(f"{path} is not an IDX file of {what}: check that the file is MNIST-style IDX")
            dims = stream.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise InputError(f"{path} ends inside its header: the file is truncated, download it again")
            shape = tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            check_shape(shape, split or "the", kind, path)
            array = read_exactly(stream, int(np.prod(shape)), path, shape)
        except (EOFError, OSError, zlib.error) as e:
            if gzipped:
                raise InputError(f"{path} is a truncated or corrupt gzip file ({one_line(e)}): download it again")
            raise InputError(f"{path} could not be read ({one_line(e)})")
    digest = hashlib.sha256(magic + dims)
    digest.update(array)
    return array.reshape(shape), digest.hexdigest()


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
    for name, published in MNIST_SHA256.items():
        path = find_idx_file(folder, name)
        split, kind = ("training" if name.startswith("train") else "test"), name.split("-")[1]
        array, sha256 = read_idx(path, ndim=3 if kind == "images" else 1, split=split, kind=kind)
        if verify_checksums and sha256 != published:
            raise InputError(f"{path} does not match MNIST's published SHA-256: the bundled copy is "
                             f"damaged, restore it with `git checkout -- data/mnist` or use --data keras")
        arrays.append(array)
    return arrays


def read_npz_member(archive, member, key, path):
    """One array of a .npz, judged by its .npy header (dtype, shape, size) before any memory is spent on it."""
    info = archive.getinfo(member)
    with archive.open(info) as fp:
        version = np.lib.format.read_magic(fp)
        if version not in ((1, 0), (2, 0)):
            raise InputError(f"{path}: {key} is a .npy of version {version}, which is not read: "
                             f"save plain numeric arrays with numpy.savez")
        # numpy reads as long a header as the file says before it checks the length: check it first
        length = int.from_bytes(fp.read(2 if version == (1, 0) else 4), "little")
        if length > MAX_NPY_HEADER:
            raise InputError(f"{path}: {key} has a .npy header of {length:,} bytes where numpy writes at most "
                             f"a few hundred: the file is damaged, save it again with numpy.savez")
        fp.seek(fp.tell() - (2 if version == (1, 0) else 4))
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        try:
            shape, _, dtype = read_header(fp)
        except Exception as e:  # noqa: BLE001 (numpy parses the header with tokenize and ast: many kinds of error)
            raise InputError(f"{path}: {key} has a damaged .npy header ({type(e).__name__}: {one_line(e)}): "
                             f"save it again with numpy.savez")
        data_bytes = info.file_size - fp.tell()
    if dtype.hasobject:
        raise InputError(f"{path} holds object arrays, which are refused (they would need unpickling): "
                         f"save plain numeric arrays ({key} is {dtype})")
    if dtype.kind not in "biufc":
        raise InputError(f"{path}: {key} holds {dtype} values, not numbers: save plain numeric arrays")
    check_shape(shape, *split_of(key), path)
    size = int(np.prod(shape)) * dtype.itemsize
    if size > MAX_ARRAY_BYTES:
        raise InputError(f"{path}: {key} declares {shape} {dtype}, {size / 2**30:.1f} GiB: more than the "
                         f"{MAX_ARRAY_BYTES // 2**30} GiB an array this program reads (save images as uint8)")
    if size != data_bytes:
        raise InputError(f"{path}: {key} declares {shape} {dtype}, {size:,} bytes, but holds {data_bytes:,}: "
                         f"the file is damaged, save it again")
    with archive.open(info) as fp:
        return np.lib.format.read_array(fp, allow_pickle=False)  # never unpickle: a .npz can carry code


def load_npz(path):
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a .npz file (a zip of .npy arrays): save it with numpy.savez")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            missing = [key for key in NPZ_KEYS if key not in members]
            if missing:
                raise InputError(f"{path} lacks {', '.join(missing)}: a .npz needs the arrays "
                                 f"{', '.join(NPZ_KEYS)} (Keras' mnist.npz layout)")
            return [read_npz_member(archive, members[key], key, path) for key in NPZ_KEYS]
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile, ValueError, TypeError, KeyError,
            NotImplementedError, RuntimeError) as e:  # zipfile and numpy's ways of saying "damaged"
        raise InputError(f"{path} is not a readable .npz file ({type(e).__name__}: {one_line(e)}): "
                         f"save it again with numpy.savez")


def load_keras_mnist():
    try:
        return keras.datasets.mnist.load_data()
    except Exception as e:  # noqa: BLE001 (no network, proxy, partial download: all end the same way for the user)
        raise InputError(f"could not download MNIST through Keras ({type(e).__name__}: {one_line(e)}); "
                         f"use the bundled copy or pass --data PATH to a folder or .npz")


def to_pixels(x, split, source):
    """Images of any real dtype -> uint8 0-255, and how they were read (None: taken as they are).

    Floats whose maximum is at most 1 were saved as x / 255 (a common form): scaled back up, so the
    network sees the same pixels as from the uint8 file.
    """
    found = f"found {x.dtype}"
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise InputError(f"{source}: {split} images hold NaN or infinite values: every pixel must be a number "
                         f"0-255 (or a float in [0, 1])")
    if x.dtype.kind in "uif":
        low, high = x.min(), x.max()
        if low >= 0 and high <= 255:
            if x.dtype.kind != "f":
                return x.astype(np.uint8, copy=False), None
            if high <= 1:
                return np.rint(x * 255).astype(np.uint8), SCALED
            return np.rint(x).astype(np.uint8), "float pixels 0-255, rounded"
        found += f" from {low} to {high}"
    raise InputError(f"{source}: {split} images must be pixel values 0-255 (uint8, or floats in [0, 1]), {found}")


def to_labels(y, count, split, source):
    """Labels -> int32 class indices; exactly one-hot (N, 10) rows are read through argmax."""
    note = None
    if y.ndim == 2 and y.dtype.kind in "buif":
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise InputError(f"{source}: {split} labels of shape {y.shape} are not one-hot (a single 1 per row): "
                             f"pass class indices 0-9, e.g. labels.argmax(axis=1)")
        y, note = y.argmax(axis=1), "one-hot labels read as class indices"
    if y.ndim != 1 or len(y) != count:
        raise InputError(f"{source}: {count} {split} images but labels of shape {y.shape}: "
                         f"images and labels must match one to one")
    if count == 0:
        raise InputError(f"{source}: the {split} set is empty")
    if y.dtype.kind not in "ui" or y.min() < 0 or y.max() >= NUM_CLASSES:
        found = f" from {y.min()} to {y.max()}" if y.dtype.kind in "buif" else ""
        raise InputError(f"{source}: {split} labels must be integers 0-9, found {y.dtype}{found}")
    return y.astype("int32"), note


def check_arrays(arrays, source):
    """Refuse what is not a data set of 28x28 digits; return uint8 images, int32 labels, and notes on
    what was converted (for the run's "Data:" line)."""
    checked, notes, scales = [], [], {}
    for key, array in zip(NPZ_KEYS, arrays):
        array, (split, kind) = np.asarray(array), split_of(key)
        check_shape(array.shape, split, kind, source)
        if kind == "images":
            notes.append(IMAGE_FORMS[array.shape[1:]])
            images = array.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
            continue
        labels, note = to_labels(array, len(images), split, source)
        images, scales[split] = to_pixels(images, split, source)
        checked += [images, labels]
        notes += [note, scales[split]]
    if (scales["training"] == SCALED) != (scales["test"] == SCALED):
        raise InputError(f"{source}: the training images are {scales['training'] or 'pixels 0-255'} but the "
                         f"test images are {scales['test'] or 'pixels 0-255'}: save both on one scale")
    return tuple(checked), list(dict.fromkeys(note for note in notes if note))


def load_mnist(source):
    """Return (x_train, y_train, x_test, y_test), images uint8 (N, 28, 28) 0-255 and labels int32 0-9,
    and a description of where they came from and how they were read."""
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
        elif path.is_file() and path.suffix.lower() == ".npz":
            arrays = load_npz(path)
        elif path.exists():
            raise InputError(f"--data {source} is neither a folder of IDX files nor a .npz file")
        else:
            raise InputError(f"--data {source} does not exist: give 'bundled', 'keras', "
                             f"a folder of MNIST IDX files or a .npz file")
        description = str(path.resolve())
    arrays, notes = check_arrays(arrays, description)
    return arrays, description + (f" ({'; '.join(notes)})" if notes else "")


def preprocess(images):
    """(N, 28, 28) pixels 0-255 -> (N, 28, 28, 1) float32 in [0, 1], the form the saved model reads."""
    return np.asarray(images, np.float32).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1) / 255


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


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
# Batch normalisation's running statistics follow the last few dozen batches, not Keras' default
# last few hundred: a short run (an epoch of a few thousand images) otherwise predicts with
# statistics still close to their starting values, and reads every digit as one class.
BN_MOMENTUM = 0.9


def conv_bn(x, channels, strides, name, relu=True):
    """3x3 convolution, batch normalisation (which makes the convolution's bias redundant), ReLU."""
    x = keras.layers.Conv2D(channels, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def residual_block(x, channels, strides, name):
    """Two 3x3 convolutions added to the block's input (He et al., 2016). Where the block halves the
    image or widens the channels, the input is brought to the new shape by a 1x1 convolution."""
    shortcut = x
    if strides != 1 or x.shape[-1] != channels:
        shortcut = keras.layers.Conv2D(channels, 1, strides=strides, use_bias=False, name=f"{name}_proj_conv")(x)
        shortcut = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
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
LEARNING_RATES = {"cosine": 3e-3, "constant": 1e-3}  # the cosine's peak; Adam's default, as in the original
# Several training steps per call into the backend, so less Python runs between batches; Keras'
# PyTorch trainer only takes one.
STEPS_PER_EXECUTION = 1 if keras.backend.backend() == "torch" else 16


# --- The one backend-specific place: what Keras has no portable call for (and TensorBoard). ---


def describe_device():
    """('GPU (name)' or 'CPU (N cores)', whether that GPU computes bfloat16 natively)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        if gpus:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"GPU ({details.get('device_name', gpus[0].name)})", details.get("compute_capability", (0,)) >= (8, 0)
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


def make_deterministic():
    """--seed fixes every random number; TensorFlow also needs its deterministic kernels asked for."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()


def tensorboard_logs(output_dir):
    """A TensorBoard callback writing to OUTPUT_DIR/logs, refused up front where it cannot write."""
    try:  # the log writer is TensorFlow's with TensorBoard's summary ops, whatever the backend
        import tensorboard  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError:
        raise InputError("--tensorboard writes its logs with TensorFlow and TensorBoard, whatever the backend: "
                         "pip install tensorflow tensorboard, or drop --tensorboard")
    logs = output_dir / "logs"
    shutil.rmtree(logs, ignore_errors=True)  # one run's logs: a second run's steps would overlap them
    return keras.callbacks.TensorBoard(logs, write_graph=False)


# ----------------------------------------------------------------------------------------------


def affine_transforms(angle, scale, shift_x, shift_y):
    """Per-image transforms for keras.ops.image.affine_transform: turn by `angle` radians
    counter-clockwise, scale by `scale`, then move by (shift_x, shift_y) pixels, about the centre.

    Each row maps an output pixel to where it is read from in the input.
    """
    cos, sin = keras.ops.cos(angle) / scale, keras.ops.sin(angle) / scale
    centre = (IMAGE_SIZE - 1) / 2
    zeros = keras.ops.zeros_like(angle)
    return keras.ops.stack([cos, -sin, centre - (cos - sin) * centre - shift_x,
                            sin, cos, centre - (sin + cos) * centre - shift_y, zeros, zeros], axis=1)


class RandomAffine(keras.layers.Layer):
    """Rotate (up to 10 degrees), zoom (10%) and shift (10%) each training image at random.

    One combined transform per image, where Keras' RandomRotation, RandomZoom and RandomTranslation
    in a row would interpolate, and blur, three times. It runs inside the compiled training step,
    on the backend's own device; at inference it passes images through.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        if not training:
            return images
        shape = (keras.ops.shape(images)[0],)

        def uniform(low, high):
            return keras.random.uniform(shape, low, high, seed=self.seed_generator)

        transforms = affine_transforms(uniform(-10.0, 10.0) * (np.pi / 180), uniform(0.9, 1.1),
                                       uniform(-0.1, 0.1) * IMAGE_SIZE, uniform(-0.1, 0.1) * IMAGE_SIZE)
        # fill 0: MNIST's background is black, not a mirror image of the digit
        return keras.ops.image.affine_transform(images, transforms, fill_mode="constant", fill_value=0)


def make_trainer(model, augment, seed):
    """The model as trained: raw uint8 pixels in, scaled to [0, 1] (and augmented) in the compiled step.

    The 60,000 training images stay uint8 (47 MB, a quarter of float32) and need no input pipeline
    of their own. Only `model` is saved: it takes [0, 1] images, as --predict gives it.
    """
    return keras.Sequential([
        keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), dtype="uint8"),
        keras.layers.Rescaling(1 / 255, dtype="float32"),
        *([RandomAffine(seed, dtype="float32")] if augment else []),
        model,
    ], name="trainer")


def make_optimizer(lr_schedule, learning_rate, epochs, steps_per_epoch):
    """Adam, at a constant rate or along the cosine schedule whose peak `learning_rate` is."""
    if lr_schedule == "cosine":
        # Warm up over the first epoch (half the run if it has one epoch) to the peak, then decay
        # to zero along a cosine: large early steps, fine late ones.
        warmup = min(steps_per_epoch, epochs * steps_per_epoch // 2)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate / 30, decay_steps=epochs * steps_per_epoch - warmup, warmup_target=learning_rate,
            warmup_steps=warmup)
    return keras.optimizers.Adam(learning_rate)


def compile_trainer(trainer, optimizer):
    trainer.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                    steps_per_execution=STEPS_PER_EXECUTION)


def time_training_step(build, images, labels, policy):
    """Seconds per training step of a fresh copy of the model under `policy`, after a warm-up."""
    keras.mixed_precision.set_global_policy(policy)
    trainer = make_trainer(build(), augment=False, seed=None)
    trainer.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    for _ in range(3):  # the first steps compile the step and fill caches
        trainer.train_on_batch(images, labels)

    def step_seconds():
        started = time.perf_counter()
        for _ in range(3):
            trainer.train_on_batch(images, labels)
        return (time.perf_counter() - started) / 3

    return step_seconds


def choose_precision(requested, build, images, labels):
    """float32 or bfloat16, the device, and the timings behind an `auto` choice.

    On a GPU, bfloat16 where it computes it natively. On a CPU no flag tells: AVX512-BF16 made this
    network 1.6x faster on an AMD EPYC and slower on an Intel Xeon. So time a few real training
    steps of both, alternating, and keep the faster by the median: a noisy moment does not decide.
    """
    device, gpu_bfloat16 = describe_device()
    if requested != "auto":
        return requested, device, None
    if device.startswith("GPU"):
        return ("bfloat16" if gpu_bfloat16 else "float32"), device, None
    timers = {name: time_training_step(build, images, labels, policy)
              for name, policy in (("float32", "float32"), ("bfloat16", "mixed_bfloat16"))}
    samples = {name: [] for name in timers}
    for _ in range(5):
        for name, timer in timers.items():
            samples[name].append(timer())
    timings = {name: float(np.median(seconds)) for name, seconds in samples.items()}
    return min(timings, key=timings.get), device, timings


class GracefulStop(keras.callbacks.Callback):
    """Ctrl-C or SIGTERM during training: finish the step under way, stop, keep every fully trained epoch.

    A second signal quits at once: nothing has been written yet. `with GracefulStop(...) as stop:`
    around training makes these handlers the program's for that long only.
    """

    def __init__(self, steps_per_epoch):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.interrupted = False
        self.epochs_completed = 0
        self.epoch_seconds = []

    def __enter__(self):
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc_info):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.interrupted:
            print("\nInterrupted: stopped at once, nothing new was saved.", file=sys.stderr, flush=True)
            os._exit(130)  # no exception: one raised inside the backend's loops can crash the process
        self.interrupted = True
        if self.model is not None:
            self.model.stop_training = True
        print("\nStopping after this step to save what was trained; press Ctrl-C again to quit "
              "without saving.", file=sys.stderr, flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._steps_done = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps_done = batch + 1
        if self.interrupted:  # a signal that came before training began
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        # An epoch counts once all its steps ran, even if the signal came during its test pass.
        if self._steps_done >= self.steps_per_epoch:
            self.epochs_completed = epoch + 1
            self.epoch_seconds.append(round(time.perf_counter() - self._epoch_start, 3))


def train(trainer, train_data, watch_data, epochs, batch_size, optimizer, callbacks=()):
    """Fit the model, watching `watch_data` after every epoch for the curves; nothing is chosen by it."""
    compile_trainer(trainer, optimizer)
    steps_per_epoch = -(-len(train_data[0]) // batch_size)
    # The rate the schedule had reached at each epoch's end, for the curves' record and TensorBoard.
    record_rate = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(
        learning_rate=float(keras.ops.convert_to_numpy(trainer.optimizer.learning_rate))))
    with GracefulStop(steps_per_epoch) as stop:
        history = trainer.fit(*train_data, batch_size=batch_size, epochs=epochs, validation_data=watch_data,
                              validation_batch_size=EVAL_BATCH_SIZE, callbacks=[record_rate, *callbacks, stop],
                              verbose=1 if sys.stdout.isatty() else 2)  # a bar, or one line an epoch in logs
    completed = {key: [float(v) for v in values[: stop.epochs_completed]] for key, values in history.history.items()}
    completed["epoch_seconds"] = stop.epoch_seconds
    return completed, stop


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def confusion_matrix(labels, predicted):
    """Rows true digit, columns predicted: the same matrix as the notebook's tf.math.confusion_matrix."""
    return np.bincount(labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, NUM_CLASSES)


def evaluate(model, images, labels):
    """Predict every image once; loss, accuracy and the confusion matrix all come from that."""
    probabilities = model.predict(preprocess(images), batch_size=EVAL_BATCH_SIZE, verbose=0)
    predicted = probabilities.argmax(axis=1)
    # Keras' cross-entropy clips probabilities the same way
    loss = float(-np.log(np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1)).mean())
    confusion = confusion_matrix(labels, predicted)
    accuracy = float(np.trace(confusion) / confusion.sum())
    return {"loss": loss, "accuracy": accuracy, "probabilities": probabilities, "predicted": predicted,
            "confusion": confusion}


def per_class_report(confusion):
    """Precision, recall, F1 and support for each digit, read off the confusion matrix.

    None (n/a) where a ratio has nothing to divide by: a digit never predicted has no precision,
    one with no test images no recall.
    """

    def ratio(part, whole):
        return float(part / whole) if whole else None

    report = {}
    for digit in range(NUM_CLASSES):
        correct = confusion[digit, digit]
        precision, recall = ratio(correct, confusion[:, digit].sum()), ratio(correct, confusion[digit].sum())
        f1 = (ratio(2 * precision * recall, precision + recall) if precision is not None and recall is not None
              else None)
        report[str(digit)] = {"precision": precision, "recall": recall, "f1": f1,
                              "support": int(confusion[digit].sum())}
    return report


def most_confused(confusion, top=5):
    mistakes = confusion * (1 - np.eye(NUM_CLASSES, dtype=confusion.dtype))
    order = np.argsort(mistakes, axis=None)[::-1][:top]
    pairs = [np.unravel_index(i, mistakes.shape) for i in order]
    return [{"true": int(t), "predicted": int(p), "count": int(mistakes[t, p])} for t, p in pairs if mistakes[t, p] > 0]


def format_report(per_class, confused):
    def cell(value, width):
        return f"{'n/a' if value is None else f'{value:.4f}':>{width}}"

    lines = ["digit  precision  recall      f1  support"]
    lines += [f"{digit:>5}  {cell(r['precision'], 9)}  {cell(r['recall'], 6)}  {cell(r['f1'], 6)}  {r['support']:7d}"
              for digit, r in per_class.items()]
    lines.append("Most confused (true -> predicted: count): "
                 + (", ".join(f"{c['true']} -> {c['predicted']}: {c['count']}" for c in confused) or "none"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Reports
# ---------------------------------------------------------------------------------------------


def save_figure(fig, path):
    try:
        fig.savefig(path, dpi=100, bbox_inches="tight")
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


def plot_training_curves(history, watched, path):
    epochs = np.arange(1, len(history["loss"]) + 1)
    label = ("validation (held-out training images)" if watched == "validation"
             else "test (watched only, never used to tune)")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[metric], "o-", label="training")
        ax.plot(epochs, history[f"val_{metric}"], "s--", label=label)
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
    if total == 0:
        title = "No misclassified test digits"
    elif total == len(wrong):
        title = f"{total} misclassified test digit{'s' if total > 1 else ''}, most confident first"
    else:
        title = f"{total} misclassified test digits; the {len(wrong)} most confident mistakes"
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
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def staging_folder(output_dir):
    """A hidden folder inside output_dir where a run writes its outputs before they are published.

    Whatever happens before publish_outputs (an error, Ctrl-C), the folder goes and output_dir
    holds what it held before: a run leaves all its outputs or none.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=".staging-"))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_outputs(outputs, staging):
    """Write each (name, write) into staging; a failure is reported and the others still written."""
    written, failed = [], []
    for name, write in outputs:
        try:
            write(staging / name)
            written.append(name)
        except Exception as e:  # noqa: BLE001 -- a full disk, a bug in one picture: keep the other outputs
            print(f"warning: could not write {name}: {type(e).__name__}: {e}", file=sys.stderr)
            failed.append(name)
    return written, failed


def publish_outputs(staging, output_dir, names):
    """Move the staged outputs into place together: renames within one folder, signals held off."""
    published, failed = [], []
    held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for name in names:
            try:
                os.replace(staging / name, output_dir / name)
                published.append(output_dir / name)
            except OSError as e:  # a folder in the file's place, say
                print(f"warning: could not write {output_dir / name}: {e.strerror}", file=sys.stderr)
                failed.append(name)
    finally:
        for sig, handler in held.items():
            signal.signal(sig, handler)
    return published, failed


# ---------------------------------------------------------------------------------------------
# Your own digits
# ---------------------------------------------------------------------------------------------

READ_SIZE = 1024  # longer side kept on reading: plenty for a 20-pixel digit, cheap for a 100-megapixel photo
PREVIEW_SIZE = 192  # longer side of the copy shown in predictions.png
WORK_SIZE = 256  # longer side to_mnist_form works at


def _normalised(image):
    """16-bit, 32-bit and float images as mode F in [0, 1], scaled by their mode's range: convert("L") clips."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.min() >= 0 and values.max() <= 65535):
        values = values / 65535  # 16-bit data, whether Pillow calls it I;16 or I
    elif image.mode == "F" and values.min() >= 0 and values.max() <= 1:
        pass
    else:  # 32-bit integers or floats outside [0, 1] have no agreed white: stretch what is there
        low, high = float(values.min()), float(values.max())
        values = (values - low) / max(high - low, 1e-12)
    return Image.fromarray(np.nan_to_num(values).astype(np.float32), "F")


def _on_background(image):
    """Put a transparent image on the colour that contrasts with what is drawn: white ink on black."""
    rgba = np.asarray(image, dtype=np.float32) / 255
    drawn = rgba[..., 3] > 0.5
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    light_ink = drawn.any() and np.median(luminance[drawn]) > 0.5
    return Image.alpha_composite(Image.new("RGBA", image.size, "black" if light_ink else "white"), image)


def _decode(image):
    image.draft(None, (READ_SIZE, READ_SIZE))  # JPEG decodes at 1/2 to 1/8 scale: a fraction of the work
    image = ImageOps.exif_transpose(image)  # phones store rotation in EXIF, not in the pixels
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _normalised(image)
    elif image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    image.thumbnail((READ_SIZE, READ_SIZE), Image.BOX)  # box averaging keeps thin strokes as grey
    if image.mode == "RGBA":
        image = _on_background(image).convert("RGB")
    if image.mode == "F":
        gray = np.asarray(image, dtype=np.float32)
        image = Image.fromarray(np.round(gray * 255).astype(np.uint8), "L")
    else:
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255
    preview = image.convert("RGB")
    preview.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.BOX)
    return gray, np.asarray(preview)


def read_image(source):
    """A path or binary file as (gray, preview): gray a 2-D float32 array in [0, 1] at most READ_SIZE
    pixels on its longer side, preview a small RGB uint8 copy in the image's own colours.

    Raises InputError with a one-line reason for anything it cannot read.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 megapixels; a 108-megapixel phone photo is fine, read reduced.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                return _decode(image)
    except FileNotFoundError:
        raise InputError("no such file")
    except IsADirectoryError:
        raise InputError("a folder, not an image")
    except Image.DecompressionBombError:
        raise InputError(f"declares more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, too large to read "
                         f"safely: scale it down first")
    except Exception as e:  # noqa: BLE001 -- a damaged or foreign file can trip any decoder, in any way
        raise InputError(f"not an image this program can read ({type(e).__name__})")


def _sliding(array, size, reduce):
    """`reduce` (np.mean, np.max...) over a size x size window, separable and edge-padded."""
    pad = size // 2
    for axis in (0, 1):
        padded = np.pad(array, [(pad, pad) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        array = reduce(np.lib.stride_tricks.sliding_window_view(padded, size, axis=axis), axis=-1)
    return array


def otsu_threshold(values):
    """The threshold that best splits the values into two classes (Otsu, 1979)."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:  # one value: nothing to split
        return low
    counts, edges = np.histogram(values, bins=256, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(counts * centres) / np.maximum(weight_low, 1)
    mean_high = ((counts * centres).sum() - np.cumsum(counts * centres)) / np.maximum(weight_high, 1)
    return centres[np.argmax(weight_low * weight_high * (mean_low - mean_high) ** 2)]


def ink_up(gray):
    """The image with ink light and paper dark, whichever way round it was written.

    The paper is what the image's border shows: a digit, even cropped tight and filling the
    frame, touches the border only here and there. When most of the border falls on one side of
    the image's Otsu split, that side is the paper. When it does not, uneven light has spread the
    paper across the split, and the ink is the side that strays furthest from the border's median.
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    light_border = (border > otsu_threshold(gray.ravel())).mean()
    if abs(light_border - 0.5) >= 0.15:
        dark_ink = light_border > 0.5
    else:
        smooth = _sliding(gray, 3, np.mean)  # so that a speck of noise cannot decide
        paper = np.median(border)
        dark_ink = paper - smooth.min() >= smooth.max() - paper
    return 1 - gray if dark_ink else gray


def paper_level(ink):
    """The paper's level under uneven light, from the paper only: a smooth surface, never a stroke.

    A quadratic in x and y (a lamp on one side, a shadow, a vignette) is fitted to the pixels on
    the paper's side of the Otsu split of what the last fit left; with six numbers it cannot
    follow a stroke, however bold, and refitting drops the ink even where it covers half the image.
    """
    height, width = ink.shape
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    terms = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(-1, 6)
    values = ink.ravel().astype(np.float64)
    paper = np.ones(values.size, bool)
    for _ in range(4):
        coefficients = np.linalg.lstsq(terms[paper], values[paper], rcond=None)[0]
        residual = values - terms @ coefficients
        paper = residual <= otsu_threshold(residual)
    return (terms @ coefficients).reshape(ink.shape).astype(np.float32)


def to_mnist_form(gray):
    """Turn a photo or scan of one digit into what the network was trained on.

    MNIST digits are light ink on black, scaled so the longer side is 20 pixels and centred by
    their centre of mass in a 28x28 frame. Returns None when no ink is found.
    """
    border = np.concatenate([gray[:2].ravel(), gray[-2:].ravel(), gray[:, :2].ravel(), gray[:, -2:].ravel()])
    if gray.shape == (IMAGE_SIZE, IMAGE_SIZE) and border.mean() < 0.1:
        return gray  # already MNIST-shaped: leave it exactly as it is
    scale = WORK_SIZE / max(gray.shape)
    if scale < 1:  # more pixels carry no more useful detail for a 20-pixel digit; this keeps it fast
        gray = np.asarray(Image.fromarray(gray).resize(
            (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))), Image.BOX))
    ink = ink_up(gray)
    background = paper_level(ink)
    # As a share of the way from the paper to full ink: a stroke in shadow counts as much as one in light.
    ink = np.clip((ink - background) / np.maximum(1 - background, 0.05), 0, 1)
    if _sliding(ink, 3, np.mean).max() < 0.15:
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


def _training_command(output_dir):
    folder = "" if output_dir == Path("outputs") else f" --output-dir {shlex.quote(str(output_dir))}"
    return f"`python {Path(__file__).name}{folder}`"


def load_trained_model(path):
    """The model at `path`, or an InputError that says how to get one."""
    if not path.is_file():
        how = (f"train one with {_training_command(path.parent)}" if path.name == "model.keras" else
               f"train one with {_training_command(Path('DIR'))} and pass --model DIR/model.keras")
        raise InputError(f"no trained model at {path}: {how}, or pass --model PATH")
    try:
        model = keras.models.load_model(path)
    except Exception as e:  # noqa: BLE001 -- a truncated or foreign file: Keras raises many kinds, some misleading
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise InputError(f"{path} is damaged or not a Keras model file ({reason}): train a new one "
                         f"with {_training_command(path.parent)}, or pass --model PATH")
    expected = (None, IMAGE_SIZE, IMAGE_SIZE, 1)
    if tuple(getattr(model, "input_shape", ())) != expected or model.output_shape != (None, NUM_CLASSES):
        raise InputError(f"{path} is a model for inputs {getattr(model, 'input_shape', '?')} and outputs "
                         f"{model.output_shape}, not 28x28 digits to 10 classes: pass a model this program trained")
    return model


def predict_images(model, paths):
    """One line per image; unreadable images get their own line and the rest are still predicted."""
    readable, failed = [], 0
    for path in paths:
        try:
            gray, preview = read_image(path)
            digit = to_mnist_form(gray)
            if digit is None:
                raise InputError("blank image: no digit found")
        except InputError as e:
            print(f"{path}: error: {e}", file=sys.stderr)
            failed += 1
        else:
            readable.append((path, preview, digit))  # the small copy only: a photo's pixels are let go
    if not readable:
        return [], failed
    digits = np.stack([digit for _, _, digit in readable])[..., None]
    results = []
    batch = min(len(digits), EVAL_BATCH_SIZE)
    for (path, preview, digit), probabilities in zip(readable, model.predict(digits, batch_size=batch, verbose=0)):
        ranked = np.argsort(probabilities)[::-1]
        line = f"{path}: {ranked[0]} ({probabilities[ranked[0]]:.1%})"
        if probabilities[ranked[0]] < 0.9:  # unsure: show what else it might be
            line += ", else " + ", ".join(f"{d} ({probabilities[d]:.1%})" for d in ranked[1:3])
        print(line)
        results.append((path, preview, digit, int(ranked[0]), float(probabilities[ranked[0]])))
    return results, failed


def short_name(path, width=24):
    """The file's name, its stem shortened with an ellipsis so that the extension always shows."""
    name = Path(path).name
    if len(name) <= width:
        return name
    suffix = Path(path).suffix[:8]
    return Path(path).stem[: max(1, width - len(suffix) - 1)] + "\u2026" + suffix


def plot_predictions(results, path, limit=24):
    """Each input, in its own colours, beside the 28x28 image the model saw, four pairs a row."""
    shown = results[:limit]
    columns = min(4, len(shown))
    rows = -(-len(shown) // columns)
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(3.2 * columns, 1.9 * rows + 0.5), squeeze=False,
                             layout="constrained")
    for ax in axes.flat:
        ax.set_axis_off()
    pairs = axes.reshape(rows * columns, 2)
    for (name, preview, digit, label, confidence), (left, right) in zip(shown, pairs):
        left.imshow(preview)
        left.set_title(short_name(name), fontsize=8)
        right.imshow(digit, cmap="gray", vmin=0, vmax=1)
        right.set_title(f"sees: {label} ({confidence:.0%})", fontsize=8)
    more = f" (the first {limit} of {len(results)})" if len(results) > limit else ""
    fig.suptitle(f"Your images, and the 28x28 digit the model saw{more}")
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------------
# Drawing page
# ---------------------------------------------------------------------------------------------

WEB_DIR = HERE / "web"
WEB_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
MAX_REQUEST_BYTES = 16 * 2**20  # a phone photo, base64-encoded in JSON, fits with room to spare
MAX_POINTS = 20_000  # a digit drawn slowly with a fine mouse is a few hundred
MAX_IMAGE_PIXELS = 50_000_000  # more than any phone camera; refused before decoding
# The canvas strokes are re-drawn here rather than sent as the canvas' own bitmap: the page's pen
# is a fixed number of screen pixels wide, so a small digit would reach the network as a fat blob
# and a large one as hairlines. MNIST's strokes are about 3 pixels in its 20-pixel box, so the
# pen here is a fixed share of the drawing's longer side, whatever size it was drawn at.
STROKE_BOX = 160  # the drawing's longer side, in pixels, once rendered
STROKE_WIDTH = 0.15  # of that side: the drawn test digits then carry as much ink as MNIST's, on average
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")


class BadRequest(Exception):
    """A request the server refuses: answered with this HTTP status and {"error": message}."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


def parse_strokes(strokes):
    """[[[x, y], ...], ...] from the page -> a list of (n, 2) float arrays, refusing anything else."""
    if not isinstance(strokes, list) or not strokes:
        raise BadRequest("strokes must be a non-empty list of strokes, each a list of [x, y] points")
    if sum(len(stroke) if isinstance(stroke, list) else 0 for stroke in strokes) > MAX_POINTS:
        raise BadRequest(f"too many points: at most {MAX_POINTS:,} in a drawing")
    for stroke in strokes:
        if not isinstance(stroke, list) or not stroke or not all(
                isinstance(point, list) and len(point) == 2
                # abs(v) < 1e6 also refuses NaN, infinity and integers too large for a float
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e6 for v in point)
                for point in stroke):
            raise BadRequest("each stroke must be a non-empty list of [x, y] points, "
                             "x and y numbers below 1,000,000")
    return [np.array(stroke, dtype=np.float64) for stroke in strokes]


def render_strokes(strokes):
    """Draw the strokes as light ink on black, the pen a fixed share of the drawing's size."""
    points = np.concatenate(strokes)
    low = points.min(axis=0)
    scale = STROKE_BOX / max(np.ptp(points, axis=0).max(), 1e-6)
    width = round(STROKE_WIDTH * STROKE_BOX)
    # a clear black border: to_mnist_form tells paper from ink by what the border shows
    margin = 2 * width
    image = Image.new("L", (STROKE_BOX + 2 * margin,) * 2, 0)
    pen = ImageDraw.Draw(image)
    for stroke in strokes:
        xy = [tuple(p) for p in (stroke - low) * scale + margin]
        if len(xy) > 1:
            pen.line(xy, fill=255, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round ends, as a pen leaves; a single point is a dot
            pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(image, dtype=np.float32) / 255


def decode_photo(text):
    """A base64-encoded image file -> grayscale in [0, 1], read exactly as --predict reads files."""
    if not isinstance(text, str) or not text:
        raise BadRequest("image must be the image file's bytes, base64-encoded")
    try:
        data = base64.b64decode(text.split(",", 1)[-1] if text.startswith("data:") else text, validate=True)
    except ValueError:
        raise BadRequest("image is not valid base64")
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            pixels = image.width * image.height
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # what Pillow raises for non-images
        raise BadRequest("not an image this program can read: send a PNG or JPEG file")
    if pixels > MAX_IMAGE_PIXELS:
        raise BadRequest(f"image too large: {pixels:,} pixels, at most {MAX_IMAGE_PIXELS:,}")
    try:
        gray, _ = read_image(io.BytesIO(data))
    except InputError as e:
        raise BadRequest(f"{e}: send a PNG or JPEG file")
    return gray


def digit_from_request(payload):
    """The request's drawing or photo as the 28x28 digit the network reads."""
    if not isinstance(payload, dict) or len(payload.keys() & {"strokes", "image"}) != 1:
        raise BadRequest('send a JSON object with either "strokes" (the drawing) or "image" (a photo)')
    if "strokes" in payload:
        gray = render_strokes(parse_strokes(payload["strokes"]))
    else:
        gray = decode_photo(payload["image"])
    digit = to_mnist_form(gray)
    if digit is None:
        raise BadRequest("blank image: no digit found")
    return digit


def read_json_body(handler):
    """The request's JSON body; its size is checked from Content-Length before a byte is read."""
    if handler.headers.get("Transfer-Encoding"):
        raise BadRequest("send the body with a Content-Length, not chunked", status=411)
    length = handler.headers.get("Content-Length")
    if length is None:
        raise BadRequest("a Content-Length header is required", status=411)
    if not length.isdigit():
        raise BadRequest(f"Content-Length must be a number of bytes, got {length!r}")
    if int(length) > MAX_REQUEST_BYTES:
        raise BadRequest(f"request too large: {int(length):,} bytes, at most {MAX_REQUEST_BYTES:,}", status=413)
    if handler.headers.get_content_type() != "application/json":
        raise BadRequest("send JSON, with Content-Type: application/json")
    body = handler.rfile.read(int(length))
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON")


def make_handler(model, loopback):
    """The request handler: the files of web/, by name only, and POST /predict."""
    files = {f"/{path.name}": path for path in WEB_DIR.iterdir()
             if path.is_file() and path.suffix in WEB_TYPES and not path.name.startswith(".")}
    files["/"] = WEB_DIR / "index.html"
    model_lock = threading.Lock()  # one prediction at a time: a Keras model is not meant for threads

    class DrawingPageHandler(BaseHTTPRequestHandler):
        server_version = "DigitDrawingPage"
        timeout = 30  # a client that stops sending mid-request frees its thread

        def log_message(self, format, *args):  # no line per request on the terminal
            pass

        def send_body(self, status, body, content_type, extra=()):
            self.send_response(status)
            for name, value in (("Content-Type", content_type), ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), *extra):
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def send_json(self, status, data):
            self.send_body(status, json.dumps(data).encode(), "application/json")

        def check_host(self):
            # A web page elsewhere could reach this local server under its own name by DNS
            # rebinding; the Host header it must then send gives it away.
            host = self.headers.get("Host")
            name = host if host is None or host.endswith("]") else host.rsplit(":", 1)[0]
            if loopback and host is not None and name not in LOOPBACK_NAMES:
                raise BadRequest(f"unexpected Host header {host!r}: open the page at 127.0.0.1", status=403)

        def do_GET(self):
            try:
                self.check_host()
            except BadRequest as e:
                return self.send_json(e.status, {"error": str(e)})
            path = files.get(self.path.split("?", 1)[0])
            if path is None:
                return self.send_json(404, {"error": "not found"})
            self.send_body(200, path.read_bytes(), WEB_TYPES[path.suffix],
                           [("Content-Security-Policy", CONTENT_SECURITY_POLICY)])

        do_HEAD = do_GET

        def do_POST(self):
            try:
                self.check_host()
                if self.path.split("?", 1)[0] != "/predict":
                    self.close_connection = True  # its body is not read
                    raise BadRequest("not found", status=404)
                payload = read_json_body(self)
                digit = digit_from_request(payload)
                with model_lock:
                    probabilities = np.asarray(model.predict_on_batch(digit[None, :, :, None]), np.float64)[0]
            except BadRequest as e:
                if e.status in (404, 411, 413):
                    self.close_connection = True
                return self.send_json(e.status, {"error": str(e)})
            self.send_json(200, {
                "digit": int(probabilities.argmax()),
                "probabilities": [round(float(p), 6) for p in probabilities],
                "image": np.round(digit * 255).astype(int).tolist(),  # the 28x28 digit the model saw
            })

    return DrawingPageHandler


class DrawingPageServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):  # a closed tab is no news
            print(f"warning: request from {client_address[0]} failed: {type(error).__name__}: {error}",
                  file=sys.stderr, flush=True)


def draw_main(args):
    model = load_trained_model(args.model or args.output_dir / "model.keras")
    loopback = args.host in LOOPBACK_NAMES
    if not loopback:
        print(f"warning: --host {args.host}: the drawing page is reachable from other machines on the network",
              file=sys.stderr, flush=True)
    try:
        server = DrawingPageServer((args.host, args.port), make_handler(model, loopback))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InputError(f"port {args.port} is already in use on {args.host}: "
                             f"pass another, e.g. --port {args.port + 1 if args.port < 65535 else 8001}")
        raise InputError(f"cannot serve on {args.host}:{args.port} ({e.strerror or e}): "
                         f"check --host and --port")
    model.predict_on_batch(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32))  # the first call compiles
    host, port = server.server_address[:2]
    print(f"Drawing page: http://{host}:{port}/ (press Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("Stopped the drawing page.", flush=True)
    finally:
        server.server_close()
    return 0



# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage dump buries the one line that matters
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):  # "(default: None)" tells nothing: show only real defaults
        return action.help if action.default is None or action.default is False else super()._get_help_string(action)


def whole_number(low, high=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {'at least ' + str(low) if high is None else f'from {low} to {high}'}"
                                             f", got {value}")
        return value
    return parse


def real_number(low, high, example, low_included=True):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number such as {example}, got {text!r}")
        if not (low <= value if low_included else low < value) or not value < high:  # NaN fails both
            bound = f"at least {low}" if low_included else f"above {low}"
            raise argparse.ArgumentTypeError(f"must be {bound}{f' and below {high}' if high < float('inf') else ''}"
                                             f", got {value}")
        return value
    return parse


def parse_args(argv=None):
    parser = OneLineErrorParser(
        description="Train a CNN on MNIST, report how well it did and where it goes wrong; "
                    "or predict digits in your own images.",
        formatter_class=HelpFormatter,
    )
    positive_int = whole_number(1)
    parser.add_argument("--data", default="bundled", metavar="{bundled,keras,PATH}",
                        help="bundled: data/mnist/ (falls back to keras if absent); keras: "
                             "keras.datasets.mnist (downloads); PATH: a folder of the four IDX files "
                             "(gzipped or raw) or a .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--epochs", type=positive_int, default=10, help="passes over the training images")
    parser.add_argument("--batch-size", type=positive_int, default=128, help="training images per step")
    parser.add_argument("--seed", type=whole_number(0, 2**32 - 1), default=None,
                        help="make the run repeatable: the same seed gives the same numbers on the same "
                             "machine with the same --precision (on TensorFlow it turns on deterministic "
                             "ops, which may cost some speed)")
    parser.add_argument("--output-dir", default="outputs", type=Path,
                        help="where the pictures, model.keras and metrics.json go")
    parser.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                        help="train on the first N training images only (quick runs)")
    parser.add_argument("--limit-test", type=positive_int, default=None, metavar="N",
                        help="evaluate on the first N test images only")
    parser.add_argument("--validation-split", type=real_number(0, 1, "0.1"), default=0.0, metavar="FRACTION",
                        help="hold out this last fraction of the training images: the curves watch them "
                             "and the test set is evaluated once, at the end (0: train on all of them and "
                             "watch the test set, as the notebook did)")
    parser.add_argument("--precision", choices=["auto", "float32", "bfloat16"], default="auto",
                        help="auto: on a GPU, bfloat16 mixed precision where it is native; on a CPU, whichever "
                             "trains faster in a few timed steps (printed)")
    parser.add_argument("--augment", action="store_true",
                        help="randomly rotate (10 degrees), shift (10%%) and zoom (10%%) training images")
    parser.add_argument("--lr-schedule", choices=["cosine", "constant"], default="cosine",
                        help="Adam's learning rate: cosine, warm-up over the first epoch to the peak then "
                             "cosine decay to 0; constant, the same rate throughout, as in the original")
    parser.add_argument("--learning-rate", type=real_number(0, float("inf"), "0.001", low_included=False), default=None, metavar="RATE",
                        help="the cosine's peak (default 0.003) or the constant rate (default 0.001, Adam's own)")
    parser.add_argument("--architecture", choices=ARCHITECTURES, default="cnn",
                        help="cnn: the notebook's family of networks, shaped by --filters and --dense-units; "
                             "resnet: a compact residual network for 28x28 digits (slower, more accurate)")
    parser.add_argument("--filters", type=positive_int, nargs="+", default=None, metavar="N",
                        help="cnn: the filters of each Conv2D 3x3 + MaxPool block, one number a block, at most "
                             f"{max_conv_blocks()} blocks (default: {' '.join(map(str, CNN_FILTERS))})")
    parser.add_argument("--dense-units", type=whole_number(0), default=None, metavar="N",
                        help=f"cnn: units of the hidden dense layer, 0 for none (default: {CNN_DENSE_UNITS})")
    parser.add_argument("--tensorboard", action="store_true",
                        help="write TensorBoard logs (loss, accuracy, learning rate per epoch) to OUTPUT_DIR/logs, "
                             "replacing that folder's earlier logs; needs TensorFlow installed")
    parser.add_argument("--predict", nargs="+", metavar="IMAGE",
                        help="predict the digit in each image with a trained model instead of training; one digit per "
                             "image (crop each digit on its own: two digits in one image are read as one)")
    parser.add_argument("--model", type=Path, default=None,
                        help="the trained model --predict and --draw use (default: OUTPUT_DIR/model.keras)")
    parser.add_argument("--draw", action="store_true",
                        help="serve a page to draw digits on and watch the model read them, instead of training")
    parser.add_argument("--port", type=whole_number(0, 65535), default=8000, help="the drawing page's port (0: any free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address the drawing page listens on; anything but 127.0.0.1 makes it "
                             "reachable from other machines")
    args = parser.parse_args(argv)
    if args.model and not (args.predict or args.draw):
        parser.error("--model is only used with --predict or --draw; training writes OUTPUT_DIR/model.keras")
    if args.architecture == "cnn":  # record what the run used, not None, in metrics.json
        args.filters = args.filters or list(CNN_FILTERS)
        args.dense_units = CNN_DENSE_UNITS if args.dense_units is None else args.dense_units
    elif args.filters or args.dense_units is not None:
        parser.error("--filters and --dense-units shape the cnn; the resnet has a fixed design: drop them")
    args.learning_rate = args.learning_rate or LEARNING_RATES[args.lr_schedule]
    return args


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


def split_validation(images, labels, fraction):
    """The last `fraction` of the training images, held out (none for 0), as Keras' validation_split does."""
    held_out = round(len(images) * fraction)
    if fraction and not 0 < held_out < len(images):
        raise InputError(f"--validation-split {fraction} of {len(images)} training images leaves "
                         f"{held_out} to hold out and {len(images) - held_out} to train on: choose another")
    keep = len(images) - held_out
    return images[:keep], labels[:keep], images[keep:], labels[keep:]


def predict_main(args):
    model = load_trained_model(args.model or args.output_dir / "model.keras")
    results, failed = predict_images(model, args.predict)
    failures = []
    if results:
        check_output_dir(args.output_dir)
        with staging_folder(args.output_dir) as staging:
            written, failures = write_outputs([("predictions.png", lambda p: plot_predictions(results, p))], staging)
            published, unpublished = publish_outputs(staging, args.output_dir, written)
        failures += unpublished
        if published:
            print(f"Saved: {published[0]}")
    return 1 if failed or failures else 0


def main(argv=None):
    args = parse_args(argv)
    if args.predict:
        return predict_main(args)
    if args.draw:
        return draw_main(args)
    started = time.perf_counter()
    check_output_dir(args.output_dir)
    build = functools.partial(build_network, args.architecture, args.filters, args.dense_units)
    build()  # refuses settings that cannot work before any data is read
    (x_train, y_train, x_test, y_test), source = load_mnist(args.data)
    x_train, y_train = x_train[: args.limit_train], y_train[: args.limit_train]
    x_test, y_test = x_test[: args.limit_test], y_test[: args.limit_test]
    x_train, y_train, x_val, y_val = split_validation(x_train, y_train, args.validation_split)
    held_out = f", {len(x_val):,} held out for validation" if len(x_val) else ""
    print(f"Data: {source}: {len(x_train):,} training{held_out} and {len(x_test):,} test images")

    batch = x_train[: args.batch_size, ..., None], y_train[: args.batch_size]
    precision, device, timings = choose_precision(args.precision, build, *batch)
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    measured = (f" (measured {1000 * timings['float32']:.1f} ms a step in float32, "
                f"{1000 * timings['bfloat16']:.1f} in bfloat16)" if timings else "")
    print(f"Backend: {keras.backend.backend()}, device: {device}, precision: {precision}{measured}")
    if args.seed is not None:  # after the timing above, so that it does not shift the random numbers
        keras.utils.set_random_seed(args.seed)
        make_deterministic()

    model = build()
    model.summary()
    trainer = make_trainer(model, args.augment, args.seed)
    watched = (x_val, y_val) if len(x_val) else (x_test, y_test)
    optimizer = make_optimizer(args.lr_schedule, args.learning_rate, args.epochs, -(-len(x_train) // args.batch_size))
    callbacks = [tensorboard_logs(args.output_dir)] if args.tensorboard else []
    train_started = time.perf_counter()
    history, stop = train(trainer, (x_train[..., None], y_train), (watched[0][..., None], watched[1]),
                          args.epochs, args.batch_size, optimizer, callbacks)
    train_seconds = time.perf_counter() - train_started
    # A signal that came as the last epoch ended cut nothing short: the run is complete.
    interrupted = stop.epochs_completed < args.epochs
    print(f"Trained {stop.epochs_completed} epoch{'s' * (stop.epochs_completed != 1)} in {train_seconds:.1f} s")

    evaluation = evaluate(model, x_test, y_test)
    per_class = per_class_report(evaluation["confusion"])
    confused = most_confused(evaluation["confusion"])
    config = {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
              if key not in ("predict", "model", "draw", "port", "host")}
    metrics = {
        "test_accuracy": evaluation["accuracy"],
        "test_loss": evaluation["loss"],
        "interrupted": interrupted,
        "epochs_completed": stop.epochs_completed,
        "curves_watch": "validation" if len(x_val) else "test",
        "history": history,
        "per_class": per_class,
        "most_confused": confused,
        "confusion_matrix": evaluation["confusion"].tolist(),
        "config": {**config, "precision": precision, "precision_timings": timings,
                   "backend": keras.backend.backend(), "device": device, "parameters": model.count_params()},
        "data": {"source": source, "train_images": len(x_train), "validation_images": len(x_val),
                 "test_images": len(x_test)},
        "train_seconds": round(train_seconds, 2),
        "duration_seconds": round(time.perf_counter() - started, 2),
    }
    outputs = [  # name, how to write it
        ("model.keras", model.save),
        ("confusion_matrix.png", lambda p: plot_confusion_matrix(evaluation["confusion"], evaluation["accuracy"], p)),
        *([("training_curves.png", lambda p: plot_training_curves(history, metrics["curves_watch"], p))]
          if history["loss"] else []),  # stopped before the first epoch ended: no curve to draw
        ("misclassified.png", lambda p: plot_misclassified(x_test, y_test, evaluation, p)),
        ("filters.png", lambda p: plot_filters(model, preprocess(x_test[:1])[0], p)),
        ("metrics.json", lambda p: write_json(metrics, p)),
    ]
    with staging_folder(args.output_dir) as staging:
        written, failures = write_outputs(outputs, staging)
        print(format_report(per_class, confused))
        if interrupted:
            print(f"Interrupted after {stop.epochs_completed} of {args.epochs} epochs; saved what was trained.")
        print(f"Test accuracy: {evaluation['accuracy']:.4f}")
        print(f"Test loss: {evaluation['loss']:.4f}")
        published, unpublished = publish_outputs(staging, args.output_dir, written)
    print("Saved: " + ", ".join(str(path) for path in published))
    if interrupted:
        return 130
    return 1 if failures or unpublished else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a plain kill stops cleanly, like Ctrl-C
    try:
        sys.exit(main())
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\nInterrupted: stopped at once, nothing new was saved.", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)  # skip interpreter teardown: it can crash while the backend's threads run
