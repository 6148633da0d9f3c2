"""--adapt on handwriting that is not MNIST's: digits rendered from Debian's handwriting fonts.

    apt-get install fonts-kristi fonts-dancingscript fonts-femkeklaver fonts-humor-sans fonts-breip
    python benchmarks/adapt_fonts.py --model outputs/model.keras [--fonts kristi dancing] [--seeds 0 1 2]

For each font and seed it renders a set of that font's digits as photos would show them (dark ink on
light paper, each digit turned, slanted, thickened or thinned, scaled and moved a little at random,
with grain), 27 a digit in DIR/0..9/ (--adapt holds a quarter out: it adapts on 20 a digit and
measures on 7) and EXTRA a digit more in a folder of their own, never adapted on. It runs the program
in this process (one Keras start for all): --adapt DIR with the model, then --evaluate on the extra
digits with the model and with the adapted one. It prints one line a run and a summary, and writes
every run's numbers to OUT/results.json.
"""
import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FONTS = {  # Debian packages: fonts-kristi, fonts-dancingscript, fonts-femkeklaver, fonts-humor-sans, fonts-breip
    "kristi": "/usr/share/fonts/truetype/kristi/Kristi.ttf",
    "dancing": "/usr/share/fonts/opentype/dancingscript/DancingScript-Regular.otf",
    "femkeklaver": "/usr/share/fonts/truetype/femkeklaver/femkeklaver.ttf",
    "humor": "/usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf",
    "breip": "/usr/share/fonts/truetype/breip/Breip.ttf",
    "dkg": "/usr/share/fonts/truetype/fifthhorseman/dkg.ttf",
}


def render(font_path, digit, rng):
    """One digit in this font as a photo: dark ink on light paper, about 60 to 120 px high."""
    size = int(rng.integers(60, 120))
    font = ImageFont.truetype(font_path, size)
    left, top, right, bottom = font.getbbox(str(digit))
    margin = size // 2
    canvas = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 0)
    ImageDraw.Draw(canvas).text((margin - left, margin - top), str(digit), fill=255, font=font)
    shear = rng.uniform(-0.25, 0.25)  # slant
    canvas = canvas.transform(canvas.size, Image.AFFINE, (1, shear, -shear * canvas.height / 2, 0, 1, 0),
                              Image.BILINEAR)
    canvas = canvas.rotate(rng.uniform(-10, 10), Image.BILINEAR, expand=True)
    pen = int(rng.choice([0, 0, 3, 5]))  # the same pen, or a thicker one
    if pen:
        canvas = canvas.filter(ImageFilter.MaxFilter(pen))
    ink = np.asarray(canvas, np.float32) / 255
    paper = rng.uniform(0.8, 0.95) + rng.normal(0, 0.02, ink.shape)
    gray = np.clip(paper * (1 - rng.uniform(0.75, 0.9) * ink), 0, 1)
    return Image.fromarray(np.uint8(255 * gray))


def write_set(folder, font_path, per_digit, rng):
    """`per_digit` photos of each digit in folder/<digit>/."""
    for digit in range(10):
        (folder / str(digit)).mkdir(parents=True, exist_ok=True)
        for n in range(per_digit):
            render(font_path, digit, rng).save(folder / str(digit) / f"{digit}-{n:03d}.png")


def quietly(argv):
    """Run the program's main(argv) in this process; (exit status, what it printed)."""
    import handwritten_digit_classification as program

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = program.main(argv)
    return status, printed.getvalue()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--fonts", nargs="+", default=["kristi", "femkeklaver"], choices=sorted(FONTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--extra", type=int, default=30, help="extra digits a class, never adapted on")
    parser.add_argument("--out", type=Path, default=Path("runs/adapt-fonts"))
    args = parser.parse_args()
    results = []
    for font in args.fonts:
        for seed in args.seeds:
            rng = np.random.default_rng(1000 * seed + sorted(FONTS).index(font))
            where = args.out / f"{font}-{seed}"
            mine, extra = where / "mine", where / "extra"
            write_set(mine, FONTS[font], 27, rng)
            write_set(extra, FONTS[font], args.extra, rng)
            started = time.perf_counter()
            status, printed = quietly(["--adapt", str(mine), "--model", str(args.model), "--seed", str(seed),
                                       "--output-dir", str(where)])
            seconds = time.perf_counter() - started
            assert status == 0, printed
            adapted = json.loads((where / "adapt-mine" / "metrics.json").read_text())
            extra_accuracy = []
            for model, name in ((args.model, "before"), (where / "adapt-mine" / "model.keras", "after")):
                status, printed = quietly(["--evaluate", str(extra), "--model", str(model),
                                           "--output-dir", str(where / name)])
                assert status == 0, printed
                extra_accuracy.append(json.loads((where / name / "evaluate-extra" / "metrics.json").read_text())
                                      ["test_accuracy"])
            run = {"font": font, "seed": seed, "held_out": [adapted["before"]["held_out_accuracy"],
                                                            adapted["after"]["held_out_accuracy"]],
                   "extra": extra_accuracy, "mnist": [adapted["before"]["mnist_test_accuracy"],
                                                      adapted["after"]["mnist_test_accuracy"]],
                   "adapt_seconds": adapted["adapt_seconds"], "run_seconds": round(seconds, 1)}
            results.append(run)
            print(f"{font:12} seed {seed}: held out (70) {run['held_out'][0]:.1%} -> {run['held_out'][1]:.1%}, "
                  f"extra ({10 * args.extra}) {extra_accuracy[0]:.1%} -> {extra_accuracy[1]:.1%}, MNIST test "
                  f"{run['mnist'][0]:.2%} -> {run['mnist'][1]:.2%}; fine-tuning {run['adapt_seconds']:.1f} s, "
                  f"--adapt {seconds:.1f} s", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    for font in args.fonts:
        mine = [r for r in results if r["font"] == font]
        mean = {key: np.mean([r[key] for r in mine], axis=0) for key in ("held_out", "extra", "mnist")}
        print(f"{font:12} mean of {len(mine)}: held out {mean['held_out'][0]:.1%} -> {mean['held_out'][1]:.1%}, "
              f"extra {mean['extra'][0]:.1%} -> {mean['extra'][1]:.1%}, MNIST test {mean['mnist'][0]:.2%} -> "
              f"{mean['mnist'][1]:.2%}")


if __name__ == "__main__":
    main()
