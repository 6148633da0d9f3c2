"""The data loaders: IDX (raw and gzipped, both file-name spellings), .npz, checksums, preprocessing;
and data that looks valid but is not (floats, NaN, one-hot labels, headers that promise too much)."""
import gzip
import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from conftest import bundled_mnist, make_idx_folder, run_main, small_mnist, write_npz_member

from digits import data, errors


@pytest.mark.parametrize("dotted", [False, True], ids=["dash", "dot"])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_idx_folder_reads_every_spelling(tmp_path, dotted, compress):
    expected = make_idx_folder(tmp_path, dotted=dotted, compress=compress)
    x_train, y_train, x_test, y_test, source = data.load_mnist(str(tmp_path))
    for got, want in zip((x_train, y_train, x_test, y_test), expected):
        np.testing.assert_array_equal(got, want)
    assert source == str(tmp_path.resolve())


def test_npz_in_keras_layout(tmp_path):
    expected = make_idx_folder(tmp_path / "idx")
    np.savez(tmp_path / "mnist.npz", **dict(zip(data.NPZ_KEYS, expected)))
    *arrays, _ = data.load_mnist(str(tmp_path / "mnist.npz"))
    for got, want in zip(arrays, expected):
        np.testing.assert_array_equal(got, want)


def test_bundled_copy_is_real_mnist():
    x_train, y_train, x_test, y_test, source = bundled_mnist()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert "bundled" in source


def test_checksums_catch_a_changed_byte(tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(data.BUNDLED_DIR, folder)
    assert len(data.load_idx_folder(folder, verify_checksums=True)) == 4
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels.read_bytes()))
    content[100] = (content[100] + 1) % 10  # still a valid label file, just not MNIST's
    labels.write_bytes(gzip.compress(bytes(content)))
    with pytest.raises(errors.InputError, match="SHA-256"):
        data.load_idx_folder(folder, verify_checksums=True)
    assert len(data.load_idx_folder(folder)) == 4  # user folders (Fashion-MNIST...) are not checked


def test_preprocess_shapes_and_scales():
    images = np.array([[[0] * 28] * 28, [[255] * 28] * 28], dtype=np.uint8)
    x = np.asarray(data.preprocess(images))
    assert x.shape == (2, 28, 28, 1) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0


# --- Data that looks valid but is not (issue 10) ---------------------------------------------


def save_npz(path, x_train, y_train, x_test, y_test, compressed=False):
    (np.savez_compressed if compressed else np.savez)(path, x_train=x_train, y_train=y_train,
                                                       x_test=x_test, y_test=y_test)
    return path


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_float_pixels_in_0_1_are_scaled_back_to_the_same_uint8(tmp_path, dtype):
    """x / 255, the most common float form, must give the network exactly the pixels of the uint8 file."""
    x_train, y_train, x_test, y_test = small_mnist()
    save_npz(tmp_path / "m.npz", (x_train / 255).astype(dtype), y_train, (x_test / 255).astype(dtype), y_test)
    got_train, got_y, got_test, _, source = data.load_mnist(str(tmp_path / "m.npz"))
    assert got_train.dtype == np.uint8 and got_train.shape == x_train.shape
    np.testing.assert_array_equal(got_train, x_train)
    np.testing.assert_array_equal(got_test, x_test)
    assert got_y.dtype == np.int32
    assert source == f"{(tmp_path / 'm.npz').resolve()} (float pixels in [0, 1], scaled to 0-255)"


def test_float_pixels_0_255_are_rounded(tmp_path):
    x_train, y_train, x_test, y_test = small_mnist()
    save_npz(tmp_path / "m.npz", x_train * 0.999 + 0.2, y_train, x_test.astype("float32"), y_test)
    got_train, _, got_test, _, source = data.load_mnist(str(tmp_path / "m.npz"))
    np.testing.assert_array_equal(got_train, x_train)
    np.testing.assert_array_equal(got_test, x_test)
    assert source.endswith("(float pixels 0-255, rounded)")


def test_channel_axis_flat_rows_one_hot_labels_and_upper_case_suffix(tmp_path):
    """(N, 28, 28, 1) images, (N, 784) rows, exactly one-hot labels and data.NPZ are all read as meant."""
    x_train, y_train, x_test, y_test = small_mnist()
    save_npz(tmp_path / "m.npz", x_train[..., None], np.eye(10, dtype="float32")[y_train],
             x_test.reshape(len(x_test), 784).astype("int64"), y_test.astype("uint8"))
    (tmp_path / "m.npz").rename(tmp_path / "DATA.NPZ")
    got_train, got_y_train, got_test, got_y_test, source = data.load_mnist(str(tmp_path / "DATA.NPZ"))
    for got, want in zip((got_train, got_y_train, got_test, got_y_test), (x_train, y_train, x_test, y_test)):
        np.testing.assert_array_equal(got, want)
    assert (got_train.dtype, got_test.dtype, got_y_train.dtype, got_y_test.dtype) == (np.uint8,) * 2 + (np.int32,) * 2
    assert got_train.shape == got_test.shape[:0] + (50, 28, 28) and got_test.shape == (20, 28, 28)
    for note in ["(N, 28, 28, 1) images, channel dropped", "rows of 784 pixels, reshaped to 28x28",
                 "one-hot labels read as class indices"]:
        assert note in source


def test_compressed_npz_and_uint8_need_no_note(tmp_path):
    arrays = small_mnist()
    save_npz(tmp_path / "m.npz", *arrays, compressed=True)
    *got, source = data.load_mnist(str(tmp_path / "m.npz"))
    for g, want in zip(got, arrays):
        np.testing.assert_array_equal(g, want)
    assert source == str((tmp_path / "m.npz").resolve())


def bad_pixels(x):
    """Each kind of image array that is refused, made from real images x (uint8)."""
    nan, inf = x.astype("float32"), x.astype("float64")
    nan[0, 5, 5], inf[1, 3, 3] = np.nan, -np.inf
    return {
        "nan": (nan, "NaN or infinite"),
        "inf": (inf, "NaN or infinite"),
        "complex": (x.astype("complex64"), "found complex64"),
        "bool": (x > 128, "found bool"),
        "negative": (x.astype("float32") / 127.5 - 1, "from -1.0 to 1.0"),
        "above 255": (x.astype("int32") * 4, "to 1020"),
        "strings": (x.astype("U3"), "not numbers"),
    }


@pytest.mark.parametrize("kind", list(bad_pixels(np.zeros((2, 28, 28), np.uint8))))
def test_pixels_that_are_not_0_to_255_numbers_are_refused(tmp_path, kind):
    x_train, y_train, x_test, y_test = small_mnist()
    images, words = bad_pixels(x_train)[kind]
    save_npz(tmp_path / "m.npz", images, y_train, x_test, y_test)
    with pytest.raises(errors.InputError, match="training images" if kind != "strings" else "x_train") as refused:
        data.load_mnist(str(tmp_path / "m.npz"))
    assert words in str(refused.value) and "\n" not in str(refused.value)


def test_splits_on_different_scales_are_refused(tmp_path):
    """[0, 1] training images with 0-255 test images: one of the two must be a mistake."""
    x_train, y_train, x_test, y_test = small_mnist()
    save_npz(tmp_path / "m.npz", x_train / 255, y_train, x_test, y_test)
    with pytest.raises(errors.InputError, match=r"training images are float pixels in \[0, 1\].*test images are "
                                             r"pixels 0-255: save both on one scale"):
        data.load_mnist(str(tmp_path / "m.npz"))


@pytest.mark.parametrize("labels,words", [
    (lambda y: np.eye(10)[y] * 0.9 + 0.01, "not one-hot"),  # softmax-like scores
    (lambda y: np.eye(10)[y] + np.eye(10)[(y + 1) % 10], "not one-hot"),  # two classes per row
    (lambda y: y.astype("float32"), "labels must be integers 0-9, found float32"),
    (lambda y: np.stack([y, y], axis=1), "(N,) class indices"),
])
def test_labels_that_are_not_class_indices_are_refused(tmp_path, labels, words):
    x_train, y_train, x_test, y_test = small_mnist()
    save_npz(tmp_path / "m.npz", x_train, y_train, x_test, labels(y_test))
    with pytest.raises(errors.InputError, match="test labels") as refused:
        data.load_mnist(str(tmp_path / "m.npz"))
    assert words in str(refused.value)


@pytest.mark.parametrize("header,payload,words", [
    ({"descr": "|u1", "fortran_order": False, "shape": (10**9, 28, 28)}, b"\x00" * 64,
     "declare 1,000,000,000 entries, more than the 1,000,000"),
    ({"descr": "<f8", "fortran_order": False, "shape": (900_000, 28, 28)}, b"\x00" * 64, "more than the 4 GiB"),
    ({"descr": "|u1", "fortran_order": False, "shape": (500_000, 28, 28)}, b"\x00" * 64,
     "392,000,000 bytes, but holds 64"),
    ({"descr": "|u1", "fortran_order": False, "shape": (2, 28, 28)}, b"\x00" * 2000, "1,568 bytes, but holds 2,000"),
    ({"descr": "|u1", "fortran_order": False, "shape": (5, 32, 32)}, b"\x00" * 5120, "have shape (5, 32, 32)"),
    ({"descr": [("a", "<i4"), ("b", "<f4")], "fortran_order": False, "shape": (5, 28, 28)}, b"", "not numbers"),
    ({"descr": "|O", "fortran_order": False, "shape": (5, 28, 28)}, b"", "object arrays"),
])
def test_npz_headers_are_judged_before_memory_is_spent(tmp_path, header, payload, words):
    """A member that declares a huge shape over a few bytes: refused from its header, never a MemoryError."""
    path = write_npz_member(tmp_path / "m.npz", "x_train", header, payload)
    with pytest.raises(errors.InputError) as refused:
        data.load_mnist(str(path))
    assert words in str(refused.value) and "\n" not in str(refused.value)


def idx_bytes(shape, data=b""):
    return bytes([0, 0, 8, len(shape)]) + b"".join(int(n).to_bytes(4, "big") for n in shape) + data


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("content,words", [
    (idx_bytes((4_000_000_000, 28, 28)), "declare 4,000,000,000 entries, more than the 1,000,000"),
    (idx_bytes((5, 30_000, 30_000)), "have shape (5, 30000, 30000)"),
    (idx_bytes((5, 28, 28), bytes(5 * 784 + 1)), "more data than its header declares"),
    (idx_bytes((5, 28, 28), bytes(5 * 784 - 1)), "truncated"),
    (idx_bytes((5, 28, 28))[:10], "ends inside its header"),
], ids=["count", "size", "excess", "short", "header-cut"])
def test_idx_headers_bound_what_is_read(tmp_path, compress, content, words):
    make_idx_folder(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(gzip.compress(content) if compress else content)
    with pytest.raises(errors.InputError, match="train-images-idx3-ubyte") as refused:
        data.load_mnist(str(tmp_path))
    assert words in str(refused.value)


def test_float_pixels_in_0_1_train_exactly_like_uint8(tmp_path):
    """The same images as floats in [0, 1] train to exactly the numbers of the uint8 file (same seed and
    precision): the network sees the same pixels."""
    x_train, y_train, x_test, y_test = small_mnist(1000, 300)
    save_npz(tmp_path / "uint8.npz", x_train, y_train, x_test, y_test)
    save_npz(tmp_path / "float.npz", (x_train / 255).astype("float32"), y_train,
             (x_test / 255).astype("float32"), y_test)
    runs = {}
    for name in ("uint8", "float"):
        result = run_main("--data", tmp_path / f"{name}.npz", "--epochs", "2", "--batch-size", "32", "--seed", "0",
                          "--precision", "float32", "--output-dir", tmp_path / name)
        assert result.returncode == 0, result.stderr
        runs[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        runs[name]["history"].pop("epoch_seconds")
    for name, run in runs.items():  # an .npz end to end: its images counted, its name recorded
        assert run["data"]["train_images"] == 1000 and run["data"]["test_images"] == 300, name
    assert runs["uint8"]["data"]["source"].endswith("uint8.npz")
    assert runs["float"]["data"]["source"].endswith("(float pixels in [0, 1], scaled to 0-255)")
    assert runs["uint8"]["test_accuracy"] > 0.8
    for key in ("history", "confusion_matrix", "test_accuracy", "test_loss"):
        assert runs["float"][key] == runs["uint8"][key], key


def test_npy_header_length_is_checked_before_numpy_reads_it(tmp_path):
    """A version 2.0 .npy header may claim up to 4 GiB; numpy would read all the member gives it."""
    path = tmp_path / "m.npz"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, array in zip(data.NPZ_KEYS, small_mnist(5, 3)):
            member = io.BytesIO()
            np.save(member, array)
            content = member.getvalue()
            if name == "x_train":  # magic, version 2.0, a header length of 3 GiB, then 64 MiB of spaces
                content = b"\x93NUMPY\x02\x00" + (3 << 30).to_bytes(4, "little") + b" " * (64 << 20)
            archive.writestr(name + ".npy", content)
    with pytest.raises(errors.InputError, match=r"x_train has a .npy header of 3,221,225,472 bytes"):
        data.load_mnist(str(path))


def test_a_folder_of_no_data_names_every_form_data_takes(tmp_path, capsys):
    """An empty folder (or one with a train/ folder only) is told the three forms a --data folder or file
    takes, not only the IDX files; through the real command line, in one line."""
    import handwritten_digit_classification as program

    forms = ("a data folder holds the four MNIST IDX files, or train/0/ ... train/9/ and test/0/ ... test/9/ "
             "folders of images (or give a .npz)")
    (tmp_path / "empty").mkdir()
    (tmp_path / "half" / "train" / "3").mkdir(parents=True)
    for folder in ("empty", "half"):
        with pytest.raises(errors.InputError) as refused:
            program.main(["--data", str(tmp_path / folder), "--output-dir", str(tmp_path / "out")])
        assert str(refused.value) == (f"--data: {tmp_path / folder} has no train-images-idx3-ubyte[.gz] "
                                      f"(nor train-images.idx3-ubyte[.gz]): {forms}")
    with pytest.raises(errors.InputError, match=r"does not exist: .*\.npz file, or a folder with train/0\.\.9/ and "
                                                r"test/0\.\.9/ image folders$"):
        data.load_mnist(str(tmp_path / "nowhere"))
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(errors.InputError, match=r"is neither a \.npz file nor a folder \(of IDX files, or of digit "):
        data.load_mnist(str(tmp_path / "x.txt"))
