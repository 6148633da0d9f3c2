"""Fuzzing the IDX and .npz readers: whatever the bytes, a file is loaded as valid arrays or refused
with the program's one-line InputError; no other exception, no traceback, no runaway memory."""
import gzip
import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import make_idx_folder
from hypothesis import given, settings
from hypothesis import strategies as st

from digits import data, errors

FUZZ = settings(max_examples=150, deadline=None, database=None)

# A damaged file: bytes replaced (biased towards the header, where a flip changes what is promised),
# cut short, or random bytes from the start.
positions = st.one_of(st.integers(0, 200), st.integers(0, 1 << 20))
damage = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(positions, st.integers(0, 255)), min_size=1, max_size=6)),
    st.tuples(st.just("truncate"), positions),
    st.tuples(st.just("random"), st.binary(max_size=600)),
)


def damaged(data, how):
    kind, detail = how
    if kind == "random":
        return detail
    if kind == "truncate":
        return data[: detail % (len(data) + 1)]
    data = bytearray(data)
    for position, value in detail:
        data[position % len(data)] = value
    return bytes(data)


def assert_valid_or_refused(source):
    try:
        x_train, y_train, x_test, y_test, description = data.load_mnist(str(source))
    except errors.InputError as e:
        message = str(e)
        assert message and "\n" not in message and "Traceback" not in message, message
        return "refused"
    for x, y in ((x_train, y_train), (x_test, y_test)):
        assert x.dtype == np.uint8 and x.ndim == 3 and x.shape[1:] == (28, 28) and len(x) > 0
        assert y.dtype == np.int32 and y.shape == (len(x),) and 0 <= y.min() and y.max() <= 9
    assert "\n" not in description
    return "loaded"


def small_arrays():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), rng.integers(0, 10, 3, dtype=np.uint8),
            rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), rng.integers(0, 10, 2, dtype=np.uint8)]


@FUZZ
@given(which=st.sampled_from(list(data.MNIST_SHA256)), form=st.sampled_from(["raw", "gzip", "inside gzip"]),
       how=damage)
def test_idx_reader_loads_or_refuses_any_bytes(which, form, how):
    """Damage to a raw IDX file, to a gzipped one, or to the IDX bytes inside a sound gzip stream."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        make_idx_folder(folder, compress=form != "raw", n_train=3, n_test=2)
        path = folder / (which + ("" if form == "raw" else ".gz"))
        if form == "inside gzip":
            path.write_bytes(gzip.compress(damaged(gzip.decompress(path.read_bytes()), how)))
        else:
            path.write_bytes(damaged(path.read_bytes(), how))
        assert_valid_or_refused(folder)


@FUZZ
@given(compressed=st.booleans(), dtype=st.sampled_from(["uint8", "float32", "float64", "int64"]),
       how=damage)
def test_npz_reader_loads_or_refuses_any_bytes(compressed, dtype, how):
    x_train, y_train, x_test, y_test = small_arrays()
    if dtype != "uint8":  # floats saved as x / 255, the common form; ints as they are
        scale = 255 if dtype.startswith("float") else 1
        x_train, x_test = (x_train / scale).astype(dtype), (x_test / scale).astype(dtype)
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, x_train=x_train, y_train=y_train,
                                                       x_test=x_test, y_test=y_test)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "m.npz"
        path.write_bytes(damaged(buffer.getvalue(), how))
        assert_valid_or_refused(path)


@pytest.mark.parametrize("compressed", [False, True])
def test_the_undamaged_files_load(tmp_path, compressed):
    """The fuzz tests start from files that load: their refusals come from the damage."""
    make_idx_folder(tmp_path / "idx", compress=compressed, n_train=3, n_test=2)
    assert assert_valid_or_refused(tmp_path / "idx") == "loaded"
    np.savez(tmp_path / "m.npz", **dict(zip(data.NPZ_KEYS, small_arrays())))
    assert assert_valid_or_refused(tmp_path / "m.npz") == "loaded"
