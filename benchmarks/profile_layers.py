"""Where a training step's time goes: each layer's forward and backward pass, timed on its own.

    python benchmarks/profile_layers.py            # batch 128, as the default run trains

Each layer of the network runs in its own compiled function (forward, then the gradients for its
weights and, past the first layer, its input, as training needs) on a batch of the shape it sees in training; the
optimizer's update and the loss are timed the same way. The sum is compared with a whole training
step of the real model. Times are medians of repeated runs on this machine's cores.
"""

import argparse
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf  # per-layer gradients through TensorFlow's own tape: this profile needs that backend

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from digits.networks import build_cnn


def median_ms(function, *args, repeats=30):
    function(*args)  # compile
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    model = build_cnn()
    rows = []
    x = tf.random.uniform((args.batch_size, 28, 28, 1))
    for n, layer in enumerate(model.layers):
        inputs = tf.random.uniform((args.batch_size, *layer.input.shape[1:]))

        @tf.function
        def step(inputs, layer=layer, needs_input_gradient=n > 0):  # nothing flows back into the images
            with tf.GradientTape() as tape:
                tape.watch(inputs)
                outputs = layer(inputs)
            sources = [inputs] if needs_input_gradient else []
            return tape.gradient(outputs, sources + layer.trainable_weights)

        rows.append((f"{layer.name} ({type(layer).__name__})", median_ms(step, inputs)))

    # The first convolution (one input channel, which suits oneDNN's kernels least) written two other
    # ways that compute the same thing with the same weights; neither is used if it is not faster.
    first = model.layers[0]
    kernel = first.kernel.value if hasattr(first.kernel, "value") else first.kernel
    others = {
        "as DepthwiseConv2D": lambda x: tf.nn.depthwise_conv2d(x, kernel, [1, 1, 1, 1], "VALID"),
        "as 3x3 patches times a matrix": lambda x: tf.einsum("nhwk,kc->nhwc", tf.image.extract_patches(
            x, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID"), tf.reshape(kernel, (9, -1))),
    }
    for name, convolve in others.items():
        @tf.function
        def step(x, convolve=convolve):
            with tf.GradientTape() as tape:
                outputs = tf.nn.relu(convolve(x) + first.bias)
            return tape.gradient(outputs, [kernel, first.bias])

        rows.append((f"{first.name} {name} (not used)", median_ms(step, x)))

    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    gradients = [tf.zeros_like(v) for v in model.trainable_variables]
    rows.append(("Adam update", median_ms(tf.function(lambda: optimizer.apply(gradients, model.trainable_variables)))))

    labels = tf.random.uniform((args.batch_size,), 0, 10, dtype=tf.int32)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    whole = median_ms(lambda: model.train_on_batch(x, labels))
    total = sum(ms for name, ms in rows if "not used" not in name)
    print(f"Batch {args.batch_size}; median of 30 runs each, in milliseconds per training step.\n")
    print("| part | ms per step | share of the parts |\n|---|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} | {'' if 'not used' in name else f'{ms / total:.0%}'} |")
    print(f"| sum of the parts | {total:.2f} | 100% |")
    print(f"| whole training step (model.train_on_batch) | {whole:.2f} | |")
    print(f"\nAt {whole:.1f} ms a step, an epoch of {60000 // args.batch_size + 1} steps is "
          f"{whole * (60000 // args.batch_size + 1) / 1000:.1f} s of training steps.")


if __name__ == "__main__":
    main()
