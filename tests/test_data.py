"""The data loaders: IDX (raw and gzipped, both file-name spellings), .npz, checksums, preprocessing."""
import gzip
import shutil

import numpy as np
import pytest

import handwritten_digit_classification as hdc


def write_idx(path, array, compress=False):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_idx_folder(folder, dotted=False, compress=False, n_train=5, n_test=3):
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        filename = name.replace("-idx", ".idx") if dotted else name
        write_idx(folder / (filename + (".gz" if compress else "")), array, compress)
    return [arrays[name] for name in hdc.MNIST_SHA256]


@pytest.mark.parametrize("dotted", [False, True], ids=["dash", "dot"])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_idx_folder_reads_every_spelling(tmp_path, dotted, compress):
    expected = make_idx_folder(tmp_path, dotted=dotted, compress=compress)
    (x_train, y_train, x_test, y_test), source = hdc.load_mnist(str(tmp_path))
    for got, want in zip((x_train, y_train, x_test, y_test), expected):
        np.testing.assert_array_equal(got, want)
    assert source == str(tmp_path.resolve())


def test_npz_in_keras_layout(tmp_path):
    expected = make_idx_folder(tmp_path / "idx")
    np.savez(tmp_path / "mnist.npz", **dict(zip(hdc.NPZ_KEYS, expected)))
    arrays, _ = hdc.load_mnist(str(tmp_path / "mnist.npz"))
    for got, want in zip(arrays, expected):
        np.testing.assert_array_equal(got, want)


def test_bundled_copy_is_real_mnist():
    (x_train, y_train, x_test, y_test), source = hdc.load_mnist("bundled")
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert "bundled" in source


def test_checksums_catch_a_changed_byte(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(hdc.BUNDLED_DIR, folder)
    assert len(hdc.load_idx_folder(folder, verify_checksums=True)) == 4
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(labels.read_bytes()))
    data[100] = (data[100] + 1) % 10  # still a valid label file, just not MNIST's
    labels.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(hdc.InputError, match="SHA-256"):
        hdc.load_idx_folder(folder, verify_checksums=True)
    assert len(hdc.load_idx_folder(folder)) == 4  # user folders (Fashion-MNIST...) are not checked


def test_preprocess_shapes_and_scales():
    images = np.array([[[0] * 28] * 28, [[255] * 28] * 28], dtype=np.uint8)
    x = np.asarray(hdc.preprocess(images))
    assert x.shape == (2, 28, 28, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
