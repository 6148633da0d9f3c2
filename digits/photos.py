"""A photo or scan of one digit -> the 28x28 image the network reads, following MNIST's own steps.

MNIST digits are light ink on black, scaled to fit a 20x20 box and centred by their centre of mass
in 28x28. NumPy and Pillow only: no Keras.
"""

import math
import os
import warnings

import numpy as np
from PIL import Image, ImageOps
from scipy import ndimage

from digits.errors import IMAGE_SIZE, InputError
from digits.files import open_regular

MAX_DECODED_BYTES = 600_000_000  # an image's decoding at most: a 50-megapixel RGB PNG fits, 16-bit 13,300^2 not
READ_SIZE = 1024  # longer side kept on reading: plenty for a 20-pixel digit, cheap for a 100-megapixel photo
PREVIEW_SIZE = 192  # longer side of the copy shown in predictions.png
WORK_SIZE = 256  # longer side to_mnist_form works at
# Ink has edges; paper has none. Light and shade change slowly, so no picture of paper alone, however
# unevenly lit, changes by MIN_EDGE within a few pixels; and grain that does is noise, at most about
# 2.6 standard deviations, so an edge must also stand EDGE_OVER_NOISE of them above it.
MIN_EDGE = 0.15
EDGE_OVER_NOISE = 5


def _normalised(image):
    """16-bit, 32-bit and float images as mode F in [0, 1], scaled by their mode's range: convert("L") clips."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.min() >= 0 and values.max() <= 65535):
        # 16-bit data, whether Pillow calls it I;16 or I; a 12-bit sensor's (nothing above 4095) by its range
        values = values / (4095 if values.max() <= 4095 else 65535)
    elif image.mode == "F" and values.min() >= 0 and values.max() <= 1:
        pass
    else:  # 32-bit integers or floats outside [0, 1] have no agreed white: stretch what is there
        low, high = float(values.min()), float(values.max())
        values = (values - low) / max(high - low, 1e-12)
    return Image.fromarray(np.nan_to_num(values).astype(np.float32), "F")


def _on_background(image):
    """Put a transparent image on the colour that contrasts with what is drawn: white ink on black."""
    rgba = np.asarray(image, dtype=np.float32) / 255
    drawn = rgba[..., 3] > 0.5
    luminance = rgba[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    light_ink = drawn.any() and np.median(luminance[drawn]) > 0.5
    return Image.alpha_composite(Image.new("RGBA", image.size, "black" if light_ink else "white"), image)


def _decode(image):
    """An opened image as (gray in [0, 1], small RGB preview): reduced, upright, flattened, grayscale."""
    image.draft(None, (READ_SIZE, READ_SIZE))  # JPEG decodes at 1/2 to 1/8 scale: a fraction of the work
    # Decoded whole, then one full-size conversion (to float, or RGBA): refused before any of it is done.
    depth = {"I": 4, "F": 4, "1": 1}.get(image.mode, 2 if image.mode.startswith("I;16") else len(image.getbands()))
    needed = image.width * image.height * (depth + 4)
    if needed > MAX_DECODED_BYTES:
        raise InputError(f"too large to read: {image.width:,} x {image.height:,} pixels of {image.mode} need "
                         f"{needed / 1e9:.1f} GB to decode, more than {MAX_DECODED_BYTES / 1e9:.1f}: "
                         f"scale it down first")
    image = ImageOps.exif_transpose(image)  # phones store rotation in EXIF, not in the pixels
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _normalised(image)
    elif image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        image = image.convert("RGBA")
    elif image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    image.thumbnail((READ_SIZE, READ_SIZE), Image.BOX)  # box averaging keeps thin strokes as grey
    if image.mode == "RGBA":
        image = _on_background(image).convert("RGB")
    if image.mode == "F":
        gray = np.asarray(image, dtype=np.float32)
        image = Image.fromarray(np.round(gray * 255).astype(np.uint8), "L")
    else:
        gray = np.asarray(image.convert("L"), dtype=np.float32) / 255
    preview = image.convert("RGB")
    preview.thumbnail((PREVIEW_SIZE, PREVIEW_SIZE), Image.BOX)
    return gray, np.asarray(preview)


def read_image(source, formats=None, notes=None):
    """A path or binary file as (gray, preview): gray a 2-D float32 array in [0, 1] at most READ_SIZE
    pixels on its longer side, preview a small RGB uint8 copy in the image's own colours. Of several
    frames (a GIF, a TIFF) the first is read: "3 frames, read the first" goes into the list `notes`.

    `formats`: the Pillow formats to try (None: all it knows). Raises InputError with a one-line
    reason for anything it cannot read; a path that is not a regular file is never opened.
    """
    if isinstance(source, (str, os.PathLike)):
        with open_regular(source, "an image") as file:
            return read_image(file, formats, notes)
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 megapixels; a 108-megapixel phone photo is fine, read reduced.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source, formats=formats) as image:
                if notes is not None and getattr(image, "is_animated", False) and image.format != "MPO":
                    notes.append(f"{image.n_frames} frames, read the first")  # a phone's MPO: a photo, previews
                return _decode(image)
    except InputError:
        raise
    except Image.DecompressionBombError:
        raise InputError(f"declares more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, too large to read "
                         f"safely: scale it down first")
    except Exception as e:  # noqa: BLE001 -- a damaged or foreign file can trip any decoder, in any way
        raise InputError(f"not an image this program can read ({type(e).__name__})")


def read_digit(source, formats=None):
    """A path or binary file as (the 28x28 digit in MNIST's form, in [0, 1], and read_image's
    preview); InputError with a one-line reason where it cannot be read or holds no digit."""
    gray, preview = read_image(source, formats)
    digit = to_mnist_form(gray)
    if digit is None:
        raise InputError("blank image: no digit found")
    return digit, preview


_FILTERS = {np.max: ndimage.maximum_filter, np.min: ndimage.minimum_filter, np.mean: ndimage.uniform_filter}


def _sliding(array, size, reduce):
    """`reduce` (np.mean, np.max or np.min) over a size x size window, the edges repeated (scipy.ndimage)."""
    return _FILTERS[reduce](array, size, mode="nearest")


def otsu_threshold(values):
    """The threshold that best splits the values into two classes (Otsu, 1979)."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:  # one value, give or take rounding: nothing to split, all of it is the low class
        return high
    counts, edges = np.histogram(values, bins=256, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(counts * centres) / np.maximum(weight_low, 1)
    mean_high = ((counts * centres).sum() - np.cumsum(counts * centres)) / np.maximum(weight_high, 1)
    return centres[np.argmax(weight_low * weight_high * (mean_low - mean_high) ** 2)]


def noise_level(gray):
    """The standard deviation of the image's grain, from the differences between neighbours, whose
    median the few at an edge cannot move."""
    steps = np.concatenate([np.diff(gray, axis=0).ravel(), np.diff(gray, axis=1).ravel()])
    return float(np.median(np.abs(steps))) / (0.6745 * np.sqrt(2)) if steps.size else 0.0


def has_edges(gray, noise=None):
    """Whether anything in the image has an edge that neither light nor grain can make: ink.

    The edge is the largest change of level within 5 pixels once 3x3 averaging has calmed the
    grain (of standard deviation `noise`; None: measured here).
    """
    smooth = _sliding(gray, 3, np.mean)
    edge = float((_sliding(smooth, 5, np.max) - _sliding(smooth, 5, np.min)).max())
    return edge >= max(MIN_EDGE, EDGE_OVER_NOISE * (noise_level(gray) if noise is None else noise))


def ink_up(gray):
    """The image with ink light and paper dark, whichever way round it was written."""
    return 1 - gray if dark_ink(gray) else gray


def dark_ink(gray):
    """Whether the ink is darker than the paper.

    The paper is what the image's border shows: a digit, even cropped tight and filling the
    frame, touches the border only here and there. When most of the border falls on one side of
    the image's Otsu split, that side is the paper. When it does not, uneven light has spread the
    paper across the split, and the ink is the side that strays furthest from the border's median.
    """
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    light_border = (border > otsu_threshold(gray.ravel())).mean()
    if abs(light_border - 0.5) >= 0.15:
        dark_ink = light_border > 0.5
    else:
        smooth = _sliding(gray, 3, np.mean)  # so that a speck of noise cannot decide
        paper = np.median(border)
        dark_ink = paper - smooth.min() >= smooth.max() - paper
    return bool(dark_ink)


def paper_level(ink, step=1):
    """The paper's level under uneven light, from the paper only: a smooth surface, never a stroke.

    A quadratic in x and y (a lamp on one side, a shadow, a vignette) is fitted to the pixels on
    the paper's side of the Otsu split of what the last fit left; with six numbers it cannot
    follow a stroke, however bold, and refitting drops the ink even where it covers half the image.
    `step`: fit to every step-th pixel of every step-th row only (the same surface, sooner).
    """
    height, width = ink.shape
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    terms = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(-1, 6)
    values = ink.ravel().astype(np.float64)
    sampled = (np.arange(height)[:, None] % step == 0) & (np.arange(width)[None, :] % step == 0)
    terms_sampled, values_sampled = terms[sampled.ravel()], values[sampled.ravel()]
    paper = np.ones(values_sampled.size, bool)
    for _ in range(4):
        coefficients = np.linalg.lstsq(terms_sampled[paper], values_sampled[paper], rcond=None)[0]
        residual = values_sampled - terms_sampled @ coefficients
        paper = residual <= otsu_threshold(residual)
    return (terms @ coefficients).reshape(ink.shape).astype(np.float32)


def _resized(gray, scale):
    """The image scaled by `scale` (below 1), each new pixel the mean of those it covers."""
    size = (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale)))
    return np.asarray(Image.fromarray(gray).resize(size, Image.BOX))


def shrink(gray, scale):
    """(ink, noise): the image scaled by `scale` (below 1) with its ink turned light, and the grain's
    level it is to be judged by (None: its own).

    Averaging alone fades a ballpoint's 1-pixel line to a quarter of its contrast at a quarter of
    the size: a page photographed whole would seem blank. Where nothing shows once averaged, each
    pixel first takes the most ink of its neighbourhood, so that a line becomes as wide as a pixel
    of the result, at its full contrast; the ink's side is then told by the thin lines themselves,
    and the grain, which the neighbourhood's most would make look like ink, is judged at full size.
    """
    small = _resized(gray, scale)
    if has_edges(small):
        return ink_up(small), None
    width = 2 * math.ceil(1 / scale) - 1  # wide enough to fill a whole pixel of the result
    oriented = 1 - gray if thin_lines_dark(gray, width + 2) else gray
    return _resized(_sliding(oriented, width, np.max), scale), noise_level(gray)


def thin_lines_dark(gray, width):
    """Whether the lines narrower than `width` pixels are darker than what surrounds them.

    Told by the closing and opening of the image (the largest, then smallest, value around each
    pixel, and back): what a closing fills in is dark and thin, what an opening cuts off light and
    thin. Light and shade are neither; grain is both, equally. The side with more of it, counted
    above grain's level, is the ink's (paper between two close lines is thin and light too, but less).
    """
    closing = _sliding(_sliding(gray, width, np.max), width, np.min)
    opening = _sliding(_sliding(gray, width, np.min), width, np.max)
    dark, light = closing - gray, gray - opening
    level = MIN_EDGE / 2
    return float(dark[dark > level].sum()) >= float(light[light > level].sum())


def clean_ink(gray, size=WORK_SIZE, step=1):
    """The image's ink, light on black in [0, 1], at most `size` pixels on its longer side, with the
    paper's uneven light and noise removed; None when it holds no ink (a blank page, however lit).

    The steps to_mnist_form takes before it crops; find_digits takes them too, to find the digits
    (`step`: paper_level's).
    """
    scale = size / max(gray.shape)
    noise = None
    if scale < 1:  # more pixels carry no more useful detail for a 20-pixel digit; this keeps it fast
        ink, noise = shrink(gray, scale)
    else:
        if not has_edges(gray):
            return None
        ink = ink_up(gray)
    if not has_edges(ink, noise):
        return None
    background = paper_level(ink, step)
    # As a share of the way from the paper to full ink: a stroke in shadow counts as much as one in light.
    ink = np.clip((ink - background) / np.maximum(1 - background, 0.05), 0, 1)
    if _sliding(ink, 3, np.mean).max() < 0.15:
        return None
    ink = np.where(ink > otsu_threshold(ink.ravel()), ink, 0)  # paper noise and JPEG speckle
    return np.clip(ink / np.percentile(ink[ink > 0], 90), 0, 1)


def to_mnist_form(gray):
    """Turn a photo or scan of one digit into what the network was trained on.

    MNIST digits are light ink on black, scaled so the longer side is 20 pixels and centred by
    their centre of mass in a 28x28 frame. Returns None when no ink is found: a blank page, however
    lit, or an image of one colour.
    """
    if gray.shape == (IMAGE_SIZE, IMAGE_SIZE):
        border = np.concatenate([gray[:2].ravel(), gray[-2:].ravel(), gray[:, :2].ravel(), gray[:, -2:].ravel()])
        if border.mean() < 0.1 and has_edges(gray):
            return gray  # already MNIST-shaped: leave it exactly as it is
    ink = clean_ink(gray)
    return None if ink is None else centred(ink)


def centred(ink):
    """Ink (light on black, some of it above 0) cropped to itself, its longer side scaled to 20
    pixels and placed in 28x28 by its centre of mass, as MNIST's digits are."""
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    ink = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = ink.shape
    factor = 20 / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    digit = np.clip(np.asarray(Image.fromarray(ink).resize(size, Image.LANCZOS)), 0, 1)
    # Centre of mass to the frame's centre, as MNIST did; clipped so no stroke leaves the frame.
    ys, xs = np.indices(digit.shape)
    mass = digit.sum()
    top = int(np.clip(round(IMAGE_SIZE / 2 - (ys * digit).sum() / mass), 0, IMAGE_SIZE - digit.shape[0]))
    left = int(np.clip(round(IMAGE_SIZE / 2 - (xs * digit).sum() / mass), 0, IMAGE_SIZE - digit.shape[1]))
    frame = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return frame
