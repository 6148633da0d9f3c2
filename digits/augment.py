"""Data augmentation inside the compiled training step: one random affine transform per image."""

import keras
import numpy as np

from digits.errors import IMAGE_SIZE


def affine_transforms(angle, scale, shift_x, shift_y):
    """Per-image transforms for keras.ops.image.affine_transform: turn by `angle` radians
    counter-clockwise, scale by `scale`, then move by (shift_x, shift_y) pixels, about the centre.

    Each row maps an output pixel to where it is read from in the input.
    """
    cos, sin = keras.ops.cos(angle) / scale, keras.ops.sin(angle) / scale
    centre = (IMAGE_SIZE - 1) / 2
    zeros = keras.ops.zeros_like(angle)
    return keras.ops.stack([cos, -sin, centre - (cos - sin) * centre - shift_x,
                            sin, cos, centre - (sin + cos) * centre - shift_y, zeros, zeros], axis=1)


class RandomAffine(keras.layers.Layer):
    """Rotate (up to 10 degrees), zoom (10%) and shift (10%) each training image at random.

    One combined transform per image, where Keras' RandomRotation, RandomZoom and RandomTranslation
    in a row would interpolate, and blur, three times. It runs inside the compiled training step,
    on the backend's own device; at inference it passes images through.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=False):
        """The images, each moved by its own random transform while training; as they are otherwise."""
        if not training:
            return images
        shape = (keras.ops.shape(images)[0],)

        def uniform(low, high):
            return keras.random.uniform(shape, low, high, seed=self.seed_generator)

        transforms = affine_transforms(uniform(-10.0, 10.0) * (np.pi / 180), uniform(0.9, 1.1),
                                       uniform(-0.1, 0.1) * IMAGE_SIZE, uniform(-0.1, 0.1) * IMAGE_SIZE)
        # fill 0: MNIST's background is black, not a mirror image of the digit
        return keras.ops.image.affine_transform(images, transforms, fill_mode="constant", fill_value=0)
