"""Bad input: one line naming the problem and what to do, exit status 2, no traceback, nothing written.

Each case runs the real command line. The output folder holds a previous run's file, which must
come through untouched.
"""
import gzip
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import (
    ROOT,
    SCRIPT,
    bundled_mnist,
    make_idx_folder,
    make_unreadable,
    refusal,
    run_cli,
    run_main,
    write_idx,
    write_npz_member,
)
from PIL import Image


def assert_refused(result, *words):
    message = refusal(result)
    for word in words:
        assert word in message, message
    assert "Epoch 1/" not in result.stdout  # refused before any training


@pytest.fixture
def out(tmp_path):
    """An output folder with a previous run's file in it."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "metrics.json").write_text('{"test_accuracy": 0.99}\n')
    yield folder
    assert sorted(p.name for p in folder.iterdir()) == ["metrics.json"]
    assert (folder / "metrics.json").read_text() == '{"test_accuracy": 0.99}\n'


def refuse_data(data, out, *words):
    assert_refused(run_main("--data", data, "--epochs", "1", "--output-dir", out), *words)


def test_missing_data_path(tmp_path, out):
    refuse_data(tmp_path / "nowhere", out, "does not exist", "--data")


def test_names_in_error_lines_are_escaped(tmp_path, out):
    """A newline or an escape sequence in a name the user gave shows as repr shows it: the line stays one."""
    refuse_data(tmp_path / "no\nsuch\x1b[2J", out, f"{tmp_path}/no\\nsuch\\x1b[2J does not exist")
    assert_refused(run_main("--epochs", "1", "stray\n\x1b[2Jword", "--output-dir", out),
                   "unrecognized arguments: stray\\n\\x1b[2Jword")


def test_folder_missing_a_file(tmp_path, out):
    make_idx_folder(tmp_path / "d")
    (tmp_path / "d" / "t10k-labels-idx1-ubyte").unlink()
    refuse_data(tmp_path / "d", out, "t10k-labels-idx1-ubyte", "the four MNIST IDX files", "train/0/")


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_damaged_gzip(tmp_path, out, damage):
    make_idx_folder(tmp_path / "d", compress=True)
    path = tmp_path / "d" / "train-images-idx3-ubyte.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:10] + b"\x00garbage" * 50)
    refuse_data(tmp_path / "d", out, "train-images-idx3-ubyte.gz", "truncated or corrupt gzip")


def test_wrong_magic_number(tmp_path, out):
    make_idx_folder(tmp_path / "d")
    write_idx(tmp_path / "d" / "train-labels-idx1-ubyte", np.zeros((5, 28, 28)))  # images where labels go
    refuse_data(tmp_path / "d", out, "train-labels-idx1-ubyte", "not an IDX file of labels")


def test_idx_shorter_than_its_header_says(tmp_path, out):
    make_idx_folder(tmp_path / "d")
    path = tmp_path / "d" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    refuse_data(tmp_path / "d", out, "truncated")


@pytest.mark.parametrize("where", ["idx", "npz", "image-folder"])
def test_a_fifo_in_the_data_is_refused_without_being_opened(tmp_path, out, where):
    """A named pipe where a data file goes: opening it would wait for a writer for ever."""
    if where == "idx":
        make_idx_folder(tmp_path / "d")
        fifo = tmp_path / "d" / "train-images-idx3-ubyte"
        fifo.unlink()
        data, what = tmp_path / "d", "an IDX file"
    elif where == "npz":
        fifo = data = tmp_path / "m.npz"
        what = "a .npz file"
    else:
        x_train, y_train, _, _, _ = bundled_mnist()
        for split in ("train", "test"):
            for n in range(4):
                (tmp_path / "d" / split / str(y_train[n])).mkdir(parents=True, exist_ok=True)
                Image.fromarray(x_train[n]).save(tmp_path / "d" / split / str(y_train[n]) / f"{n}.png")
        fifo = tmp_path / "d" / "train" / str(y_train[0]) / "pipe.png"
        data, what = tmp_path / "d", "an image"
    os.mkfifo(fifo)
    result = run_main("--data", data, "--epochs", "1", "--output-dir", out)
    assert_refused(result, "--data", f"{fifo}: a named pipe (FIFO), not {what}: only regular files are read")


def test_an_unreadable_idx_file(tmp_path, out):
    make_idx_folder(tmp_path / "d")
    path = tmp_path / "d" / "train-labels-idx1-ubyte"
    path.unlink()
    make_unreadable(path)
    refuse_data(tmp_path / "d", out, "--data", f"{path}: permission denied: make it readable")


def test_images_not_28x28(tmp_path, out):
    make_idx_folder(tmp_path / "d")
    write_idx(tmp_path / "d" / "t10k-images-idx3-ubyte", np.zeros((3, 32, 32)))
    refuse_data(tmp_path / "d", out, "test images have shape (3, 32, 32)", "(N, 28, 28)")


def test_images_and_labels_of_different_counts(tmp_path, out):
    make_idx_folder(tmp_path / "d")
    write_idx(tmp_path / "d" / "train-labels-idx1-ubyte", np.zeros(4))
    refuse_data(tmp_path / "d", out, "5 training images", "one to one")


def test_labels_outside_0_to_9(tmp_path, out):
    make_idx_folder(tmp_path / "d")
    write_idx(tmp_path / "d" / "train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 12]))
    refuse_data(tmp_path / "d", out, "labels must be integers 0-9", "to 12")


def test_npz_missing_a_key(tmp_path, out):
    np.savez(tmp_path / "m.npz", x_train=np.zeros((2, 28, 28)), y_train=np.zeros(2), x_test=np.zeros((2, 28, 28)))
    refuse_data(tmp_path / "m.npz", out, "lacks y_test")


def test_npz_with_object_arrays_is_never_unpickled(tmp_path, out):
    marker = tmp_path / "pwned"
    payload = np.array([PickleBomb(str(marker))], dtype=object)
    np.savez(tmp_path / "m.npz", x_train=payload, y_train=np.zeros(1), x_test=payload, y_test=np.zeros(1))
    refuse_data(tmp_path / "m.npz", out, "object arrays", "refused")
    assert not marker.exists()


class PickleBomb:
    """Unpickling this creates a file: proof that something ran code from the data file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_bundled_file_with_wrong_checksum(tmp_path, out):
    """A copy of the program whose bundled data has one changed label."""
    shutil.copy(SCRIPT, tmp_path / SCRIPT.name)
    shutil.copytree(ROOT / "digits", tmp_path / "digits")
    shutil.copytree(ROOT / "data", tmp_path / "data")
    labels = tmp_path / "data" / "mnist" / "train-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(labels.read_bytes()))
    data[8] = (data[8] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(data)))
    result = run_cli("--epochs", "1", "--output-dir", out, script=tmp_path / SCRIPT.name)
    assert_refused(result, "train-labels-idx1-ubyte.gz", "SHA-256", "git checkout")


@pytest.mark.parametrize("flag,value", [("--epochs", "0"), ("--batch-size", "-1"), ("--limit-train", "0"),
                                        ("--limit-test", "-5"), ("--epochs", "ten")])
def test_numbers_must_be_positive(out, flag, value):
    assert_refused(run_main(flag, value, "--output-dir", out), flag, repr(value) if value == "ten" else value)


def test_output_dir_is_a_file(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert_refused(run_main("--epochs", "1", "--output-dir", target), "is a file")
    assert_refused(run_main("--epochs", "1", "--output-dir", target / "sub"), "is a file")
    assert target.read_text() == "keep me"


def test_output_dir_not_writable(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits: use a place no one can write
        target = "/sys/mnist-outputs"
    else:
        (tmp_path / "locked").mkdir(mode=0o500)
        target = tmp_path / "locked" / "out"
    assert_refused(run_main("--epochs", "1", "--output-dir", target), "not writable")


def test_keras_download_that_fails(tmp_path, out):
    """--data keras with no way out (a proxy on a closed port): one line, and a way round it."""
    closed = "http://127.0.0.1:9"
    env = {"HOME": str(tmp_path), "KERAS_HOME": str(tmp_path / ".keras"), "https_proxy": closed,
           "http_proxy": closed, "HTTPS_PROXY": closed, "HTTP_PROXY": closed}
    result = run_cli("--data", "keras", "--epochs", "1", "--output-dir", out, env=env)
    assert_refused(result, "--data", "could not download MNIST through Keras", "use the bundled copy")


def npz_of(path, **change):
    """A small .npz from the bundled MNIST with some arrays replaced."""
    x_train, y_train, x_test, y_test, _ = bundled_mnist()
    arrays = {"x_train": x_train[:20], "y_train": y_train[:20], "x_test": x_test[:10], "y_test": y_test[:10]}
    np.savez(path, **{**arrays, **{key: make(arrays[key]) for key, make in change.items()}})
    return path


def with_nan(x):
    x = x / 255
    x[3, 14, 14] = np.nan
    return x


@pytest.mark.parametrize("change,words", [
    ({"x_train": with_nan}, ["training images hold NaN or infinite values"]),
    ({"x_test": lambda x: x.astype("complex128")}, ["test images must be pixel values 0-255", "complex128"]),
    ({"y_test": lambda y: np.eye(10)[y] * 0.8 + 0.02}, ["not one-hot", "argmax"]),
], ids=["nan", "complex", "scores-not-one-hot"])
def test_npz_values_that_are_not_digits(tmp_path, out, change, words):
    refuse_data(npz_of(tmp_path / "m.npz", **change), out, *words)


def test_npz_member_declaring_a_huge_shape(tmp_path, out):
    """A header that promises 10^9 images over a few bytes: refused from the header, not a MemoryError."""
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**9, 28, 28)}
    path = write_npz_member(tmp_path / "m.npz", "x_train", header, bytes(64))
    refuse_data(path, out, "training images declare 1,000,000,000 entries", "more than the 1,000,000")


# The child's peak memory, measured by a parent of its own so that no other child of pytest counts.
PEAK_RSS = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "sys.stderr.write(r.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); "
            "sys.exit(r.returncode)")


def refused_with_peak_memory(data, out):
    """Run the CLI on data, check it is refused, return its peak resident memory in MiB."""
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, str(SCRIPT), "--data", str(data),
                             "--epochs", "1", "--output-dir", str(out)], capture_output=True, text=True, timeout=300,
                            check=False)
    assert_refused(result, "train-images-idx3-ubyte.gz", "more data than its header declares")
    return int(result.stdout.split()[-1]) / 1024  # Linux reports KiB


def test_gzip_bomb_is_refused_with_bounded_memory(tmp_path, out):
    """An IDX .gz whose header promises 20 images and whose stream inflates to 4 GiB of zeros (4 MB on
    disk): refused after reading one byte past the promise, using no more memory than a 1 MiB excess."""
    folder = tmp_path / "d"
    make_idx_folder(folder, compress=True, n_train=20)
    path = folder / "train-images-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (20, 28, 28))
    zeros = io.BytesIO()
    with gzip.GzipFile(fileobj=zeros, mode="wb", compresslevel=9) as stream:
        for _ in range(16):  # 256 MiB, 16 MiB at a time
            stream.write(bytes(16 << 20))
    with path.open("wb") as file:
        with gzip.GzipFile(fileobj=file, mode="wb") as stream:
            stream.write(header + bytes(20 * 784))
        for _ in range(16):  # gzip members read as one stream: 16 x 256 MiB = 4 GiB of excess zeros
            file.write(zeros.getvalue())
    assert path.stat().st_size < 8 << 20
    bomb = refused_with_peak_memory(folder, out)

    small = tmp_path / "small"
    make_idx_folder(small, compress=True, n_train=20)
    (small / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(20 * 784 + (1 << 20))))
    baseline = refused_with_peak_memory(small, out)
    print(f"peak memory: {bomb:.0f} MiB for the 4 GiB bomb, {baseline:.0f} MiB for a 1 MiB excess")
    assert bomb < baseline + 64, (bomb, baseline)


def test_npz_images_that_inflate_a_hundredfold_are_refused_before_inflating(tmp_path):
    """20,000 float32 images of zeros: 63 MB in 61 KB, as no images compress (MNIST's: 5-20 times). Refused
    from the zip's own sizes, before a byte is inflated; real data compressed the same way still loads."""
    from digits.data import load_mnist
    from digits.errors import InputError

    _, y_train, x_test, y_test, _ = bundled_mnist()
    bomb = tmp_path / "bomb.npz"
    np.savez_compressed(bomb, x_train=np.zeros((20_000, 28, 28), np.float32), y_train=np.resize(y_train, 20_000),
                        x_test=x_test[:10], y_test=y_test[:10])
    with pytest.raises(InputError, match="compress 100 times, so it is not a data set"):
        load_mnist(str(bomb))
    real = tmp_path / "real.npz"
    np.savez_compressed(real, x_train=bundled_mnist().x_train[:20_000].astype(np.float32) / 255,
                        y_train=y_train[:20_000], x_test=x_test[:10].astype(np.float32) / 255, y_test=y_test[:10])
    assert load_mnist(str(real)).x_train.shape == (20_000, 28, 28)
