"""How many bold, tightly cropped photos of MNIST test digits `--predict` reads right.

    python tools/bold_accuracy.py --model docs/run/model.keras

Test digits 5000 on (those the model reads right when clean) are thickened, cropped to the ink and
saved at 48 to 1,600 pixels, as dark ink on paper and chalk on a board, some unevenly lit, as the
tests make them (tools/digit_photos.py); the program's own --predict reads them in one call.
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "handwritten_digit_classification.py"
sys.path.insert(0, str(ROOT))

from tools.digit_photos import bold_photos, predictions  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the trained model to measure")
    parser.add_argument("--count", type=int, default=260, help="test digits to try")
    args = parser.parse_args()
    model = keras.models.load_model(args.model)
    with tempfile.TemporaryDirectory() as folder:
        paths = bold_photos(model, Path(folder), args.count, np.random.default_rng(14), first=5000)
        result = subprocess.run([sys.executable, str(SCRIPT), "--predict", *paths,
                                 "--model", str(args.model), "--output-dir", folder],
                                capture_output=True, text=True, check=False)
        read = predictions(result.stdout)
    right = sum(read.get(path) == label for path, label in paths.items())
    print(f"{right} of {len(paths)} bold, tight-cropped digits read right ({right / len(paths):.1%}) by {args.model}")


if __name__ == "__main__":
    main()
