"""Training: the trainer around the network, Adam and its learning-rate schedule, and a fit that
stops cleanly on Ctrl-C or SIGTERM, keeping every fully trained epoch."""

import sys
import time
from typing import NamedTuple

import keras
import numpy as np

from digits.augment import RandomAffine
from digits.backend import Batches, batches, steps_per_execution
from digits.data import preprocess
from digits.errors import IMAGE_SIZE
from digits.settings import EVAL_BATCH_SIZE, steps_per_epoch
from digits.signals import handling_stop_signals, quit_at_once


def make_trainer(model, augment=False, seed=None):
    """The model as trained: raw uint8 pixels in, scaled to [0, 1] (and augmented) in the compiled step.

    The 60,000 training images stay uint8 (47 MB, a quarter of float32) and need no input pipeline
    of their own. Only `model` is saved: it takes [0, 1] images, as --predict gives it.
    """
    return keras.Sequential([
        keras.Input((IMAGE_SIZE, IMAGE_SIZE, 1), dtype="uint8"),
        keras.layers.Rescaling(1 / 255, dtype="float32"),
        *([RandomAffine(seed, dtype="float32")] if augment else []),
        model,
    ], name="trainer")


def make_optimizer(lr_schedule, learning_rate, epochs, steps):
    """Adam, at a constant rate or along the cosine schedule whose peak `learning_rate` is.

    The cosine warms up over the first epoch (half the run if it has one epoch; `steps` is the
    steps in an epoch) from a thirtieth of the peak, then decays to zero: large early steps, fine
    late ones.
    """
    if lr_schedule == "cosine":
        warmup = min(steps, epochs * steps // 2)
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate / 30, decay_steps=epochs * steps - warmup, warmup_target=learning_rate,
            warmup_steps=warmup)
    return keras.optimizers.Adam(learning_rate)


def compile_trainer(trainer, optimizer, jit_compile="auto"):
    """Sparse categorical cross-entropy, the accuracy metric, several steps per call into the backend;
    XLA as Keras chooses (off on a CPU) unless `jit_compile` says (benchmarks/epoch_modes.py times it)."""
    trainer.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                    steps_per_execution=steps_per_execution(), jit_compile=jit_compile)


def settle_batch_norm(network, images, count=2048, batch_size=256):
    """Recompute the network's batch-normalisation statistics over the first `count` of `images`
    (uint8 training images), with the weights as they are now; a network without it is left as is.

    During training each layer normalises with the statistics of its batch, and keeps only a running
    average of them for inference: after a short run that average has not caught up with the weights
    (a 16-step run read every test digit as "1"). So each layer's mean and variance become the average
    over a few batches, computed in one pass in training mode (Wu and Johnson's "precise BN").
    """
    layers = [layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return
    images = preprocess(images[:count])
    momenta = [layer.momentum for layer in layers]
    try:
        for k, batch in enumerate(np.array_split(images, -(-len(images) // batch_size))):
            for layer in layers:  # the running average becomes the plain mean of the batches so far
                layer.momentum = k / (k + 1)
            network(batch, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum


class SettleBatchNorm(keras.callbacks.Callback):
    """Before each pass over the watched images, settle the network's batch normalisation on the
    training images (see settle_batch_norm), so that the curves show what the saved model would read."""

    def __init__(self, network, images):
        super().__init__()
        self.network, self.images = network, images

    def on_test_begin(self, logs=None):
        """Recompute the statistics with the weights the epoch ended with."""
        settle_batch_norm(self.network, self.images)


class GracefulStop(keras.callbacks.Callback):
    """Ctrl-C or SIGTERM during training: finish the step under way, stop, keep every fully trained epoch.

    `handle` is the signal handler (train() installs it for the length of the fit). A second signal
    quits at once: nothing has been written yet.
    """

    def __init__(self, steps):
        super().__init__()
        self.steps_per_epoch = steps
        self.interrupted = False
        self.epochs_completed = 0
        self.epoch_seconds = []
        self.steps_done = 0  # in the epoch under way
        self.first_steps_at = None  # time.perf_counter() when the first call of training steps returned

    def handle(self, signum, frame):
        """The first signal asks training to stop after this step; a second one quits."""
        if self.interrupted:  # the staging folder goes too (see digits.signals.quit_at_once)
            quit_at_once("\nInterrupted: stopped at once, nothing new was saved.")
        self.interrupted = True
        if self.model is not None:
            self.model.stop_training = True
        print("\nStopping after this step to save what was trained; press Ctrl-C again to quit "
              "without saving.", file=sys.stderr, flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        """Start the epoch's clock."""
        self._epoch_start = time.perf_counter()
        self.steps_done = 0

    def on_train_batch_end(self, batch, logs=None):
        """Count the steps (Keras names the last of several steps a call runs as if it had run them
        all: 479 for the last call of an epoch of 469); a signal that came before training began stops it now."""
        self.steps_done = min(batch + 1, self.steps_per_epoch)
        if self.first_steps_at is None:
            self.first_steps_at = time.perf_counter()
        if self.interrupted:
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        """An epoch counts once all its steps ran, even if the signal came during its test pass."""
        if self.steps_done >= self.steps_per_epoch:
            self.epochs_completed = epoch + 1
            self.epoch_seconds.append(round(time.perf_counter() - self._epoch_start, 3))


def watched_names(logs, watched):
    """Keras' `val_` numbers named for the set watched: `test_accuracy` where the test images are
    watched, `val_accuracy` where held-out ones are."""
    prefix = "test_" if watched == "test" else "val_"
    return {prefix + key[4:] if key.startswith("val_") else key: value for key, value in (logs or {}).items()}


class WatchedProgress(keras.callbacks.ProgbarLogger):
    """Keras' progress line, with the watched set's numbers named as the curves name them, and its
    count of steps never past the epoch's (Keras' last call of 16 steps in an epoch of 469 said 480/469)."""

    def __init__(self, watched):
        super().__init__()
        self.watched = watched

    def on_train_batch_end(self, batch, logs=None):
        """Move the bar to the step reached, at most the epoch's last."""
        super().on_train_batch_end(batch if self.target is None else min(batch, self.target - 1), logs)

    def on_epoch_end(self, epoch, logs=None):
        """Print the epoch's line; the logs themselves keep Keras' names."""
        super().on_epoch_end(epoch, watched_names(logs, self.watched))


class Training(NamedTuple):
    """What a fit left: per-epoch history of the completed epochs (with the learning rate and
    seconds), how many epochs completed, whether a signal stopped it, the time.perf_counter() at
    which the first training steps had run (None if none ran), and the steps trained of the epoch it
    stopped in (0 if it stopped between epochs) of the steps an epoch has."""

    history: dict
    epochs_completed: int
    interrupted: bool
    first_steps_at: float | None = None
    partial_steps: int = 0
    steps_per_epoch: int = 0

    def stopped_where(self):
        """How far a stopped fit got: 'in epoch 2 after 200 of 469 steps', or 'after epoch 1'."""
        if self.partial_steps:
            return f"in epoch {self.epochs_completed + 1} after {self.partial_steps} of {self.steps_per_epoch} steps"
        return f"after epoch {self.epochs_completed}" if self.epochs_completed else "before its first step"


def train(trainer, train_data, watch_data, epochs, batch_size, optimizer, callbacks=(), watched="validation",
          jit_compile="auto"):
    """Fit the trainer, watching `watch_data` after every epoch for the curves; nothing is chosen by it.
    Each data is (images, labels), batched by digits.backend.batches, or Batches as Model.fit reads them.

    `watched` ('validation' or 'test') names the watched images in the printed progress and in the
    history's keys: `test_accuracy` where the test images are watched, `val_accuracy` otherwise.

    Ctrl-C or SIGTERM stops it after the step under way (see GracefulStop); the handlers are the
    caller's again afterwards. Batch normalisation's statistics are recomputed for the final weights.
    """
    compile_trainer(trainer, optimizer, jit_compile)
    stop = GracefulStop(steps_per_epoch(len(train_data[0]), batch_size))
    # The rate the schedule had reached at each epoch's end, for the curves' record and TensorBoard.
    record_rate = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.update(
        learning_rate=float(keras.ops.convert_to_numpy(trainer.optimizer.learning_rate))))
    network = trainer.layers[-1]
    settle = SettleBatchNorm(network, train_data[0])
    with handling_stop_signals(stop.handle):
        data = train_data if isinstance(train_data, Batches) else batches(*train_data, batch_size, shuffle=True)
        watch = watch_data if isinstance(watch_data, Batches) or not watch_data else batches(
            *watch_data, EVAL_BATCH_SIZE, shuffle=False)
        history = trainer.fit(data.x, data.y, batch_size=data.batch_size, shuffle=data.shuffle, epochs=epochs,
                              validation_data=watch and watch.validation_data,
                              validation_batch_size=watch and watch.batch_size,
                              callbacks=[record_rate, settle, *callbacks, stop, WatchedProgress(watched)],
                              verbose=1 if sys.stdout.isatty() else 2)  # a bar, or one line an epoch in logs
    settle_batch_norm(network, train_data[0])  # for the weights training ended with, as saved
    completed = {key: [float(v) for v in values[: stop.epochs_completed]]
                 for key, values in watched_names(history.history, watched).items()}
    completed["epoch_seconds"] = stop.epoch_seconds
    partial = stop.steps_done if stop.steps_done < stop.steps_per_epoch else 0  # of an epoch cut short
    return Training(completed, stop.epochs_completed, stop.epochs_completed < epochs, stop.first_steps_at, partial,
                    stop.steps_per_epoch)
