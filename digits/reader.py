"""The number reader: a small network that reads a line of digits (digits.lines' strip) as a whole.

A convolutional trunk looks at the strip; its columns, two pixels of the strip each, become a sequence
that two 1-D convolutions read in context; each step says which digit it sees, or none (CTC's blank,
class 0; digit d is class d + 1). Trained with CTC (Graves et al. 2006), as keras-io's captcha_ocr.py
reads captchas and Shi et al.'s CRNN reads words, so that no rule has to say where one digit ends and
the next begins: touching and crossing digits are read as they are. Greedy decoding: the most likely
class at each step, repeats merged, blanks dropped; a digit's steps say where it is.
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np

from digits.backend import load_keras
from digits.errors import InputError, one_line
from digits.lines import LINE_HEIGHT

READER_FILE = Path(__file__).resolve().parents[1] / "models" / "number_reader.keras"
BLANK = 0
HOW_TO_GET = ("restore it with `git checkout models/number_reader.keras`, "
              "or train one with `python train_number_reader.py`")


def build_reader(filters=(32, 64, 96), units=128):
    """The reader: (batch, LINE_HEIGHT, width, 1) strips -> (batch, width / STEP, 11) logits."""
    keras = load_keras()
    layers = keras.layers
    inputs = keras.Input((LINE_HEIGHT, None, 1), name="strip")
    x = inputs
    for n, count in enumerate(filters):  # 28 rows -> 14 -> 7; columns -> half, then kept
        x = layers.Conv2D(count, 3, padding="same", activation="relu", name=f"conv{n + 1}")(x)
        if n < 2:
            x = layers.MaxPooling2D((2, 2) if n == 0 else (2, 1), name=f"pool{n + 1}")(x)
    x = layers.Permute((2, 1, 3))(x)  # (columns, rows, filters): each column's whole height, in order
    x = layers.Reshape((-1, (LINE_HEIGHT // 4) * filters[-1]), name="columns")(x)
    x = layers.Dense(units, activation="relu", name="column")(x)
    for n in range(2):  # each step sees ~40 strip pixels around it: the whole digit and its neighbours
        step = layers.Conv1D(units, 5, padding="same", activation="relu", name=f"context{n + 1}")(x)
        x = layers.Add()([x, layers.Dropout(0.2)(step)])
    outputs = layers.Dense(11, dtype="float32", name="logits")(x)  # blank and the ten digits
    return keras.Model(inputs, outputs, name="number_reader")


def ctc_loss(labels, logits):
    """keras.losses.ctc: labels 1-10, padded with 0; logits over every step."""
    return load_keras().losses.ctc(labels, logits)


class Reading(NamedTuple):
    """One strip read: the number, and for each digit its first and last step (the columns
    STEP * first to STEP * (last + 1) of the strip), how sure the reader was of it, and its ten
    probabilities (at its surest step, renormalised without the blank)."""

    number: str
    spans: list
    confidences: list
    probabilities: list


def decode(probabilities):
    """A Reading of one strip's (steps, 11) probabilities: greedy, repeats merged, blanks dropped."""
    best = probabilities.argmax(axis=1)
    number, spans, confidences, tens = "", [], [], []
    for step, label in enumerate(best):
        if label == BLANK:
            continue
        if step > 0 and best[step - 1] == label:  # the same digit seen again: it goes on
            spans[-1] = (spans[-1][0], step)
            continue
        number += str(label - 1)
        spans.append((step, step))
    for first, last in spans:
        surest = first + int(probabilities[first : last + 1, 1:].max(axis=1).argmax())
        confidences.append(float(probabilities[first : last + 1, best[surest]].max()))
        ten = probabilities[surest, 1:]
        tens.append(ten / ten.sum())
    return Reading(number, spans, confidences, tens)


def read_strips(model, strips):
    """Readings of strips (each (LINE_HEIGHT, width)), in order, batched by width."""
    readings = [None] * len(strips)
    for width in sorted({strip.shape[1] for strip in strips}):
        chosen = [k for k, strip in enumerate(strips) if strip.shape[1] == width]
        logits = np.asarray(model.predict_on_batch(np.stack([strips[k] for k in chosen])[..., None]), np.float64)
        probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
        for k, p in zip(chosen, probabilities):
            readings[k] = decode(p)
    return readings


def load_reader(path=READER_FILE):
    """The number reader saved at `path`, or an InputError that says how to get it."""
    if not Path(path).is_file():
        raise InputError(f"no number reader at {path}: {HOW_TO_GET}")
    keras = load_keras()
    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 -- a truncated or foreign file: Keras raises many kinds
        raise InputError(f"the number reader at {path} is damaged ({one_line(e)[:120]}): {HOW_TO_GET}")
    shape = tuple(getattr(model, "input_shape", ()))
    if len(shape) != 4 or shape[1] != LINE_HEIGHT or model.output_shape[-1] != 11:
        raise InputError(f"{path} is not a number reader (inputs {shape}): {HOW_TO_GET}")
    return model
