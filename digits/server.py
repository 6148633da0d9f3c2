"""The drawing page's server: the files of web/ and its JSON endpoints (POST /predict; /save, /undo with --collect).

Python's http.server, no framework: the handler sits at module level and reads its state (the
model, its lock, whether it serves only this machine) from the server object. No Keras import: the
model is handed in.
"""

import contextlib
import json
import math
import os
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from digits import requests
from digits.collect import Gone
from digits.hosts import ServedNames
from digits.replies import ModelReplies
from digits.requests import MAX_IMAGE_PIXELS, BadRequest, Budget
from digits.settings import ADAPT_MINIMUM

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
WEB_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
             ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
MAX_PHOTO_BYTES = 12 * 2**20  # the page's cap on a photo file (web/draw.js says the same)
MAX_REQUEST_BYTES = 4 * math.ceil(MAX_PHOTO_BYTES / 3) + 1024  # that file in base64, in its JSON
MAX_DRAWING_BYTES = 2**20  # 20,000 points as the page sends them are ~300 KB; a larger body is one photo
# What a body costs once parsed, per byte of it (the body itself included): JSON's smallest values
# become Python objects many times their size ("[]," is 3 bytes, a list 64), a photo's base64 string
# is held as text and as the bytes it decodes to. tests/test_server_limits.py measures both.
PARSE_COST = 32
PHOTO_COST = 5
DIGIT = rb'\s*"digit"\s*:\s*\d{1,3}\s*'  # /save's label
PHOTO_BODY = re.compile(rb'\s*\{(?:' + DIGIT + rb',)?\s*"image"\s*:\s*"[A-Za-z0-9+/=:;,.-]*"\s*(?:,' + DIGIT
                        + rb')?\}\s*')  # {"image": base64}, with /save's "digit", no more
BODY_SECONDS = float(os.environ.get("DIGITS_BODY_SECONDS", 30))  # for the whole body, however slowly it comes
READING_BYTES = 256 * 2**20  # request bodies in memory at once, parsed, all requests together
DRAIN_BYTES = 4 * MAX_REQUEST_BYTES  # read and dropped from a body too large, so its sender sees the 413
MAX_CONNECTIONS = 64  # served at once, a thread each; one more is answered 503 at once and closed
LISTEN_BACKLOG = 128  # connections waiting to be accepted: a burst from a page's quick questions fits
BUSY_BODY = b'{"error": "too many connections at once: try again in a moment"}'
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nCache-Control: no-store\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(BUSY_BODY), BUSY_BODY))
CONTENT_SECURITY_POLICY = ("default-src 'self'; img-src 'self' data: blob:; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")


def body_length(handler):
    """The request's Content-Length, checked; None where it has none."""
    length = handler.headers.get("Content-Length")
    if length is None:
        return None
    if not (length.isascii() and length.isdigit()):  # "³".isdigit() too, and int() refuses it
        raise BadRequest(f"Content-Length must be a number of bytes, got {length!r}")
    return int(length)


def checked_length(handler):
    """The length of the request's JSON body, checked from its headers before a byte is read."""
    if handler.headers.get("Transfer-Encoding"):
        raise BadRequest("send the body with a Content-Length, not chunked", status=411)
    length = body_length(handler)
    if length is None:
        raise BadRequest("a Content-Length header is required", status=411)
    if length > MAX_REQUEST_BYTES:
        raise BadRequest(f"request too large: {length:,} bytes, at most {MAX_REQUEST_BYTES:,}", status=413)
    if handler.headers.get_content_type() != "application/json":
        raise BadRequest("send JSON, with Content-Type: application/json")
    return length


def parsing_cost(body):
    """What parsing the body will cost, in bytes; 413 for a body too large for a drawing that is not
    one photo, {"image": base64}."""
    if PHOTO_BODY.fullmatch(body):
        return PHOTO_COST * len(body)
    if len(body) > MAX_DRAWING_BYTES:
        raise BadRequest(f"request too large: {len(body):,} bytes, a drawing is at most {MAX_DRAWING_BYTES:,} "
                         '(only a photo, {"image": base64}, may be larger)', status=413)
    return PARSE_COST * len(body)


def parse_json(body):
    """The request's body as JSON."""
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest("the body is not valid JSON")


class DrawingPageHandler(BaseHTTPRequestHandler):
    """GET: the files of web/, by name only. POST /predict: a drawing or photo -> the digit read."""

    server_version = "DigitDrawingPage"
    timeout = 30  # a client that stops sending mid-request frees its thread

    def log_message(self, format, *args):
        """No line per request on the terminal."""

    def send_body(self, status, body, content_type, extra=()):
        """Answer with `body`, never cached, never sniffed as another type."""
        self.send_response(status)
        for name, value in (("Content-Type", content_type), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), *extra):
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, data):
        """Answer with `data` as JSON."""
        self.send_body(status, json.dumps(data).encode(), "application/json")

    def check_host(self):
        """Refuse a Host that is not an address or name this server is served under, and an Origin
        that is not its own page (403): the mark of another site's page reaching it (DNS rebinding)."""
        host, origin = self.headers.get("Host"), self.headers.get("Origin")
        if not self.server.names.host_allowed(host):
            raise BadRequest(f"unexpected Host header {host[:100]!r}: open the page at {self.server.names.url()}",
                             status=403)
        if not self.server.names.origin_allowed(origin):
            raise BadRequest(f"unexpected Origin header {origin[:100]!r}: only the page itself may send requests",
                             status=403)

    def do_GET(self):
        """One of the page's files, or GET /collection: whether the page collects, and the drawings saved so far."""
        try:
            self.check_host()
        except BadRequest as e:
            return self.send_json(e.status, {"error": str(e)})
        if self.path.split("?", 1)[0] == "/collection":  # answered either way: a 404 is an error in the console
            collection = self.server.collection
            return self.send_json(200, {"collecting": False} if collection is None else
                                  {"collecting": True, "counts": collection.counts(), "adapt_minimum": ADAPT_MINIMUM})
        path = self.server.files.get(self.path.split("?", 1)[0])
        if path is None:
            return self.send_json(404, {"error": "not found"})
        self.send_body(200, path.read_bytes(), WEB_TYPES[path.suffix],
                       [("Content-Security-Policy", CONTENT_SECURITY_POLICY)])

    do_HEAD = do_GET

    def do_POST(self):
        """POST /predict: {"strokes": ...} or {"image": base64} -> the number, and each digit's reading.
        POST /save (with --collect): the same with "digit": 0-9 -> the file saved, the counts.
        POST /undo (with --collect): {"saved": name} -> that save removed, the counts."""
        body_read = False
        try:
            self.check_host()
            route = self.path.split("?", 1)[0]
            if route not in ("/predict", "/save", "/undo") or (route != "/predict" and self.server.collection is None):
                raise BadRequest("not found", status=404)
            length = checked_length(self)
            with self.body(length) as body:
                body_read = True
                cost = parsing_cost(body)
                with self.server.reading.reserve(max(cost - len(body), 0), "reading other requests"):  # parsed
                    payload = parse_json(body)
                    reader = self.server.read_lines if self.server.reader is not None else None
                    if route == "/save":
                        reply = self.server.save(*requests.drawing_from_request(payload, self.server.decoding, reader))
                    elif route == "/undo":
                        reply = self.server.undo(requests.undo_from_request(payload))
                    else:
                        found = requests.digits_from_request(payload, self.server.decoding, reader,
                                                             self.server.read_digits)
            if route == "/predict":
                reply = self.server.read(found)
        except BadRequest as e:
            self.close_connection = self.close_connection or not body_read  # what follows is not a request
            self.send_json(e.status, {"error": str(e)})
            if not body_read and e.status != 408:
                self.drain()
            return
        self.send_json(200, reply)

    @contextlib.contextmanager
    def body(self, length):
        """The request's body, read within BODY_SECONDS in all (408 past them): each piece takes its
        share of the reading budget as it arrives, nothing is set aside for bytes not yet sent, and
        all of it is given back after the block."""
        deadline, body, taken = time.monotonic() + self.server.body_seconds, bytearray(), 0
        try:
            while taken < length:
                left = deadline - time.monotonic()
                try:
                    if left <= 0:
                        raise TimeoutError
                    self.connection.settimeout(left)
                    piece = self.rfile.read1(min(length - taken, 65536))
                except TimeoutError:
                    raise BadRequest(f"the body did not arrive within {self.server.body_seconds:g} s: "
                                     f"{taken:,} of {length:,} bytes", status=408)
                if not piece:  # the client closed its side
                    break
                body += piece
                taken += self.server.reading.take(len(piece), "reading other requests",
                                                  max(0, min(self.server.reading.wait, left)))
            self.connection.settimeout(self.timeout)
            yield body
        finally:
            self.server.reading.give(taken)

    def drain(self):
        """Read and drop what is left of an unread body (up to DRAIN_BYTES), so that a client that
        sends all of it before reading sees the answer, not a reset connection."""
        try:
            left = min(body_length(self) or 0, DRAIN_BYTES)
        except BadRequest:
            return
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)  # the answer is whole: a client reading already stops
            while left > 0 and (chunk := self.rfile.read1(min(left, 65536))):
                left -= len(chunk)
        except OSError:  # the client gave up: nothing more to say to it
            pass

class DrawingPageServer(ModelReplies, ThreadingHTTPServer):
    """Serves the page with `model`, under the names and addresses of `self.names` only.

    The host may be an IPv6 address ("::1", with or without brackets). Raises OSError where the
    address cannot be bound (a port in use, say).
    """

    daemon_threads = True
    block_on_close = False  # Ctrl-C stops the page at once: a client's open connection holds nothing up
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address, model, collection=None, reader=None):
        host, port = address
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        self.address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        super().__init__((host, port), DrawingPageHandler)
        self.names = ServedNames(host, self.server_address)  # the Host and Origin headers it answers
        self.reading = Budget(READING_BYTES)  # request bodies in memory at once, as they arrive and parsed
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)  # connections served at once
        self.body_seconds = BODY_SECONDS  # a body must arrive within this, however slowly it comes
        self.decoding = Budget(MAX_IMAGE_PIXELS)  # photo pixels decoded at once: a few small, or one large
        self.collection = collection  # a digits.collect.Collection with --collect: POST /save, GET /collection
        self.model = model
        self.reader = reader  # the number reader: reads a drawing or photo of several digits
        self.model_lock = threading.Lock()  # one prediction at a time: a Keras model is not meant for threads
        self.files = {f"/{path.name}": path for path in WEB_DIR.iterdir()
                      if path.is_file() and path.suffix in WEB_TYPES and not path.name.startswith(".")}
        self.files["/"] = WEB_DIR / "index.html"

    def process_request(self, request, client_address):
        """Serve the connection in a thread of its own, up to MAX_CONNECTIONS at once; refuse more."""
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.setblocking(False)  # never wait on its client: this thread accepts everyone
                request.send(BUSY)
            return self.shutdown_request(request)
        try:
            super().process_request(request, client_address)
        except Exception:  # no thread started: its slot is free again. A Ctrl-C in Thread.start() goes on up
            self.slots.release()  # untouched: the thread may be serving already, and frees the slot itself
            raise

    def process_request_thread(self, request, client_address):
        """One connection's thread; its slot is free again when it ends."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def save(self, digit, drawing, seen):
        """Save a drawing and the 28x28 digit seen in the collection (--collect); the reply to send."""
        try:
            saved = self.collection.save(drawing, seen, digit)
        except OverflowError as e:
            raise BadRequest(str(e), status=409)
        except OSError as e:
            raise BadRequest(f"could not save the drawing ({e.strerror})", status=500)
        return {"saved": saved.name, "digit": digit, "counts": saved.counts}

    def undo(self, name):
        """Remove the drawing saved as `name` by this server (--collect); the reply to send."""
        try:
            counts = self.collection.undo(name)
        except Gone as e:
            raise BadRequest(str(e), status=410)
        except LookupError as e:
            raise BadRequest(str(e), status=404)
        except OSError as e:
            raise BadRequest(f"could not remove the drawing ({e.strerror})", status=500)
        return {"removed": name, "counts": counts}

    def handle_error(self, request, client_address):
        """A request that failed: one warning line, except for a closed tab, which is no news."""
        error = sys.exc_info()[1]
        if not isinstance(error, (ConnectionError, TimeoutError)):
            print(f"warning: request from {client_address[0]} failed: {type(error).__name__}: {error}",
                  file=sys.stderr, flush=True)
