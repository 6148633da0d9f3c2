"""Labelled image folders: DIR/0/ ... DIR/9/ (the layout of Keras' image_dataset_from_directory and
torchvision's ImageFolder), each image read through the same MNIST-form steps as --predict.

--evaluate reads one such folder; --data reads DIR/train/ and DIR/test/. Names starting with a dot
are skipped (the drawing page keeps the 28x28 images it showed in DIR/<digit>/.seen/, and its
temporary files are hidden), so nothing is counted twice. Bounds are checked before any image is
decoded: how many files, how many bytes, how many pixels. NumPy and Pillow only: no Keras.
"""

import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from digits import photos
from digits.errors import IMAGE_SIZE, NUM_CLASSES, InputError
from digits.files import open_regular

MAX_FILES = 200_000  # images in one folder set: MNIST's 60,000 training digits fit three times over
MAX_FILE_BYTES = 50 * 2**20  # a phone photo is a few MB
MAX_PIXELS = 50_000_000  # more than any phone camera; judged from the header, before decoding
LAYOUT = "DIR/0/ ... DIR/9/, one folder per digit, each holding images of that digit"


class Skipped(NamedTuple):
    """An image left out, and why (one line)."""

    path: Path
    reason: str


class FolderImages(NamedTuple):
    """The readable images of a labelled folder: uint8 (N, 28, 28) in MNIST's form, int32 labels, the
    file each came from (same order), and the files left out."""

    images: np.ndarray
    labels: np.ndarray
    paths: list
    skipped: list


def visible(entries):
    """The entries whose names do not start with a dot, sorted by name."""
    return sorted((entry for entry in entries if not entry.name.startswith(".")), key=lambda entry: entry.name)


def entries_of(folder):
    """The entries of a folder (os.scandir's), or InputError saying why it cannot be listed."""
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except PermissionError:
        raise InputError(f"{folder}: permission denied: make the folder readable (chmod +rx)") from None
    except OSError as e:
        raise InputError(f"{folder} cannot be listed ({e.strerror or type(e).__name__})") from None


def list_labelled(folder):
    """[(path, digit)] of the files in folder/0/ ... folder/9/, checked against the layout and MAX_FILES
    before anything is read. Raises InputError for a missing folder or a subfolder not named 0-9."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"{folder} does not exist: give a folder laid out as {LAYOUT}")
    if not folder.is_dir():
        raise InputError(f"{folder} is a file, not a folder: give a folder laid out as {LAYOUT}")
    subfolders = [entry for entry in visible(entries_of(folder)) if entry.is_dir()]
    for entry in subfolders:
        if entry.name not in {str(d) for d in range(NUM_CLASSES)}:
            split = (f"; for a training set's folders, give {Path(folder) / entry.name}"
                     if entry.name in ("train", "test") else "")
            raise InputError(f"{folder}: the folder {entry.name!r} is not a digit: every subfolder must be "
                             f"named 0 to 9 after the digit its images show (move or rename it){split}")
    files = []
    for entry in subfolders:
        for image in entries_of(entry.path):
            if image.name.startswith("."):
                continue
            files.append((Path(image.path), int(entry.name)))
            if len(files) > MAX_FILES:
                raise InputError(f"{folder} holds more than {MAX_FILES:,} images, more than this program "
                                 f"reads: split it, or pick a sample")
    files.sort(key=lambda pair: (pair[1], pair[0].name))
    if not files:
        raise InputError(f"{folder} holds no labelled image: lay it out as {LAYOUT}")
    return files


def read_digit(path):
    """One file as the 28x28 uint8 digit the network reads (MNIST's form), or InputError with the reason.

    A 28x28 grayscale image with a dark border passes unchanged, as it does for --predict. Only a
    regular file is opened (files.open_regular): a FIFO or a device is left out with its reason.
    """
    with open_regular(path, "an image") as file:
        size = os.fstat(file.fileno()).st_size
        if size > MAX_FILE_BYTES:
            raise InputError(f"{size / 2**20:.0f} MB, more than the {MAX_FILE_BYTES // 2**20} MB an image may be: "
                             f"scale it down first")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(file) as image:  # the header only
                    pixels = image.width * image.height
        except Exception:  # noqa: BLE001 -- read_image below says what is wrong in its own words
            pixels = 0
        if pixels > MAX_PIXELS:
            raise InputError(f"{pixels:,} pixels, more than the {MAX_PIXELS:,} an image may have: scale it down first")
        file.seek(0)
        digit, _ = photos.read_digit(file)
    return np.round(digit * 255).astype(np.uint8)


def read_labelled(folder, files=None):
    """The images of folder/0/ ... folder/9/ as FolderImages; an unreadable or blank one is left out
    and listed in `skipped`. `files` is list_labelled's answer, when already asked for."""
    files = list_labelled(folder) if files is None else files
    digits, labels, paths, skipped = [], [], [], []
    for path, label in files:
        try:
            digits.append(read_digit(path))
        except InputError as e:
            skipped.append(Skipped(path, str(e)))
            continue
        labels.append(label)
        paths.append(path)
    images = np.stack(digits) if digits else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return FolderImages(images, np.array(labels, np.int32), paths, skipped)


def is_split_folder(folder):
    """Whether `folder` holds train/ and test/ subfolders (a training set of labelled image folders)."""
    folder = Path(folder)
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def load_split(folder, seed=0):
    """folder/train/0..9/ and folder/test/0..9/ as [x_train, y_train, x_test, y_test]; every image must
    read (a run trains on what it was given or not at all). Each set is shuffled in a fixed order, so
    that a limit or a validation split takes every digit, not the first folders."""
    folder = Path(folder)
    arrays = []
    for split, name in (("training", "train"), ("test", "test")):
        read = read_labelled(folder / name)
        if read.skipped:
            first = read.skipped[0]
            more = f" (and {len(read.skipped) - 1} more)" if len(read.skipped) > 1 else ""
            raise InputError(f"{first.path}: {first.reason}{more}: every image of a {split} folder must hold "
                             f"one digit, remove or replace it")
        order = np.random.default_rng(seed).permutation(len(read.labels))
        arrays += [read.images[order], read.labels[order]]
    return arrays
