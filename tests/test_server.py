"""The drawing page's server (--draw) over real HTTP, started as a user starts it, and its page in a
real browser: what it answers to photos without a digit, to files it should not open, to malformed and
oversized requests, and how the page looks on a phone."""
import base64
import concurrent.futures
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib

import numpy as np
import pytest
from conftest import address, browser_page, bundled_mnist, exchange, flat_images
from PIL import Image

from digits.numbers import find_digits
from digits.photos import read_image
from tools.digit_photos import phone_photo
from tools.drawing_page import DRAWINGS, draw, number_drawing, start_server


def post(url, body, *extra, length=None):
    """POST /predict with this body (and a Content-Length of `length` if given); (status, JSON reply)."""
    host = url.split("/")[2].encode()
    head = [b"POST /predict HTTP/1.1", b"Host: " + host, b"Connection: close", b"Content-Type: application/json",
            b"Content-Length: " + (str(len(body)) if length is None else length).encode(), *extra]
    status, content = exchange(url, head, body)
    return status, json.loads(content)


def photo(url, data):
    """Send a photo file's bytes as the page does; (status, JSON reply)."""
    return post(url, json.dumps({"image": base64.b64encode(data).decode()}).encode())


def encoded(image, kind):
    buffer = io.BytesIO()
    image.save(buffer, kind)
    return buffer.getvalue()


def still_serving(url):
    status, reply = post(url, json.dumps({"strokes": DRAWINGS["drawings"][0]["strokes"]}).encode())
    return status == 200 and len(reply["probabilities"]) == 10


def test_a_photo_without_a_digit_is_a_400(server):
    _, url = server
    rng = np.random.default_rng(2)
    blank = {name: image for name, image in flat_images(rng).items()
             if not name.startswith("gray") or name.endswith("-800x600.png")}
    for name, image in blank.items():
        status, reply = photo(url, encoded(image, "JPEG" if name.endswith(".jpg") else "PNG"))
        assert (status, reply["error"]) == (400, "blank image: no digit found"), name
    digit, _ = phone_photo(bundled_mnist().x_test[0], "gray-png", rng)
    status, reply = photo(url, encoded(digit, "PNG"))
    assert status == 200 and len(reply["probabilities"]) == 10


def damaged_dds():
    """A 40x40 DDS file whose pixel format is zeroed: Pillow's DDS decoder raises NotImplementedError."""
    data = bytearray(encoded(Image.new("RGB", (40, 40), "red"), "DDS"))
    data[80:84] = bytes(4)
    return bytes(data)


def fuzzed(data, seed, changes=3, within=1024):
    """The file with a few bytes of its first `within` changed at random."""
    rng, data = np.random.default_rng(seed), bytearray(data)
    for _ in range(changes):
        data[int(rng.integers(0, min(within, len(data))))] = int(rng.integers(0, 256))
    return bytes(data)


def test_only_the_formats_people_upload_are_opened_and_any_failure_is_a_400(server):
    _, url = server
    spider = encoded(Image.fromarray(np.random.default_rng(0).random((40, 40)).astype(np.float32)), "SPIDER")
    foreign = {"a damaged DDS": damaged_dds(), "a fuzzed SPIDER file": fuzzed(spider, 125),
               "a SPIDER file": spider, "an ICO": encoded(Image.new("RGB", (32, 32), "red"), "ICO"),
               "a PCX": encoded(Image.new("L", (64, 64), 128), "PCX")}
    for name, data in foreign.items():
        status, reply = photo(url, data)
        assert status == 400, name
        assert reply["error"] == ("not an image this program can read: send a PNG, JPEG, GIF, BMP, TIFF or WebP "
                                  "file"), name
    digit, _ = phone_photo(bundled_mnist().x_test[1], "gray-png", np.random.default_rng(0))
    for kind in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        good = encoded(digit.convert("RGB") if kind == "JPEG" else digit, kind)
        status, reply = photo(url, good)
        assert status == 200, (kind, reply)
        for seed in range(12):  # damaged copies: read, or refused with a reason; never a dropped connection
            status, reply = photo(url, fuzzed(good, seed, within=len(good)))
            assert status in (200, 400), (kind, seed, status)
            assert status == 200 or reply["error"], (kind, seed)
    assert still_serving(url)


def test_a_content_length_that_is_no_number_is_a_400(server):
    _, url = server
    for length in ("\u00b3", "\u00b2", "12a", "-5", "1e3", "+2"):  # superscript three and two: str.isdigit() says yes
        head = [b"POST /predict HTTP/1.1", b"Host: " + url.split("/")[2].encode(), b"Connection: close",
                b"Content-Type: application/json", b"Content-Length: " + length.encode("latin-1")]
        status, content = exchange(url, head, b"{}")
        assert status == 400, length
        assert "Content-Length must be a number of bytes" in json.loads(content)["error"], length
    assert still_serving(url)


def test_a_client_that_sends_a_body_too_large_reads_the_413(server):
    _, url = server
    body = b'{"image": "' + b"A" * (20 * 2**20) + b'"}'
    host = url.split("/")[2].encode()
    head = [b"POST /predict HTTP/1.1", b"Host: " + host, b"Connection: close", b"Content-Type: application/json",
            f"Content-Length: {len(body)}".encode()]
    status, content = exchange(url, head, body)  # all of it sent before a byte is read
    assert status == 413 and "request too large" in json.loads(content)["error"]
    # A client that waits for the answer before sending its body is answered at once, from the header.
    status, content = exchange(url, head, body, read_first=True)
    assert status == 413 and "request too large" in json.loads(content)["error"]
    assert still_serving(url)


def page_photo_cap(url):
    """The largest photo file the page sends, as its script says: MAX_PHOTO_BYTES = 12 * 1024 * 1024."""
    host = url.split("/")[2].encode()
    status, script = exchange(url, [b"GET /draw.js HTTP/1.1", b"Host: " + host, b"Connection: close"])
    assert status == 200
    found = re.search(rb"const MAX_PHOTO_BYTES = ([\d *]+);", script)
    return int(np.prod([int(factor) for factor in found.group(1).split(b"*")]))


def test_a_photo_the_page_sends_is_never_too_large_for_the_server(server):
    _, url = server
    cap = page_photo_cap(url)
    assert cap >= 10 * 2**20  # a phone photo
    # The largest file the page sends, as it sends it: base64 in JSON. Not an image: refused as one, not as too large.
    status, reply = photo(url, bytes(cap))
    assert status == 400 and "not an image" in reply["error"], reply


def listen_backlog(port):
    """The listen backlog of the socket listening on this port, as the kernel reports it (ss's Send-Q)."""
    lines = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    return {int(line.split()[2]) for line in lines.splitlines()}


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to read the listen backlog")
def test_a_burst_of_connections_waits_in_a_listen_backlog_of_128(server):
    _, url = server
    assert listen_backlog(address(url)[1]) == {128}


def test_an_ipv6_address_is_served(trained):
    out, _, _ = trained
    process, url = start_server("--port", 0, "--host", "::1", "--model", out / "model.keras")
    try:
        assert url and url.startswith("http://[::1]:"), "".join(process.output) + process.stderr.read()
        assert still_serving(url)
        status, page = exchange(url, [b"GET / HTTP/1.1", b"Host: " + url.split("/")[2].encode(), b"Connection: close"])
        assert status == 200 and b"<canvas" in page
    finally:  # what Ctrl-C prints is test_draw's to check; here the page has to go as soon as it is told
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # whether SIGINT was blocked or ignored, in the page's process and in this one
            masks = re.findall(r"Sig(?:Blk|Ign|Cgt|Pnd):.*", open(f"/proc/{process.pid}/status").read())
            mine = re.findall(r"Sig(?:Blk|Ign|Cgt|Pnd):.*", open("/proc/self/status").read())
            process.kill()
            process.wait()
            pytest.fail(f"Ctrl-C did not stop the page within 30 s: {masks} {mine} " + "".join(process.output)
                        + process.stderr.read())
    assert process.returncode == 0, process.stderr.read()


def test_an_image_of_more_pixels_than_any_camera_is_a_413(server):
    _, url = server
    for side in (8000, 60000):  # 64 megapixels; 3.6 gigapixels, more than Pillow opens
        data = bytearray(encoded(Image.new("L", (8, 8), 255), "PNG"))
        header = struct.pack(">II", side, side) + bytes(data[24:29])  # the header declares side x side pixels
        data[16:29] = header
        data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
        status, reply = photo(url, bytes(data))
        assert status == 413 and "image too large" in reply["error"], (side, reply)


def peak_memory(pid):
    """The process' peak resident memory so far, in bytes (Linux)."""
    status = open(f"/proc/{pid}/status").read()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="reads /proc: Linux")
def test_photos_decoded_at_once_stay_within_a_bounded_memory(trained):
    """Five 7000x7000 transparent PNGs at once (each 49 megapixels, under the server's limit) are decoded
    in turn: the server's peak memory grows by about one decoding's worth, not five."""
    out, _, _ = trained
    process, url = start_server("--port", 0, "--model", out / "model.keras")
    try:
        assert url, process.stderr.read()
        assert still_serving(url)
        size = 7000
        alpha = np.zeros((size, size), np.uint8)
        alpha[3000:4000, 3300:3400] = 255  # a 1, drawn on nothing
        big = json.dumps({"image": base64.b64encode(encoded(Image.fromarray(
            np.dstack([np.zeros((size, size, 3), np.uint8), alpha]), "RGBA"), "PNG")).decode()}).encode()
        before = peak_memory(process.pid)
        status, _ = post(url, big)  # one alone: what decoding one costs
        assert status == 200
        one = peak_memory(process.pid) - before
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            statuses = [status for status, _ in pool.map(lambda _: post(url, big), range(5))]
        assert statuses == [200] * 5
        five = peak_memory(process.pid) - before
        assert five < 2 * one + 200 * 2**20, (one / 2**20, five / 2**20)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


PHONE = {"width": 390, "height": 844}  # an upright phone's screen, in CSS pixels
BROWSER_BARS = 180  # what the browser's address and tool bars take of its height, at most


def test_on_a_phone_the_digit_read_shows_with_the_drawing_area(server, tmp_path):
    """At 390 x 844, less the browser's bars, the whole drawing area and the answer (digit and how sure)
    are on the screen at once: nobody scrolls between drawing and reading."""
    _, url = server
    with browser_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True) as page:
        page.goto(url)
        draw(page, DRAWINGS["drawings"][21])  # a 7
        page.locator('#prediction[data-state="ready"]').wait_for(timeout=30_000)
        page.screenshot(path=str(tmp_path / "phone.png"))
        assert page.evaluate("window.scrollY") == 0
        visible = PHONE["height"] - BROWSER_BARS
        boxes = {name: page.locator(name).bounding_box() for name in ("#canvas", "#prediction", "#confidence")}
        for name, box in boxes.items():
            assert box["y"] >= 0 and box["y"] + box["height"] <= visible, (name, box)
            assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (name, box)
        assert boxes["#canvas"]["width"] >= 0.8 * PHONE["width"]  # still a drawing area a finger can use
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling


def test_on_a_phone_a_number_read_shows_with_the_drawing_area(server):
    """A three-digit number, then a row of twelve: the number and how sure, on the screen with the
    drawing area, and no sideways scrolling however long the number."""
    _, url = server
    with browser_page(viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True) as page:
        page.goto(url)
        for number in ("724", "415550123456"):
            page.click("#clear")
            draw(page, number_drawing(number, 9))
            page.locator('#prediction[data-state="ready"]').wait_for(timeout=30_000)
            page.locator("#piece-list li").nth(len(number) - 1).wait_for()
            assert page.evaluate("window.scrollY") == 0
            for name in ("#canvas", "#prediction", "#confidence"):
                box = page.locator(name).bounding_box()
                assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"] - BROWSER_BARS, (name, box)
                assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (name, box)
            assert len(page.inner_text("#prediction").strip()) == len(number)
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], number


def number_photo(digits, rng):
    """MNIST digits (28x28 each) written side by side, a few pixels apart, as dark ink on a PNG of light paper."""
    row = np.concatenate([np.pad(digit, ((0, 0), (3, 3))) for digit in digits], axis=1)
    scale = int(rng.integers(5, 9))
    ink = np.asarray(Image.fromarray(row).resize((row.shape[1] * scale, 28 * scale), Image.BICUBIC), float) / 255
    paper = np.full((ink.shape[0] + 200, ink.shape[1] + 240), 0.92)
    paper[100 : 100 + ink.shape[0], 120 : 120 + ink.shape[1]] *= 1 - 0.85 * np.clip(ink, 0, 1)
    return encoded(Image.fromarray(np.uint8(paper * 255), "L"), "PNG")


def test_a_photo_on_the_page_is_read_by_the_same_steps_as_predict(server, number_reader):
    """The page's photo path is find_digits on the photo as read_image reads it, with the number reader,
    as --predict's: the same pieces, each the same 28x28 image, their boxes in the photo as read."""
    _, url = server
    _, _, x_test, _, _ = bundled_mnist()
    rng = np.random.default_rng(5)
    for digits in ((x_test[7],), (x_test[0], x_test[1]), (x_test[2], x_test[3], x_test[4])):
        data = number_photo(digits, rng)
        gray, _ = read_image(io.BytesIO(data))
        pieces = find_digits(gray, number_reader)
        status, reply = photo(url, data)
        assert status == 200, reply
        assert reply["size"] == [gray.shape[1], gray.shape[0]] and len(reply["digits"]) == len(pieces)
        for read, piece in zip(reply["digits"], pieces):
            assert np.array_equal(np.array(read["image"]), np.round(piece.digit * 255).astype(int))
            assert read["box"] == list(piece.box)


def test_a_photo_of_a_two_digit_number_is_read_as_the_number(server):
    _, url = server
    _, _, x_test, y_test, _ = bundled_mnist()
    data = number_photo((x_test[0], x_test[1]), np.random.default_rng(6))
    status, reply = photo(url, data)
    assert status == 200 and reply["number"] == f"{y_test[0]}{y_test[1]}", reply
