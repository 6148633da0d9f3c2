"""What the drawing page sends, turned into the 28x28 digits the network reads: strokes grouped into
digits (those side by side with overlapping extents are one digit) and each drawn again with an
MNIST-like pen, or a photo read exactly as --predict reads files. No Keras."""

import base64
import contextlib
import io
import threading
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

from digits.errors import InputError
from digits.numbers import MAX_PIECES, NO_DIGIT, Piece, TooManyDigits, find_digits, read_line
from digits.photos import read_image, to_mnist_form

MAX_POINTS = 20_000  # a digit drawn slowly with a fine mouse is a few hundred
MAX_STROKES = 1_000  # 20 digits of 50 strokes each: a dotted hand; refused before any grouping or drawing
MAX_IMAGE_PIXELS = 50_000_000  # more than any phone camera; refused before decoding
PHOTO_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")  # what people upload: no exotic decoders
FORMAT_NAMES = "a PNG, JPEG, GIF, BMP, TIFF or WebP file"
# The canvas strokes are re-drawn here rather than sent as the canvas' own bitmap: the page's pen
# is a fixed number of screen pixels wide, so a small digit would reach the network as a fat blob
# and a large one as hairlines. MNIST's strokes are about 3 pixels in its 20-pixel box, so the
# pen here is a fixed share of the drawing's longer side, whatever size it was drawn at.
STROKE_BOX = 160  # the drawing's longer side, in pixels, once rendered
STROKE_WIDTH = 0.15  # of that side: the drawn test digits then carry as much ink as MNIST's, on average
# Strokes are one digit when their horizontal extents overlap by more than JOIN_OVERLAP of the narrower
# one's width, less JOIN_GAP of the drawing's height: a 7's detached bar, a 5's hat or a 4's second
# stroke joins its digit even drawn a little apart, while two slanted digits whose extents barely
# overlap, or a 1 beside a digit, stay apart.
JOIN_OVERLAP = 1 / 3
JOIN_GAP = 0.06
LINE_PIXELS = 64  # a drawing's height, in pixels, once rendered as a line for the number reader
SPECK = 0.08  # beside larger digits, a piece smaller than this share of the drawing's height is a slip of the pen


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


def render_strokes(strokes):
    """Draw the strokes as light ink on black, the pen a fixed share of the drawing's size."""
    points = np.concatenate(strokes)
    low = points.min(axis=0)
    scale = STROKE_BOX / max(np.ptp(points, axis=0).max(), 1e-6)
    width = round(STROKE_WIDTH * STROKE_BOX)
    # a clear black border: to_mnist_form tells paper from ink by what the border shows
    margin = 2 * width
    image = Image.new("L", (STROKE_BOX + 2 * margin,) * 2, 0)
    pen = ImageDraw.Draw(image)
    for stroke in strokes:
        xy = [tuple(p) for p in (stroke - low) * scale + margin]
        if len(xy) > 1:
            pen.line(xy, fill=255, width=width, joint="curve")
        for x, y in (xy[0], xy[-1]):  # round ends, as a pen leaves; a single point is a dot
            pen.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=255)
    return np.asarray(image, dtype=np.float32) / 255


def _together(one, other, gap):
    """Whether two spans [left, right, ...] of strokes side by side are one digit."""
    overlap = min(one[1], other[1]) - max(one[0], other[0])
    return overlap > JOIN_OVERLAP * min(one[1] - one[0], other[1] - other[0]) - gap


def group_strokes(strokes):
    """The strokes of a drawing as digits, left to right: a list of lists of strokes, each digit's in
    the order drawn. Specks beside larger digits are left out."""
    points = np.concatenate(strokes)
    height = np.ptp(points[:, 1])
    spans = sorted(([stroke[:, 0].min(), stroke[:, 0].max(), [n]] for n, stroke in enumerate(strokes)),
                   key=lambda span: span[0])
    joined = []  # sorted by left edge, each span joins the digit before it or starts one; a digit that
    for span in spans:  # grows may then join the one before it: no two neighbours left that join
        joined.append(span)
        while len(joined) > 1 and _together(joined[-2], joined[-1], JOIN_GAP * height):
            last = joined.pop()
            joined[-1][1] = max(joined[-1][1], last[1])
            joined[-1][2].extend(last[2])
    groups = [[strokes[n] for n in sorted(span[2])] for span in joined]
    sizes = [np.ptp(np.concatenate(group), axis=0).max() for group in groups]
    largest = max(sizes)
    return [group for group, size in zip(groups, sizes) if size >= SPECK * height or size == largest]


def render_line(strokes):
    """Draw the strokes as a line of writing, light ink on black: LINE_PIXELS high, the pen a share of
    that as MNIST's; (ink, scale, offset): picture pixel = (stroke point - offset) * scale."""
    points = np.concatenate(strokes)
    low = points.min(axis=0)
    width, height = np.ptp(points, axis=0)  # points are (x, y)
    scale = LINE_PIXELS / max(height, width / MAX_PIECES, 1e-6)  # a flat line is no wider than 20 digits
    pen = round(STROKE_WIDTH * LINE_PIXELS)
    offset = low - pen / scale
    image = Image.new("L", (round(width * scale) + 2 * pen + 1, round(height * scale) + 2 * pen + 1), 0)
    draw = ImageDraw.Draw(image)
    for stroke in strokes:
        xy = [tuple(p) for p in (stroke - offset) * scale]
        if len(xy) > 1:
            draw.line(xy, fill=255, width=pen, joint="curve")
        for x, y in (xy[0], xy[-1]):
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=255)
    return np.asarray(image, dtype=np.float32) / 255, scale, offset


def drawn_digits(strokes, reader=None):
    """The digits of a drawing, left to right, each a Piece: its box (left, top, right, bottom) in
    the strokes' own units, and its image in MNIST's form. With the number `reader` (find_digits'), a
    drawing it reads several digits in is read by it; a drawing of one digit reads exactly as one digit
    always did: its strokes drawn again and put in MNIST's form. BadRequest past MAX_PIECES."""
    unsure, seen = None, None
    if reader is not None:
        ink, scale, offset = render_line(strokes)
        try:
            pieces = read_line(ink, reader)
        except TooManyDigits as e:
            raise BadRequest(f"{e.count} digits drawn, at most {MAX_PIECES} are read at once: "
                             "draw fewer (Clear, then draw the rest)")
        if len(pieces) > 1:
            return [piece._replace(box=(piece.box[0] / scale + offset[0], piece.box[1] / scale + offset[1],
                                        piece.box[2] / scale + offset[0], piece.box[3] / scale + offset[1]))
                    for piece in pieces]
        unsure, seen = (None, pieces[0].probabilities) if pieces else (NO_DIGIT, None)
    groups = group_strokes(strokes)
    if reader is not None and len(groups) > 1:  # the reader sees one digit: all the strokes are it
        groups = [strokes]
    if len(groups) > MAX_PIECES:
        raise BadRequest(f"{len(groups)} digits drawn, at most {MAX_PIECES} are read at once: "
                         "draw fewer (Clear, then draw the rest)")
    pieces = []
    for group in groups:
        digit = to_mnist_form(render_strokes(group))
        if digit is not None:
            points = np.concatenate(group)
            box = (*points.min(axis=0).tolist(), *points.max(axis=0).tolist())
            pieces.append(Piece(box, digit, unsure=unsure, seen=seen))
    return pieces


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


def check_keys(payload, allowed=("strokes", "image")):
    """BadRequest unless the payload is a JSON object with exactly one of "strokes" and "image", and
    no key but those `allowed`: an unknown key is refused, never carried along unread."""
    if not isinstance(payload, dict) or len(payload.keys() & {"strokes", "image"}) != 1:
        raise BadRequest('send a JSON object with either "strokes" (the drawing) or "image" (a photo)')
    unknown = sorted(payload.keys() - set(allowed))
    if unknown:
        raise BadRequest(f"unknown key {unknown[0][:40]!r}: send only {', '.join(map(repr, allowed))}")


def picture_from_request(payload, budget=None):
    """The request's "strokes" (drawn again) or "image" (a photo, decoded within the Budget of pixels
    if one is given) as grayscale in [0, 1]."""
    check_keys(payload)
    if "strokes" in payload:
        return render_strokes(parse_strokes(payload["strokes"]))
    return decode_photo(payload["image"], budget)


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
    """The request's "strokes" (grouped into digits, each drawn again) or "image" (a photo, decoded
    within the Budget of pixels if one is given, read as --predict reads it), read with the number
    `reader` (and a photo's narrow marks checked by the `network`) that find_digits takes, as Found digits."""
    check_keys(payload)
    if "strokes" in payload:
        pieces = drawn_digits(parse_strokes(payload["strokes"]), reader)
        if not pieces:
            raise BadRequest("blank image: no digit found")
        return Found(pieces, None)
    gray = decode_photo(payload["image"], budget)
    return Found(photo_digits(gray, reader, network), (gray.shape[1], gray.shape[0]))


def digit_from_request(payload, budget=None):
    """The request's drawing or photo as the 28x28 digit the network reads."""
    digit = to_mnist_form(picture_from_request(payload, budget))
    if digit is None:
        raise BadRequest("blank image: no digit found")
    return digit
