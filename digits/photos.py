"""A photo or scan of one digit -> the 28x28 image the network reads, following MNIST's own steps.

MNIST digits are light ink on black, scaled to fit a 20x20 box and centred by their centre of mass
in 28x28. NumPy and Pillow only: no Keras.
"""

import warnings

import numpy as np
from PIL import Image, ImageOps

from digits.errors import IMAGE_SIZE, InputError

READ_SIZE = 1024  # longer side kept on reading: plenty for a 20-pixel digit, cheap for a 100-megapixel photo
PREVIEW_SIZE = 192  # longer side of the copy shown in predictions.png
WORK_SIZE = 256  # longer side to_mnist_form works at


def _normalised(image):
    """16-bit, 32-bit and float images as mode F in [0, 1], scaled by their mode's range: convert("L") clips."""
    values = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.min() >= 0 and values.max() <= 65535):
        values = values / 65535  # 16-bit data, whether Pillow calls it I;16 or I
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


def read_image(source):
    """A path or binary file as (gray, preview): gray a 2-D float32 array in [0, 1] at most READ_SIZE
    pixels on its longer side, preview a small RGB uint8 copy in the image's own colours.

    Raises InputError with a one-line reason for anything it cannot read.
    """
    try:
        with warnings.catch_warnings():
            # Pillow warns above ~89 megapixels; a 108-megapixel phone photo is fine, read reduced.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                return _decode(image)
    except FileNotFoundError:
        raise InputError("no such file")
    except IsADirectoryError:
        raise InputError("a folder, not an image")
    except Image.DecompressionBombError:
        raise InputError(f"declares more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, too large to read "
                         f"safely: scale it down first")
    except Exception as e:  # noqa: BLE001 -- a damaged or foreign file can trip any decoder, in any way
        raise InputError(f"not an image this program can read ({type(e).__name__})")


def _sliding(array, size, reduce):
    """`reduce` (np.mean, np.max...) over a size x size window, separable and edge-padded."""
    pad = size // 2
    for axis in (0, 1):
        padded = np.pad(array, [(pad, pad) if a == axis else (0, 0) for a in (0, 1)], mode="edge")
        array = reduce(np.lib.stride_tricks.sliding_window_view(padded, size, axis=axis), axis=-1)
    return array


def otsu_threshold(values):
    """The threshold that best splits the values into two classes (Otsu, 1979)."""
    low, high = float(values.min()), float(values.max())
    if high - low < 1e-6:  # one value: nothing to split
        return low
    counts, edges = np.histogram(values, bins=256, range=(low, high))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mean_low = np.cumsum(counts * centres) / np.maximum(weight_low, 1)
    mean_high = ((counts * centres).sum() - np.cumsum(counts * centres)) / np.maximum(weight_high, 1)
    return centres[np.argmax(weight_low * weight_high * (mean_low - mean_high) ** 2)]


def ink_up(gray):
    """The image with ink light and paper dark, whichever way round it was written.

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
    return 1 - gray if dark_ink else gray


def paper_level(ink):
    """The paper's level under uneven light, from the paper only: a smooth surface, never a stroke.

    A quadratic in x and y (a lamp on one side, a shadow, a vignette) is fitted to the pixels on
    the paper's side of the Otsu split of what the last fit left; with six numbers it cannot
    follow a stroke, however bold, and refitting drops the ink even where it covers half the image.
    """
    height, width = ink.shape
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    terms = np.stack([np.ones_like(x), x, y, x * x, x * y, y * y], axis=-1).reshape(-1, 6)
    values = ink.ravel().astype(np.float64)
    paper = np.ones(values.size, bool)
    for _ in range(4):
        coefficients = np.linalg.lstsq(terms[paper], values[paper], rcond=None)[0]
        residual = values - terms @ coefficients
        paper = residual <= otsu_threshold(residual)
    return (terms @ coefficients).reshape(ink.shape).astype(np.float32)


def to_mnist_form(gray):
    """Turn a photo or scan of one digit into what the network was trained on.

    MNIST digits are light ink on black, scaled so the longer side is 20 pixels and centred by
    their centre of mass in a 28x28 frame. Returns None when no ink is found.
    """
    border = np.concatenate([gray[:2].ravel(), gray[-2:].ravel(), gray[:, :2].ravel(), gray[:, -2:].ravel()])
    if gray.shape == (IMAGE_SIZE, IMAGE_SIZE) and border.mean() < 0.1:
        return gray  # already MNIST-shaped: leave it exactly as it is
    if np.ptp(gray) < 2 / 255:  # one flat tone (a blank page): no ink, and nothing for the fits below to split
        return None
    scale = WORK_SIZE / max(gray.shape)
    if scale < 1:  # more pixels carry no more useful detail for a 20-pixel digit; this keeps it fast
        gray = np.asarray(Image.fromarray(gray).resize(
            (max(1, round(gray.shape[1] * scale)), max(1, round(gray.shape[0] * scale))), Image.BOX))
    ink = ink_up(gray)
    background = paper_level(ink)
    # As a share of the way from the paper to full ink: a stroke in shadow counts as much as one in light.
    ink = np.clip((ink - background) / np.maximum(1 - background, 0.05), 0, 1)
    if _sliding(ink, 3, np.mean).max() < 0.15:
        return None
    ink = np.where(ink > otsu_threshold(ink.ravel()), ink, 0)  # paper noise and JPEG speckle
    ink = np.clip(ink / np.percentile(ink[ink > 0], 90), 0, 1)
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
