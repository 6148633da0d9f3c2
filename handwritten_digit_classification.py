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


def build_model():
    """The network of the original notebook, unchanged: 179,926 parameters."""
    return keras.Sequential(
        [
            keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(100, activation="relu"),
            # Under mixed precision the softmax still runs in float32, so probabilities sum to 1.
            keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"),
        ],
        name="mnist_cnn",
    )


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


def plot_filters(model, digit, path):
    """The 32 learned 3x3 kernels of the first convolution and one digit seen through both convolutions."""
    conv1, conv2 = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    kernels = conv1.get_weights()[0][:, :, 0, :]  # (3, 3, 32)
    features = keras.Model(model.inputs, [conv1.output, conv2.output])
    maps1, maps2 = (np.asarray(m[0], np.float32) for m in features.predict(digit[None], verbose=0))

    fig = plt.figure(figsize=(13, 10), layout="constrained")
    top, middle, bottom = fig.subfigures(3, 1, height_ratios=[1, 1.1, 2.0])
    limit = np.abs(kernels).max()
    for i, ax in enumerate(top.subplots(2, 16).flat):
        ax.imshow(kernels[:, :, i], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_axis_off()
    top.suptitle("First convolution: the 32 learned 3x3 kernels (red positive, blue negative)")

    axes = middle.subplots(2, 17)
    axes[0, 0].imshow(digit[:, :, 0], cmap="gray_r")
    axes[0, 0].set_title("input", fontsize=9)
    for ax in axes.flat:
        ax.set_axis_off()
    for i, ax in enumerate([*axes[:, 1:].flat]):
        ax.imshow(maps1[:, :, i], cmap="viridis")
    middle.suptitle("The digit through the first convolution (32 feature maps, 26x26)")

    for i, ax in enumerate(bottom.subplots(4, 16).flat):
        ax.imshow(maps2[:, :, i], cmap="viridis")
        ax.set_axis_off()
    bottom.suptitle("Through the second convolution (64 feature maps, 11x11)")
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
