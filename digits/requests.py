"""The drawing page's requests: what a JSON body may hold, checked, with `BadRequest` and its HTTP
status, the `Budget` requests take turns at, and the request limits.

POST /predict's body ("strokes" or "image") becomes the digits Found, POST /save's (the same with
"digit") the drawing to save, POST /undo's the name of the save to undo. The library modules called
here (digits.drawing, digits.photos, digits.numbers, digits.collect) word their errors in their own
terms; here they become the server's answers. No Keras.
"""

import base64
import contextlib
import io
import threading
from typing import NamedTuple

import numpy as np
from PIL import Image

from digits.collect import check_digit
from digits.drawing import drawn_digits, group_strokes, render_strokes
from digits.errors import InputError
from digits.numbers import MAX_PIECES, TooManyDigits, find_digits
from digits.photos import read_image, to_mnist_form

MAX_POINTS = 20_000  # a digit drawn slowly with a fine mouse is a few hundred
MAX_STROKES = 1_000  # 20 digits of 50 strokes each: a dotted hand; refused before any grouping or drawing
MAX_IMAGE_PIXELS = 50_000_000  # more than any phone camera; refused before decoding
PHOTO_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # what people upload: no exotic decoders
FORMAT_NAMES = "a PNG, JPEG, GIF, BMP, TIFF or WebP file"
DRAWING_OR_PHOTO = ("strokes", "image")  # /predict's and /save's bodies hold exactly one of these


class BadRequest(Exception):
    """A request the server refuses: answered with this HTTP status and {"error": message}."""

    def __init__(self, message, status=400):
        super().__init__(message)
        self.status = status


class Budget:
    """A share of memory that requests take turns at: `reserve(amount)` waits until that much is
    free, or answers 503 after `wait` seconds. One request may take at most the whole budget."""

    def __init__(self, total, wait=20):
        self.total, self.wait, self.taken = total, wait, 0
        self.freed = threading.Condition()

    def take(self, amount, what, wait=None):
        """Take `amount` of the budget, waiting at most `wait` seconds (self.wait if None); `what` names
        it in the 503. Returns the amount taken, to give back."""
        amount = min(amount, self.total)
        with self.freed:
            if not self.freed.wait_for(lambda: self.taken + amount <= self.total,
                                       timeout=self.wait if wait is None else wait):
                raise BadRequest(f"busy {what}: try again in a moment", status=503)
            self.taken += amount
        return amount

    def give(self, amount):
        """Give back what take() took."""
        with self.freed:
            self.taken -= amount
            self.freed.notify_all()

    @contextlib.contextmanager
    def reserve(self, amount, what):
        """Within the block, `amount` of the budget is this request's; `what` names it in the 503."""
        amount = self.take(amount, what)
        try:
            yield
        finally:
            self.give(amount)


def check_keys(payload, shape, needs=(), one_of=(), unknown=None):
    """BadRequest(`shape`, the body's shape in words) unless the payload is a JSON object holding every
    key of `needs` and exactly one of `one_of` (if any). A key beyond those is refused, never carried
    along unread: with the `unknown` message if given, else naming it and the keys allowed."""
    if (not isinstance(payload, dict) or not payload.keys() >= set(needs)
            or (one_of and len(payload.keys() & set(one_of)) != 1)):
        raise BadRequest(shape)
    allowed = (*needs, *one_of)
    extra = sorted(payload.keys() - set(allowed))
    if extra:
        raise BadRequest(unknown or f"unknown key {extra[0][:40]!r}: send only {', '.join(map(repr, allowed))}")


def parse_strokes(strokes):
    """[[[x, y], ...], ...] from the page -> a list of (n, 2) float arrays, refusing anything else."""
    if not isinstance(strokes, list) or not strokes:
        raise BadRequest("strokes must be a non-empty list of strokes, each a list of [x, y] points")
    if sum(len(stroke) if isinstance(stroke, list) else 0 for stroke in strokes) > MAX_POINTS:
        raise BadRequest(f"too many points: at most {MAX_POINTS:,} in a drawing")
    if len(strokes) > MAX_STROKES:
        raise BadRequest(f"too many strokes: {len(strokes):,}, at most {MAX_STROKES:,} in a drawing")
    for stroke in strokes:
        if not isinstance(stroke, list) or not stroke or not all(
                isinstance(point, list) and len(point) == 2
                # abs(v) < 1e6 also refuses NaN, infinity and integers too large for a float
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e6 for v in point)
                for point in stroke):
            raise BadRequest("each stroke must be a non-empty list of [x, y] points, "
                             "x and y numbers below 1,000,000")
    return [np.array(stroke, dtype=np.float64) for stroke in strokes]


def decode_photo(text, budget=None):
    """A base64-encoded image file -> grayscale in [0, 1], read exactly as --predict reads files.

    Only the formats people upload are opened. With a Budget of pixels, the photo waits for its
    pixels' share of it before it is decoded.
    """
    if not isinstance(text, str) or not text:
        raise BadRequest("image must be the image file's bytes, base64-encoded")
    try:
        data = base64.b64decode(text.split(",", 1)[-1] if text.startswith("data:") else text, validate=True)
    except ValueError:
        raise BadRequest("image is not valid base64")
    try:
        with Image.open(io.BytesIO(data), formats=PHOTO_FORMATS) as image:  # reads the header only
            pixels = image.width * image.height
    except Image.DecompressionBombError:  # Pillow's own limit, above this one
        pixels = 2 * Image.MAX_IMAGE_PIXELS + 1
    except Exception:  # noqa: BLE001 -- a damaged header can trip a decoder in any way
        raise BadRequest(f"not an image this program can read: send {FORMAT_NAMES}")
    if pixels > MAX_IMAGE_PIXELS:
        raise BadRequest(f"image too large: more than {MAX_IMAGE_PIXELS:,} pixels", status=413)
    with budget.reserve(pixels, "reading other photos") if budget else contextlib.nullcontext():
        try:
            gray, _ = read_image(io.BytesIO(data), formats=PHOTO_FORMATS)
        except InputError as e:
            raise BadRequest(f"{e}: send {FORMAT_NAMES}")
    return gray


class Found(NamedTuple):
    """The digits found in a request's drawing or photo, left to right."""

    pieces: list  # Piece(box, digit): box in the strokes' own units, or in the photo's pixels as read
    size: tuple | None  # the photo as read, (width, height), which its boxes refer to; None for a drawing


def photo_digits(gray, reader=None, network=None):
    """find_digits, as --predict reads a photo (with `reader` and `network`, the number reader and the
    default network), with its refusals as BadRequest."""
    try:
        pieces = find_digits(gray, reader, network)
    except InputError as e:
        raise BadRequest(str(e))
    if not pieces:
        raise BadRequest("blank image: no digit found")
    return pieces


def digits_from_request(payload, budget=None, reader=None, network=None):
    """POST /predict's body: its "strokes" (grouped into digits, each drawn again) or "image" (a photo,
    decoded within the Budget of pixels if one is given, read as --predict reads it), read with the number
    `reader` (and a photo's narrow marks checked by the `network`) that find_digits takes, as Found digits."""
    check_keys(payload, 'send a JSON object with either "strokes" (the drawing) or "image" (a photo)',
               one_of=DRAWING_OR_PHOTO)
    if "strokes" in payload:
        strokes = parse_strokes(payload["strokes"])
        try:
            pieces = drawn_digits(strokes, reader)
        except TooManyDigits as e:
            raise BadRequest(f"{e.count} digits drawn, at most {MAX_PIECES} are read at once: "
                             "draw fewer (Clear, then draw the rest)")
        if not pieces:
            raise BadRequest("blank image: no digit found")
        return Found(pieces, None)
    gray = decode_photo(payload["image"], budget)
    return Found(photo_digits(gray, reader, network), (gray.shape[1], gray.shape[0]))


def drawing_from_request(payload, budget=None, reader=None):
    """POST /save's body, {"digit": 0-9, "strokes": ...} or {"digit": 0-9, "image": base64}, as
    (digit, the drawing as rendered in [0, 1], the 28x28 digit the model sees); BadRequest otherwise,
    and for a drawing or photo of several digits (a photo's told by the number `reader`, as
    /predict's are). A photo is decoded within `budget` (a Budget of pixels)."""
    check_keys(payload, 'send a JSON object with "digit" (0-9) and either "strokes" (the drawing) or "image"',
               needs=("digit",), one_of=DRAWING_OR_PHOTO)
    try:
        digit = check_digit(payload["digit"])
    except ValueError as e:
        raise BadRequest(str(e))
    if "strokes" in payload:
        strokes = parse_strokes(payload["strokes"])
        gray = render_strokes(strokes)
    else:
        gray = decode_photo(payload["image"], budget)
    seen = to_mnist_form(gray)
    if seen is None:
        raise BadRequest("blank image: no digit found, nothing saved")
    count = len(group_strokes(strokes) if "strokes" in payload else photo_digits(gray, reader))
    if count > 1:  # a labelled digit is one digit: a number saved under one label would mislabel the rest
        what = "drawing" if "strokes" in payload else "photo"
        raise BadRequest(f"the {what} holds {count} digits, nothing saved: save one digit at a time "
                         "(Clear, then draw one)")
    return digit, gray, seen


def undo_from_request(payload):
    """POST /undo's body, {"saved": "7/7-....png"} (the name /save answered), as the name; BadRequest otherwise."""
    shape = 'send a JSON object with "saved": the name of the drawing /save saved'
    check_keys(payload, shape, needs=("saved",), unknown=shape)
    if not isinstance(payload["saved"], str):
        raise BadRequest(shape)
    return payload["saved"]
