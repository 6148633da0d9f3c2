"""Lines of digits: written from MNIST digits (what the number reader learns from and is measured on),
photographed on paper, a chalkboard or a whiteboard, and put in the reader's form. NumPy, SciPy and Pillow: no Keras.

The reader's form is MNIST's, stretched along the line: light ink on black, the line's ink scaled to
LINE_INK pixels high in a LINE_HEIGHT-pixel strip, with paper on every side. Training lines and photos
go through the same `line_form`, so the reader sees at training what it sees in use.
"""

import io
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from digits.photos import clean_ink

LINE_HEIGHT = 28  # the strip the reader reads, as MNIST's frame
LINE_INK = 20  # the line's ink is scaled to this height, as MNIST scales a digit's longer side
MARGIN = 4  # paper left and right of the ink, in the strip's pixels
STEP = 2  # strip pixels per step of the number reader's sequence (its pooling halves the columns)
WIDTH_STEP = 16  # strips are padded to a multiple of this width: few shapes for the network to compile
MAX_WIDTH = 640  # the widest strip read: ~24 digits; longer lines are squeezed to fit (a page, not a number)
INK = 0.25  # of full ink: fainter pixels do not count where the line's ink is
SPECK = 0.02  # of the largest mark's ink: smaller marks beside the line are grain, left out of its extent
MAX_DIGITS = 8  # the longest number trained on
# (low, high, name): the paper between one digit's ink and the next, a share of the digits' height.
SPACINGS = [(-0.15, -0.05, "overlapping"), (-0.05, 0.05, "touching or nearly"), (0.05, 0.2, "close"),
            (0.2, 0.71, "apart")]
LOOKS = ("ink", "paper", "chalkboard", "whiteboard")  # ink: the line as written, light on black, no photo


class Ink(NamedTuple):
    """Digits written side by side: ink in [0, 1] on a canvas with margins, the digits' height, the
    paper between one digit's ink and the next as a share of that height (below 0: they overlap), and
    which digit wrote each pixel (1 to n, the darkest where two cross; 0: paper)."""

    canvas: np.ndarray
    height: int
    spacing: float
    owner: np.ndarray


class Strip(NamedTuple):
    """A line in the reader's form, and how to find its columns in the picture it came from: picture
    column = left + (strip column - MARGIN) / scale; its rows span top to bottom there."""

    pixels: np.ndarray  # (LINE_HEIGHT, width) float32 in [0, 1], width a multiple of WIDTH_STEP
    left: float
    scale: float
    top: int
    bottom: int


def written_digit(image, height, rng=None, slant=0.0, aspect=1.0):
    """A 28x28 MNIST digit (uint8) cropped to its ink and scaled to `height` pixels, as ink in [0, 1]:
    `aspect` times as wide as written, slanted by `slant` (x moves by slant * height from bottom to top)."""
    rows, cols = np.flatnonzero(image.max(axis=1) > 30), np.flatnonzero(image.max(axis=0) > 30)
    ink = Image.fromarray(image[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1])
    width = max(1, round(ink.width * height * aspect / ink.height))
    ink = ink.resize((width, height), Image.BICUBIC)
    if slant:
        extra = int(np.ceil(abs(slant) * height))
        shift = -slant * height if slant > 0 else 0
        ink = ink.transform((width + extra, height), Image.AFFINE, (1, slant, shift, 0, 1, 0), Image.BICUBIC)
    return np.clip(np.asarray(ink, dtype=np.float32) / 255, 0, 1)


def number_ink(images, rng, height=None, spacing=None, varied=False):
    """The MNIST digits `images` written side by side, as Ink: `height` (default 40-150 pixels) and
    `spacing` (default -0.15 to 0.7 of the height) as the photo benchmark writes them; `varied` also
    slants, widens and narrows each digit and varies the stroke, as the reader's lines do."""
    height = int(rng.integers(40, 151)) if height is None else height
    spacing = rng.uniform(-0.15, 0.7) if spacing is None else spacing
    slant = rng.uniform(-0.25, 0.25) if varied else 0.0
    digits = []
    for image in images:
        size = round(height * rng.uniform(0.85, 1.15))
        if varied:
            digit = written_digit(image, size, slant=slant + rng.uniform(-0.08, 0.08), aspect=rng.uniform(0.75, 1.25))
        else:
            digit = written_digit(image, size)
        digits.append(digit)
    margin = int(height * rng.uniform(0.3, 1.2)) + 5
    slope = rng.uniform(-0.05, 0.05)  # the line of writing drifts a little up or down
    places, x = [], margin
    for ink in digits:
        top = margin + round(height * (0.15 + rng.uniform(-0.1, 0.1)) + slope * (x - margin)) + height - ink.shape[0]
        places.append((int(top), int(x)))
        x += ink.shape[1] + round(height * (spacing + rng.uniform(-0.05, 0.05)))
    right = max(left + ink.shape[1] for (_, left), ink in zip(places, digits)) + margin
    bottom = max(top + ink.shape[0] for (top, _), ink in zip(places, digits)) + margin
    shift = max(0, -min(top for top, _ in places) + 5)
    left_shift = max(0, -min(left for _, left in places) + 5)
    canvas = np.zeros((bottom + shift, right + left_shift), np.float32)
    owner = np.zeros(canvas.shape, np.int32)
    for number, ((top, left), ink) in enumerate(zip(places, digits), start=1):
        window = np.s_[top + shift : top + shift + ink.shape[0], left + left_shift : left + left_shift + ink.shape[1]]
        owner[window] = np.where((ink > 0.1) & (ink > canvas[window]), number, owner[window])
        np.maximum(canvas[window], ink, out=canvas[window])
    if varied:
        canvas = _stroke_varied(canvas, height, rng)
    return Ink(canvas, height, spacing, owner)


def _stroke_varied(canvas, height, rng):
    """The ink with thicker strokes (a marker), thinner ones (a fine pen), or as written."""
    choice = rng.random()
    if choice < 0.3:
        size = max(2, round(height * rng.uniform(0.03, 0.09)))
        return ndimage.grey_dilation(canvas, size=(size, size))
    if choice < 0.45:  # only the middle of each stroke is left
        cut = rng.uniform(0.2, 0.5)
        return np.clip((canvas - cut) / (1 - cut), 0, 1)
    return canvas


def photo_of(ink, height, kind, rng):
    """Ink (light on black, in [0, 1]) of digits `height` pixels high as an RGB photo on "paper", a
    "chalkboard" or a "whiteboard": uneven light, fibres, grain, a tint and a little blur, as a phone
    shows a number."""
    if rng.random() < 0.3 or kind == "whiteboard":  # a marker: thicker strokes
        size = 3 if height < 90 else 5
        ink = np.asarray(Image.fromarray(ink).filter(ImageFilter.MaxFilter(size)))
    rows, cols = ink.shape
    ys, xs = np.mgrid[0:rows, 0:cols].astype(np.float32)
    light = 1 - rng.uniform(0, 0.35) * (xs / cols if rng.random() < 0.5 else 1 - xs / cols)
    light = light * (1 - rng.uniform(0, 0.15) * ys / rows)
    fibres = np.asarray(Image.fromarray(np.uint8(rng.integers(0, 256, (rows, cols)))).filter(
        ImageFilter.GaussianBlur(2)), dtype=np.float32)
    fibres = (fibres - fibres.mean()) / max(float(fibres.std()), 1e-6)
    grain = rng.normal(0, rng.uniform(0.005, 0.03), (rows, cols))
    if kind == "paper":
        paper, pen = rng.uniform(0.78, 0.95), rng.uniform(0.08, 0.3)
        gray = light * (paper + 0.03 * fibres - (paper - pen) * ink) + grain
        tint = np.array([1.0, rng.uniform(0.95, 1.0), rng.uniform(0.85, 1.0)])
        rgb = gray[..., None] * tint
    elif kind == "chalkboard":  # chalk on a board: light, patchy strokes on a dark green-grey
        board, chalk = rng.uniform(0.12, 0.3), rng.uniform(0.7, 0.92)
        patchy = np.clip(1 - 0.25 * np.abs(fibres), 0.4, 1)
        gray = light * (board + 0.02 * fibres + (chalk - board) * ink * patchy) + grain
        tint = np.array([rng.uniform(0.85, 1.0), 1.0, rng.uniform(0.85, 1.0)])
        rgb = gray[..., None] * tint
    else:  # a coloured marker on a glossy white board, a lamp's glare somewhere on it
        cy, cx, reach = rng.uniform(0, rows), rng.uniform(0, cols), rng.uniform(0.2, 0.6) * max(rows, cols)
        glare = rng.uniform(0.1, 0.3) * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * reach**2))
        marker = np.array([(0.15, 0.2, 0.65), (0.7, 0.12, 0.12), (0.1, 0.45, 0.2), (0.12, 0.12, 0.14)][rng.integers(4)])
        board = rng.uniform(0.85, 0.97)
        shade = (light * board + glare)[..., None]
        rgb = shade * (1 - ink[..., None]) + light[..., None] * marker * ink[..., None] + grain[..., None]
    rgb = np.clip(rgb, 0, 1)
    return Image.fromarray(np.uint8(255 * rgb), "RGB").filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.2)))


def jpeg_gray(photo, rng):
    """The photo saved as a JPEG (quality 60-92) and read back as grayscale in [0, 1]."""
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=int(rng.integers(60, 93)))
    return np.asarray(Image.open(buffer).convert("L"), dtype=np.float32) / 255


def line_extent(mask):
    """(top, bottom, left, right) of the marks in a boolean mask, bottom and right exclusive, leaving out
    specks smaller than SPECK of the largest mark (grain beside the line); None when there are none."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    keep = np.flatnonzero(sizes >= SPECK * sizes.max()) + 1
    objects = ndimage.find_objects(labels)
    boxes = [objects[k - 1] for k in keep]
    top, bottom = min(b[0].start for b in boxes), max(b[0].stop for b in boxes)
    left, right = min(b[1].start for b in boxes), max(b[1].stop for b in boxes)
    return top, bottom, left, right


def line_form(ink):
    """Ink (light on black, in [0, 1]) as a Strip the reader reads, or None where it holds no ink."""
    extent = line_extent(ink > INK)
    if extent is None:
        return None
    top, bottom, left, right = extent
    crop = ink[top:bottom, left:right]
    scale = LINE_INK / crop.shape[0]
    width = max(1, round(crop.shape[1] * scale))
    if width > MAX_WIDTH - 2 * MARGIN:  # a page, not a number: squeezed to fit, and read as well as it can be
        width = MAX_WIDTH - 2 * MARGIN
    resized = np.clip(np.asarray(Image.fromarray(crop).resize((width, LINE_INK), Image.BOX if scale < 1
                                                                 else Image.BILINEAR)), 0, 1)
    padded = -(-(width + 2 * MARGIN) // WIDTH_STEP) * WIDTH_STEP
    pixels = np.zeros((LINE_HEIGHT, padded), np.float32)
    pixels[(LINE_HEIGHT - LINE_INK) // 2 : (LINE_HEIGHT + LINE_INK) // 2, MARGIN : MARGIN + width] = resized
    return Strip(pixels, float(left), width / crop.shape[1], int(top), int(bottom))


class Line(NamedTuple):
    """A composed line: the strip the reader reads, its digits, how far apart they were written and
    in which look (LOOKS)."""

    strip: np.ndarray
    number: str
    spacing: float
    look: str


def composed_line(images, labels, rng, look="ink"):
    """A line of the MNIST `images` (uint8, 28x28) with their `labels`, written with varied height,
    spacing from crossing to well apart, slant, width and stroke, in `look`,
    in the reader's form."""
    if look == "ink":
        ink = number_ink(images, rng, height=int(rng.integers(24, 48)), spacing=rng.uniform(-0.25, 0.8), varied=True)
        canvas = ink.canvas
        if rng.random() < 0.5:
            canvas = ndimage.gaussian_filter(canvas, rng.uniform(0.3, 1.2))
            canvas = np.clip(canvas / max(float(canvas.max()), 1e-6), 0, 1)
    else:
        ink = number_ink(images, rng, height=int(rng.integers(24, 80)), spacing=rng.uniform(-0.25, 0.8), varied=True)
        canvas = clean_ink(jpeg_gray(photo_of(ink.canvas, ink.height, look, rng), rng), 512, step=2)  # as read
        if canvas is None:  # the photo lost the ink (faint, tiny): read as written instead
            canvas = ink.canvas
    strip = line_form(canvas)
    return Line(strip.pixels, "".join(str(int(label)) for label in labels), ink.spacing, look)


def lines(x, y, count, rng, looks=("ink",), shares=None, lengths=(1, MAX_DIGITS)):
    """`count` composed lines of the digits x (uint8 N x 28 x 28) and labels y, each of 1 to 8 of them
    drawn at random (`lengths`: the fewest and most), in the `looks` given (`shares`: how often each)."""
    made = []
    for _ in range(count):
        chosen = rng.integers(0, len(x), int(rng.integers(lengths[0], lengths[1] + 1)))
        look = looks[rng.choice(len(looks), p=shares)]
        made.append(composed_line(x[chosen], y[chosen], rng, look))
    return made


def batch_of(strips, numbers):
    """Strips of any widths padded with paper to the widest, (N, LINE_HEIGHT, width, 1), and their
    numbers as labels 1-10 (digit + 1; 0 is CTC's blank and pads), (N, MAX_DIGITS or the longest)."""
    width = max(strip.shape[1] for strip in strips)
    images = np.zeros((len(strips), LINE_HEIGHT, width, 1), np.float32)
    for k, strip in enumerate(strips):
        images[k, :, : strip.shape[1], 0] = strip
    labels = np.zeros((len(numbers), max(MAX_DIGITS, *map(len, numbers))), np.int32)
    for k, number in enumerate(numbers):
        labels[k, : len(number)] = [int(c) + 1 for c in number]
    return images, labels
