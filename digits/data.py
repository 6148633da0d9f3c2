"""MNIST readers: the bundled IDX files (SHA-256 checked), any folder of IDX files, a .npz, or Keras'
download. Every reader returns uint8 (N, 28, 28) images and int32 labels 0-9, or refuses the data
with a one-line InputError; memory is bounded by what a file's header declares. No Keras here (Keras'
download imports it when asked for).
"""

import gzip
import hashlib
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from digits import files
from digits.backend import load_keras
from digits.errors import IMAGE_SIZE, NUM_CLASSES, InputError, one_line
from digits.folders import is_split_folder, load_split

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "data" / "mnist"


class Dataset(NamedTuple):
    """MNIST-shaped data: uint8 (N, 28, 28) images, int32 labels, and where they came from."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str  # e.g. "bundled (/path/data/mnist)", with any conversion made in parentheses


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
MAX_ARRAY_BYTES, MAX_INFLATION = 4 * 2**30, 100  # images inflating 100 times are no data set: MNIST's do 5-20
MAX_NPY_HEADER = 10_000  # numpy's own limit for loading a header safely
IMAGE_FORMS = {(IMAGE_SIZE, IMAGE_SIZE): "", (IMAGE_SIZE, IMAGE_SIZE, 1): "(N, 28, 28, 1) images, channel dropped",
               (IMAGE_SIZE * IMAGE_SIZE,): "rows of 784 pixels, reshaped to 28x28"}
SCALED = "float pixels in [0, 1], scaled to 0-255"
READ_CHUNK = 1 << 20  # inflate this much at a time: a read(n) allocates n bytes before it reads any


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
    with files.open_named(path, "an IDX file") as file:  # a regular file only: a FIFO would wait for ever
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
        if (folder / candidate).exists():  # read_idx says why a folder or a FIFO of this name is not read
            return folder / candidate
    raise InputError(f"{folder} has no {name}[.gz] (nor {dotted}[.gz]): a data folder holds the four MNIST IDX "
                     f"files, or train/0/ ... train/9/ and test/0/ ... test/9/ folders of images (or give a .npz)")


def load_idx_folder(folder, verify_checksums=False):
    """The four MNIST IDX files of a folder as [x_train, y_train, x_test, y_test] arrays (unchecked)."""
    arrays = []
    for name, published in MNIST_SHA256.items():
        path = find_idx_file(folder, name)
        split, kind = ("training" if name.startswith("train") else "test"), name.split("-")[1]
        array, sha256 = read_idx(path, ndim=3 if kind == "images" else 1, split=split, kind=kind)
        if verify_checksums and sha256 != published:
            raise InputError(f"{path} does not match MNIST's published SHA-256: the copy is damaged, "
                             f"restore it (for the bundled copy: `git checkout -- data/mnist`)")
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
    if key.startswith("x") and size > max(2**20, MAX_INFLATION * info.compress_size):  # told before inflating
        raise InputError(f"{path}: {key} declares {size:,} bytes in {info.compress_size:,} compressed: no images "
                         f"compress {MAX_INFLATION} times, so it is not a data set (a zip bomb?): save real data")
    with archive.open(info) as fp:
        return np.lib.format.read_array(fp, allow_pickle=False)  # never unpickle: a .npz can carry code


def load_npz(path):
    """A .npz in Keras' mnist.npz layout as [x_train, y_train, x_test, y_test], never unpickled."""
    with files.open_named(path, "a .npz file") as file:  # a regular file only: a FIFO would wait for ever
        if not zipfile.is_zipfile(file):
            raise InputError(f"{path} is not a .npz file (a zip of .npy arrays): save it with numpy.savez")
        try:
            with zipfile.ZipFile(file) as archive:
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
    """keras.datasets.mnist.load_data(), which downloads to ~/.keras/datasets."""
    keras = load_keras()  # only this source needs Keras

    try:
        return keras.datasets.mnist.load_data()
    except Exception as e:  # noqa: BLE001 (no network, proxy, partial download: all end the same way for the user)
        raise InputError(f"could not download MNIST through Keras ({type(e).__name__}: {one_line(e)}); "
                         f"use the bundled copy, or a folder or .npz of your own")


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


def load_mnist(source="bundled"):
    """The data set `source` names: 'bundled' (data/mnist/, or Keras' download where that folder is
    missing), 'keras', or a path to a folder of IDX files, a .npz, or a folder with train/0..9/ and
    test/0..9/ image folders (digits.folders). Checked: see Dataset."""
    if source == "bundled" and not BUNDLED_DIR.is_dir():
        source = "keras"
    if source == "bundled":
        arrays, description = load_idx_folder(BUNDLED_DIR, verify_checksums=True), f"bundled ({BUNDLED_DIR})"
    elif source == "keras":
        (x_train, y_train), (x_test, y_test) = load_keras_mnist()
        arrays, description = [x_train, y_train, x_test, y_test], "keras.datasets.mnist"
    else:
        path = Path(source)
        if path.is_dir() and is_split_folder(path):
            arrays = load_split(path)
        elif path.is_dir():
            arrays = load_idx_folder(path)
        elif path.exists() and path.suffix.lower() == ".npz":
            arrays = load_npz(path)
        elif path.exists():
            raise InputError(f"{source} is neither a .npz file nor a folder (of IDX files, or of digit folders)")
        else:
            raise InputError(f"{source} does not exist: give 'bundled', 'keras', a folder of MNIST IDX files, "
                             f"a .npz file, or a folder with train/0..9/ and test/0..9/ image folders")
        description = str(path.resolve())
    (x_train, y_train, x_test, y_test), notes = check_arrays(arrays, description)
    return Dataset(x_train, y_train, x_test, y_test, description + (f" ({'; '.join(notes)})" if notes else ""))


class Split(NamedTuple):
    """Training images and labels, and those held out of training for validation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_held: np.ndarray
    y_held: np.ndarray


def split_validation(images, labels, fraction):
    """Hold out the last `fraction` of the training images (none for 0), as Keras' validation_split does."""
    held_out = round(len(images) * fraction)
    if fraction and not 0 < held_out < len(images):
        raise InputError(f"{fraction} of {len(images)} training images leaves {held_out} to hold out and "
                         f"{len(images) - held_out} to train on: choose another fraction")
    keep = len(images) - held_out
    return Split(images[:keep], labels[:keep], images[keep:], labels[keep:])


def preprocess(images):
    """(N, 28, 28) pixels 0-255 -> (N, 28, 28, 1) float32 in [0, 1], the form the saved model reads."""
    return np.asarray(images, np.float32).reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 1) / 255
