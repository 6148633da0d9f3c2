"""The drawing page's server (--draw) over real HTTP: nothing sent to it costs minutes or gigabytes.
Limits are checked before the work, and a refused request leaves the server serving."""
import base64
import concurrent.futures
import contextlib
import json
import os
import re
import select
import signal
import socket
import threading
import tracemalloc

import pytest
from test_server import address, exchange, post, still_serving

from digits.server import MAX_CONNECTIONS, MAX_DRAWING_BYTES, PARSE_COST, PHOTO_COST, parsing_cost
from tools.drawing_page import start_server


def strokes_body(strokes):
    return json.dumps({"strokes": strokes}).encode()


def test_too_many_strokes_are_refused_before_any_grouping(server):
    _, url = server
    dots = [[[100 * n, n % 7]] for n in range(20_000)]  # 20,000 one-point strokes far apart, ~270 KB
    status, reply = post(url, strokes_body(dots))
    assert status == 400 and "too many strokes" in reply["error"], reply
    assert still_serving(url)


def peak_memory(pid):
    """The process' peak resident memory so far, in bytes (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"VmHWM:\s+(\d+) kB", status.read()).group(1)) * 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc: Linux")
def test_a_large_body_that_is_not_one_photo_is_a_413_before_it_is_parsed(server):
    """Eight 16 MB bodies at once, a drawing padded with an unknown key full of small numbers (parsed,
    ~400 MB each): refused before they are parsed, so the server's memory grows by little."""
    process, url = server
    assert still_serving(url)
    body = b'{"strokes": [[[0, 0], [0, 50]]], "pad": [' + b"0," * (8 * 2**20 - 1) + b"0]}"
    before = peak_memory(process.pid)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: post(url, body), range(8)))
    assert all(status == 413 and "a drawing is at most" in reply["error"] for status, reply in replies), replies[0]
    assert peak_memory(process.pid) - before < 8 * len(body) + 64 * 2**20, (peak_memory(process.pid) - before) / 2**20
    assert still_serving(url)


def test_an_unknown_key_is_a_400(server):
    _, url = server
    stroke = [[[0, 0], [0, 50]]]
    for payload in ({"strokes": stroke, "pad": 1}, {"image": "AAAA", "strokes": stroke, "x": 0},
                    {"image": "AA", "": 0}):
        status, reply = post(url, json.dumps(payload).encode())
        assert status == 400 and ("unknown key" in reply["error"] or "either" in reply["error"]), (payload, reply)
    status, reply = post(url, json.dumps({"strokes": stroke, "pad": 1}).encode())
    assert "unknown key 'pad'" in reply["error"]
    assert still_serving(url)


@pytest.mark.parametrize("item", [b"[],", b"{},", b"1.5,", b'"ab",', b"[0],", b"0,"])
def test_parsing_a_drawing_costs_at_most_what_the_reading_budget_counts(item):
    """The reading budget counts PARSE_COST bytes for each byte of a drawing's body: the costliest
    JSON values, a body of the largest size, parsed under tracemalloc, stay within it."""
    body = b'{"strokes": [' + item * ((MAX_DRAWING_BYTES - 20) // len(item)) + b"0]}"
    assert parsing_cost(body) == PARSE_COST * len(body)
    tracemalloc.start()
    try:
        payload = json.loads(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert payload and peak + len(body) <= PARSE_COST * len(body), peak / len(body)


def test_parsing_a_photo_costs_at_most_what_the_reading_budget_counts():
    """A photo's body, {"image": base64}, parsed and decoded, within PHOTO_COST bytes per byte."""
    data = os.urandom(3 * 2**20)
    body = json.dumps({"image": "data:image/png;base64," + base64.b64encode(data).decode()}).encode()
    assert parsing_cost(body) == PHOTO_COST * len(body)
    tracemalloc.start()
    try:
        text = json.loads(body)["image"]
        decoded = base64.b64decode(text.split(",", 1)[-1], validate=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert decoded == data and peak + len(body) <= PHOTO_COST * len(body), peak / len(body)


@pytest.fixture
def quick_deadline_server(trained, monkeypatch):
    """A drawing-page server of its own whose request bodies must arrive within 2 s (DIGITS_BODY_SECONDS)."""
    out, _, _ = trained
    monkeypatch.setenv("DIGITS_BODY_SECONDS", "2")
    process, url = start_server("--port", 0, "--model", out / "model.keras")
    try:
        assert url, "".join(process.output) + process.stderr.read()
        yield process, url
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)


def slow_upload(url, length):
    """A connection that sends a request's head and the first byte of its `length`-byte body, then stalls."""
    connection = socket.create_connection(address(url), timeout=60)
    connection.sendall(b"\r\n".join([b"POST /predict HTTP/1.1", b"Host: " + url.split("/")[2].encode(),
                                     b"Content-Type: application/json", b"Content-Length: %d" % length]) + b"\r\n\r\n{")
    return connection


def answer(connection):
    """The status a connection is answered with; None where it is closed unanswered."""
    reply = b""
    with connection:
        while chunk := connection.recv(65536):
            reply += chunk
    return int(reply.split()[1]) if reply else None


def test_slow_uploads_hold_only_what_they_sent_and_get_a_408_at_the_deadline(quick_deadline_server):
    """Sixteen uploads that each announce 16 MiB (the whole reading budget, were it set aside up front)
    and stall after one byte: the server still answers others, and each stalled upload, and one that
    trickles a byte at a time, is answered 408 once its body's deadline passes."""
    _, url = quick_deadline_server
    stalled = [slow_upload(url, 16 * 2**20) for _ in range(16)]
    trickle = slow_upload(url, 1000)
    stop = threading.Event()

    def keep_trickling():
        with contextlib.suppress(OSError):
            while not stop.wait(0.2):
                trickle.sendall(b" ")

    trickler = threading.Thread(target=keep_trickling)
    trickler.start()
    try:
        assert still_serving(url)
        assert [answer(connection) for connection in stalled] == [408] * 16
        assert answer(trickle) == 408
    finally:
        stop.set()
        trickler.join()
    assert still_serving(url)


def threads(pid):
    """How many threads the process runs (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        return int(re.search(r"Threads:\s+(\d+)", status.read()).group(1))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc: Linux")
def test_idle_connections_take_at_most_the_capped_threads_and_the_server_still_answers(server):
    """MAX_CONNECTIONS + 36 connections opened and left idle: the server runs at most MAX_CONNECTIONS
    threads for them, answers the ones past the cap with a 503, and answers again once they go."""
    process, url = server
    assert still_serving(url)
    before = threads(process.pid)
    idle = [socket.create_connection(address(url), timeout=60) for _ in range(MAX_CONNECTIONS + 36)]
    try:
        # Connections are accepted in turn: once one opened after them is answered, all were accepted.
        head = [b"GET /collection HTTP/1.1", b"Host: " + url.split("/")[2].encode(), b"Connection: close"]
        assert exchange(url, head)[0] in (200, 503)
        assert threads(process.pid) <= before + MAX_CONNECTIONS, threads(process.pid) - before
        refused = [connection for connection in idle if select.select([connection], [], [], 0)[0]]
        assert len(refused) >= 36 and [answer(connection) for connection in refused] == [503] * len(refused)
    finally:
        for connection in idle:
            connection.close()
    assert still_serving(url)


def test_a_page_elsewhere_cannot_reach_a_server_on_another_loopback_address(trained, tmp_path):
    """--host 127.0.0.2 is this machine's alone (no warning), and a foreign Host or Origin, as another
    site's page sends through DNS rebinding, is refused (403) there too: nothing is saved."""
    out, _, _ = trained
    collected = tmp_path / "collected"
    process, url = start_server("--port", 0, "--host", "127.0.0.2", "--model", out / "model.keras",
                                "--collect", collected)
    try:
        assert url, "".join(process.output) + process.stderr.read()
        assert url.startswith("http://127.0.0.2:"), url
        port = address(url)[1]
        body = json.dumps({"strokes": [[[0, 0], [0, 50]]], "digit": 1}).encode()
        own = f"Host: 127.0.0.2:{port}".encode()
        for extra in ([f"Host: evil.example:{port}".encode()], [own, f"Origin: http://evil.example:{port}".encode()],
                      [own, b"Origin: null"]):
            head = [b"POST /save HTTP/1.1", *extra, b"Connection: close", b"Content-Type: application/json",
                    b"Content-Length: %d" % len(body)]
            status, content = exchange(url, head, body)
            assert status == 403, (extra, content)
            status, content = exchange(url, [b"GET / HTTP/1.1", extra[-1], b"Connection: close"])
            assert status == 403 and b"<canvas" not in content, extra
        assert not any(path.is_file() for path in collected.rglob("*"))
        head = [b"GET / HTTP/1.1", own, f"Origin: http://127.0.0.2:{port}".encode(), b"Connection: close"]
        assert exchange(url, head)[0] == 200
        assert still_serving(url)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert "warning" not in process.stderr.read()
