"""What the drawing page's server answers with: the digits it was sent, read by the model (one at a
time, under a lock: a Keras model is not meant for threads) or by the number reader, as the JSON
reply of POST /predict. No HTTP and no Keras import: the model and the reader are handed in."""

import numpy as np

from digits.errors import IMAGE_SIZE
from digits.lines import LINE_HEIGHT, WIDTH_STEP
from digits.numbers import doubt
from digits.reader import read_strips


class ModelReplies:
    """The model side of the drawing page's server: it sets `model`, `reader` (the number reader, or
    None) and `model_lock`."""

    def read(self, found):
        """The reply to /predict for the digits Found: "number", and "digits", each with the digit read,
        its ten probabilities, the 28x28 image the model saw and its box; a photo's "size" (what its
        boxes refer to). A drawing or photo of one digit also has that digit's "digit",
        "probabilities" and "image" at the top, as the page's replies always had."""
        digits, read = [], []
        for piece in found.pieces:
            probabilities = self.predict(piece.digit) if piece.probabilities is None else piece.probabilities
            read.append(probabilities)
            digits.append({"digit": int(probabilities.argmax()),
                           "probabilities": [round(float(p), 6) for p in probabilities],
                           "image": np.round(piece.digit * 255).astype(int).tolist(),
                           "box": [round(float(v), 1) for v in piece.box]})
        reply = {"number": "".join(str(d["digit"]) for d in digits), "digits": digits,
                 "unsure": doubt(found.pieces, read)}  # why it may be wrong (letters, a scribble), or null
        if len(digits) == 1:
            reply.update({key: digits[0][key] for key in ("digit", "probabilities", "image")})
        if found.size is not None:
            reply["size"] = list(found.size)
        return reply

    def predict(self, digit):
        """The model's ten probabilities for one 28x28 digit."""
        return self.read_digits(digit[None])[0]

    def read_digits(self, digits):
        """The model's ten probabilities for each of a stack of 28x28 digits."""
        with self.model_lock:
            return np.asarray(self.model.predict_on_batch(digits[..., None]), np.float64)

    def read_lines(self, strips):
        """The number reader's Readings of strips (find_digits' reader)."""
        with self.model_lock:
            return read_strips(self.reader, strips)

    def warm_up(self):
        """The first prediction compiles the model: do it before the first visitor waits for it."""
        self.predict(np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32))
        if self.reader is not None:
            self.read_lines([np.zeros((LINE_HEIGHT, 8 * WIDTH_STEP), np.float32)])
