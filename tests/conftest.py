"""Shared helpers of the tests: running the program, the bundled data read once, data and photo makers."""
import contextlib
import functools
import glob
import gzip
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "handwritten_digit_classification.py"
sys.path.insert(0, str(ROOT))

from digits.data import MNIST_SHA256, NPZ_KEYS  # noqa: E402 (after the path)
from tools.digit_photos import mnist_digits  # noqa: E402

# The precision measurements the runs remember go to a folder of this session's own, never the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="digits-cache-")

# pytest-xdist's workers (-n) start with COLUMNS=80 and LINES=24 set; the program's runs, in a pipe as
# in a log, would take them for a terminal's width.
if "PYTEST_XDIST_WORKER" in os.environ:
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)

# Importing JAX (Keras does, in this process) sets TF_CPP_MIN_LOG_LEVEL=1; a user's shell has only what it was given.
SHELL_LOG_LEVEL = os.environ.get("TF_CPP_MIN_LOG_LEVEL")

# A slice of the bundled MNIST that trains to >0.9 test accuracy in a few seconds.
QUICK = ["--limit-train", "3000", "--limit-test", "1000", "--epochs", "2", "--batch-size", "32"]


def run_cli(*args, script=SCRIPT, timeout=300, env=None):
    """Run the program as a user would, in its own process, with this environment plus `env`:
    on TensorFlow whatever the caller's shell says, unless `env` names another backend."""
    inherited = {key: value for key, value in os.environ.items()
                 if key != "TF_CPP_MIN_LOG_LEVEL" or SHELL_LOG_LEVEL is not None}
    env = {**inherited, "KERAS_BACKEND": "tensorflow", **(env or {}), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, env=env, check=False)


class Ran(NamedTuple):
    """What a run of the program gave: its exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def run_main(*args, env=None, merged=False):
    """Run the program in this process, as its command line would (`run(argv)`: a refusal is one line
    and exit status 2), with its output captured (`merged`: stderr into stdout, as a terminal shows them)
    and `env` set for the run. Keras's global state (the dtype policy a run chose, the names of its
    layers) is reset afterwards, as a new process would have it."""
    import handwritten_digit_classification as program

    stdout = io.StringIO()
    stderr = stdout if merged else io.StringIO()
    env = {key: str(value) for key, value in (env or {}).items()}
    before = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                code = program.run([str(arg) for arg in args])
            except SystemExit as e:  # argparse: --help (0) and a mistyped option (2)
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if "keras" in sys.modules:
            import keras

            keras.config.set_dtype_policy("float32")
            keras.utils.clear_session()
    return Ran(code, stdout.getvalue(), "" if merged else stderr.getvalue())


def refusal(result):
    """The message of a run refused as bad input: exit status 2, one line, no traceback."""
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, message
    return message


def bundled_mnist():
    """The bundled MNIST, decompressed and checksummed once per test session (tools.digit_photos' copy)."""
    return mnist_digits()


@pytest.fixture(scope="session")
def number_reader():
    """The shipped number reader, as find_digits takes it: strips -> Readings."""
    from digits.reader import load_reader, read_strips

    return functools.partial(read_strips, load_reader())


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One quick real training run, shared by the tests that read its outputs or use its model."""
    out = tmp_path_factory.mktemp("trained")
    # a cache of its own: its auto precision is measured (not remembered from another test's run)
    result = run_main(*QUICK, "--seed", "0", "--output-dir", out, env={"XDG_CACHE_HOME": out / "cache"})
    assert result.returncode == 0, result.stderr
    return out, result, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="session")
def non_default_run(tmp_path_factory):
    """One quick real run with three settings other than the defaults, none of which changes what the
    others are tested for: bfloat16 mixed precision, a fifth of the training images held out for
    validation (the curves watch them), the constant learning rate. Shared by the tests of each
    setting (0.92 to 0.93 test accuracy, seeds 1 to 4): (out, result, metrics)."""
    out = tmp_path_factory.mktemp("non-default")
    result = run_main(*QUICK, "--precision", "bfloat16", "--validation-split", "0.2", "--lr-schedule", "constant",
                      "--output-dir", out)
    assert result.returncode == 0, result.stderr
    return out, result, json.loads((out / "metrics.json").read_text())


@pytest.fixture(scope="session")
def server(trained):
    """One drawing-page server (--draw) with the quick model, over real HTTP: (process, url)."""
    from tools.drawing_page import start_server

    out, _, _ = trained
    process, url = start_server("--port", 0, "--model", out / "model.keras")
    assert url, "".join(process.output) + process.stderr.read()
    yield process, url
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


BROWSER = {}  # the one Chromium of the test run, started by the first test that needs it


def shared_browser():
    """Debian's Chromium driven by Playwright, one for the whole test run (closed at its end)."""
    if not BROWSER:
        from playwright.sync_api import sync_playwright

        chromium = browser_or_skip()
        playwright = sync_playwright().start()
        BROWSER.update(playwright=playwright, browser=playwright.chromium.launch(executable_path=chromium))
    return BROWSER["browser"]


@pytest.fixture(scope="session", autouse=True)
def _one_browser():
    yield
    if BROWSER:
        BROWSER["browser"].close()
        BROWSER["playwright"].stop()


@contextlib.contextmanager
def browser_page(**options):
    """A fresh page of the test run's Chromium (new_page's `options`: its own context), closed afterwards."""
    page = shared_browser().new_page(**options)
    try:
        yield page
    finally:
        page.context.close()


@contextlib.contextmanager
def served(collection=None):
    """The drawing page's server in this process, over real HTTP, with no model (what needs none: the
    page's files, /save and /undo): its URL."""
    import threading

    from digits.server import DrawingPageServer

    server = DrawingPageServer(("127.0.0.1", 0), None, collection)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def address(url):
    """(host, port) of a server's URL, brackets of an IPv6 address dropped."""
    found = re.fullmatch(r"http://\[?([^\]/]+?)\]?:(\d+)/", url)
    return found.group(1), int(found.group(2))


def exchange(url, head, body=b"", read_first=False):
    """Send a request's head lines (bytes: nothing is cleaned up) and its body over real HTTP; (status, reply body).

    Sends the whole body before reading, as simple clients do (read_first: reads as soon as the
    head is sent, as a client that expects an early answer does).
    """
    with socket.create_connection(address(url), timeout=60) as connection:
        connection.sendall(b"\r\n".join(head) + b"\r\n\r\n")
        if not read_first:
            connection.sendall(body)
        reply = b""
        while chunk := connection.recv(65536):
            reply += chunk
    head, _, content = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), content


def http(url, method, target, body=b"", headers=None, content_type="application/json"):
    """Send one request exactly as written (no client-side clean-up of the path), with a Host, its
    Content-Type and Content-Length unless `headers` give their own; (status, reply body)."""
    headers = list(headers or [])
    lines = [f"{method} {target} HTTP/1.1", "Connection: close"]
    if not any(h.lower().startswith("host:") for h in headers):
        lines.append(f"Host: {url.split('/')[2]}")
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    if body is not None and not any(h.lower().startswith("content-length") for h in headers):
        lines.append(f"Content-Length: {len(body)}")
    return exchange(url, [line.encode() for line in [*lines, *headers]], body or b"")


def request_json(url, method, target, payload=None):
    """One request with a JSON body (or none); (status, the JSON answer)."""
    body = None if payload is None else json.dumps(payload).encode()
    status, content = http(url, method, target, body, content_type="application/json" if body else None)
    return status, json.loads(content)


def browser_or_skip():
    """Debian's chromium for Playwright, or a skip (a failure in CI, which must run the browser tests)."""
    from tools.drawing_page import find_chromium

    chromium, reason = find_chromium(), "no chromium found (Debian: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium, reason = None, "the playwright package is not installed (pip install playwright)"
    if chromium is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}: CI must run the browser test")
        pytest.skip(reason)
    return chromium


# --- Data files -------------------------------------------------------------------------------


def write_idx(path, array, compress=False):
    """An IDX file of `array` (uint8), gzipped or raw."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def make_idx_folder(folder, dotted=False, compress=False, n_train=5, n_test=3):
    """A folder of the four MNIST IDX files holding random digits; returns the arrays written."""
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
    return [arrays[name] for name in MNIST_SHA256]


def small_mnist(n_train=50, n_test=20):
    """The first images and labels of the bundled MNIST."""
    x_train, y_train, x_test, y_test, _ = bundled_mnist()
    return x_train[:n_train], y_train[:n_train], x_test[:n_test], y_test[:n_test]


def write_npz_member(path, key, header, data=b"", arrays=None):
    """A .npz whose member `key` has a hand-written .npy header (anything numpy.save would not write)."""
    arrays = dict(zip(NPZ_KEYS, arrays or small_mnist(5, 3)))
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in arrays.items():
            member = io.BytesIO()
            if name == key:
                np.lib.format.write_array_header_1_0(member, header)
                member.write(data)
            else:
                np.save(member, array)
            archive.writestr(name + ".npy", member.getvalue())
    return path


def make_unreadable(path, folder=False):
    """Make `path` a file (or a folder) that the program may not read: chmod 000; or, as root, whom
    permission bits do not stop, a link to a place the kernel refuses even root (a write-only sysfs
    file; process 1's map_files, where root may not trace it). Skips the test where there is none."""
    if os.geteuid() != 0:
        path.mkdir() if folder else path.write_bytes(b"\x89PNG\r\n\x1a\n")
        path.chmod(0)
        candidates = [path]
    else:
        candidates = ["/proc/1/map_files"] if folder else sorted(glob.glob("/sys/bus/*/uevent"))
    for candidate in candidates:
        try:
            os.listdir(candidate) if folder else open(candidate, "rb").close()
        except PermissionError:
            if candidate != path:
                path.symlink_to(candidate, target_is_directory=folder)
            return path
        except OSError:
            continue
    pytest.skip(f"no {'folder' if folder else 'file'} here is unreadable to this user (root reads through "
                f"permission bits)")


def flat_images(rng):
    """Pictures with no digit in them, {name: image}: white, black, every tenth grey at several sizes,
    noisy, unevenly lit, coloured paper, and a JPEG of a blank page under a lamp."""
    images = {"white-800x600.png": Image.new("L", (800, 600), 255), "black-800x600.png": Image.new("L", (800, 600), 0),
              "black-28x28.png": Image.new("L", (28, 28), 0), "white-28x28.png": Image.new("L", (28, 28), 255),
              "white-800x600.jpg": Image.new("RGB", (800, 600), "white"), "blue-paper.png": Image.new("RGB", (640, 480),
                                                                                                       (70, 90, 200))}
    for size in ((800, 600), (100, 100), (333, 777), (28, 28), (3000, 2000)):
        for level in range(0, 256, 5):
            images[f"gray{level}-{size[0]}x{size[1]}.png"] = Image.new("L", size, level)
    height, width = 600, 800
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    radius = np.hypot(xs - 0.5, ys - 0.37)
    lights = {"left-lamp": 0.45 + 0.5 * xs * 4 / 3, "vignette": 0.95 * np.cos(np.clip(radius, 0, 1.2)) ** 4,
              "spot": 0.4 + 0.55 * np.exp(-((xs - 0.3) ** 2 + (ys - 0.2) ** 2) / 0.08), "cone": 0.95 - 0.5 * radius}
    for name, light in lights.items():
        images[f"{name}.png"] = Image.fromarray(np.uint8(255 * np.clip(light, 0, 1)))
        images[f"{name}-grain.png"] = Image.fromarray(np.uint8(255 * np.clip(light + rng.normal(0, 0.03, light.shape),
                                                                               0, 1)))
    for sigma in (0.02, 0.05, 0.1):
        images[f"noise{sigma}.png"] = Image.fromarray(np.uint8(255 * np.clip(rng.normal(0.6, sigma, (480, 640)), 0, 1)))
    # Paper: fibres (blurred noise) and grain, lit from one corner, photographed in colour and saved as JPEG.
    fibres = np.asarray(Image.fromarray(np.uint8(rng.integers(0, 256, (height, width)))).filter(
        ImageFilter.GaussianBlur(3)), dtype=float)
    fibres = (fibres - fibres.mean()) / fibres.std()
    paper = (0.55 + 0.35 * (1 - radius)) * (1 + 0.02 * fibres) + rng.normal(0, 0.015, (height, width))
    rgb = np.clip(np.dstack([paper, 0.97 * paper, 0.9 * paper]), 0, 1)
    images["paper.jpg"] = Image.fromarray(np.uint8(255 * rgb))
    return images
