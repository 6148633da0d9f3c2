"""The original notebook's steps, unchanged in substance: the baseline the benchmark measures against.

float64 inputs from X / 255.0, model.fit(X, y, epochs=10) with Keras' defaults (batch 32, float32,
no input pipeline), evaluate, predict, tf.math.confusion_matrix, a seaborn heatmap. The only
additions are a result file for the benchmark and --limit-* for its quick mode. The notebook loaded
the data with keras.datasets.mnist.load_data(), which needs internet; the bundled copy holds the
same arrays.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import keras
import matplotlib
import seaborn as sns
import tensorflow as tf  # the notebook imported it for tf.math.confusion_matrix

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from digits.data import load_mnist  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=10)
parser.add_argument("--limit-train", type=int, default=None)
parser.add_argument("--limit-test", type=int, default=None)
parser.add_argument("--output-dir", type=Path, required=True)
args = parser.parse_args()
started = time.perf_counter()

X_train, y_train, X_test, y_test, _ = load_mnist("bundled")
X_train, y_train = X_train[: args.limit_train], y_train[: args.limit_train]
X_test, y_test = X_test[: args.limit_test], y_test[: args.limit_test]
X_train = X_train.reshape(len(X_train), 28, 28, 1) / 255.0
X_test = X_test.reshape(len(X_test), 28, 28, 1) / 255.0

model = keras.Sequential([
    keras.layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
    keras.layers.MaxPooling2D((2, 2)),
    keras.layers.Conv2D(64, (3, 3), activation="relu"),
    keras.layers.MaxPooling2D((2, 2)),
    keras.layers.Flatten(),
    keras.layers.Dense(100, activation="relu"),
    keras.layers.Dense(10, activation="softmax"),
])
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])

train_started = time.perf_counter()
model.fit(X_train, y_train, epochs=args.epochs)
train_seconds = time.perf_counter() - train_started

test_loss, test_accuracy = model.evaluate(X_test, y_test)
y_predicted = model.predict(X_test)
y_predicted_labels = [y.argmax() for y in y_predicted]
cm = tf.math.confusion_matrix(labels=y_test, predictions=y_predicted_labels)

args.output_dir.mkdir(parents=True, exist_ok=True)
plt.figure(figsize=(10, 7))
sns.heatmap(cm, annot=True, fmt="d")
plt.xlabel("Predicted")
plt.ylabel("Truth")
plt.savefig(args.output_dir / "confusion_matrix.png")
print(f"Test accuracy: {test_accuracy:.4f}")
(args.output_dir / "metrics.json").write_text(json.dumps({
    "test_accuracy": float(test_accuracy), "test_loss": float(test_loss), "train_seconds": train_seconds,
    "epochs_completed": args.epochs, "duration_seconds": time.perf_counter() - started,
}))
