"""The networks: the original Keras example's cnn family and a compact residual network.

Both take 28x28x1 images in [0, 1] and end in a float32 softmax over the 10 digits (under mixed
precision the probabilities still sum to 1). Every layer is named for its place in the network, so
the printed summary reads the same however many networks the process built before. Only built-in
Keras layers, so a saved model.keras loads anywhere without this package.
"""

import os
import shutil

import keras

from digits.errors import IMAGE_SIZE, NUM_CLASSES
from digits.settings import CNN_DENSE_UNITS, CNN_FILTERS, NetworkSpec

RESNET_STAGES = ((16, 1), (32, 1), (64, 2))  # (channels, residual blocks) at 28x28, 14x14, 7x7
# Batch normalisation's running statistics follow the last few dozen batches, not Keras' default
# last few hundred. Even so a short run would predict with statistics that lag its weights, so
# training recomputes them at the end (digits.training.settle_batch_norm).
BN_MOMENTUM = 0.9


def build_cnn(filters=CNN_FILTERS, dense_units=CNN_DENSE_UNITS):
    """The cnn family: one Conv2D 3x3 + ReLU + MaxPool 2x2 block per number in `filters`, Flatten,
    an optional hidden Dense layer, softmax. The defaults are the original example's network,
    179,926 parameters. Settings are checked by digits.settings.network_spec.
    """
    layers = [keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")]
    for block, n in enumerate(filters, start=1):
        layers += [keras.layers.Conv2D(n, (3, 3), activation="relu", name=f"block{block}_conv"),
                   keras.layers.MaxPooling2D((2, 2), name=f"block{block}_pool")]
    layers.append(keras.layers.Flatten(name="flatten"))
    if dense_units:
        layers.append(keras.layers.Dense(dense_units, activation="relu", name="hidden"))
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities"))
    return keras.Sequential(layers, name="mnist_cnn")


def conv_bn(x, channels, strides, name, relu=True):
    """3x3 convolution, batch normalisation (which makes the convolution's bias redundant), ReLU."""
    x = keras.layers.Conv2D(channels, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def residual_block(x, channels, strides, name):
    """Two 3x3 convolutions added to the block's input (He et al., 2016). Where the block halves the
    image or widens the channels, the input is brought to the new shape by a 1x1 convolution."""
    shortcut = x
    if strides != 1 or x.shape[-1] != channels:
        shortcut = keras.layers.Conv2D(channels, 1, strides=strides, use_bias=False, name=f"{name}_proj_conv")(x)
        shortcut = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_proj_bn")(shortcut)
    y = conv_bn(x, channels, strides, f"{name}_1")
    y = conv_bn(y, channels, 1, f"{name}_2", relu=False)
    return keras.layers.ReLU(name=f"{name}_out")(keras.layers.Add(name=f"{name}_add")([y, shortcut]))


def build_resnet(stages=RESNET_STAGES):
    """A residual network sized for 28x28 digits and a CPU: 152,666 parameters.

    A 3x3 stem, then stages of residual blocks at 28x28, 14x14 and 7x7 (each later stage halves the
    image with a stride-2 convolution and doubles the channels), global average pooling, softmax.
    ResNet50 from keras.applications expects 224x224 photographs and would cost tens of times more.
    The extra block goes to the 7x7 stage: its convolutions cost the arithmetic of one at 28x28,
    but move a quarter of the activations through normalisation and see the whole digit.
    """
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, 1), name="image")
    x = conv_bn(inputs, stages[0][0], 1, "stem")
    for stage, (channels, blocks) in enumerate(stages, start=1):
        for block in range(1, blocks + 1):
            strides = 2 if stage > 1 and block == 1 else 1
            x = residual_block(x, channels, strides, f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mnist_resnet")


def build_network(spec=None):
    """The network a NetworkSpec (from digits.settings.network_spec) describes; None: the default cnn."""
    spec = spec or NetworkSpec()
    if spec.architecture == "resnet":
        return build_resnet()
    return build_cnn(spec.filters, spec.dense_units)


def print_summary(model, least=72):
    """model.summary(), as wide as the terminal (at least `least` columns), or 100 columns where the
    output is no terminal (a log, a pipe). Keras draws its table with rich, which crops it at its
    console's width: the terminal's, else 80, whatever line_length says."""
    width = max(shutil.get_terminal_size((100, 24)).columns, least)
    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)  # rich's console width, where it has no terminal to ask
    try:
        model.summary(line_length=width)
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
