"""Draw the digits of data/drawn_digits.json with the mouse in a real browser and count how many the model reads right.

    python tools/draw_accuracy.py --model outputs/model.keras [--screenshot docs/draw.png]
    python tools/draw_accuracy.py --numbers --model outputs/model.keras [--screenshot docs/draw-number.png]

With --numbers it draws ten two- and three-digit numbers made of those digits instead (NUMBERS) and
counts the numbers read whole and right.

It starts the program's drawing page (`--draw`) with the model, opens it in headless Chromium
(Playwright), draws each digit stroke by stroke with mouse moves on the canvas, waits for the page's
answer for that drawing and reads `#prediction` (tools/drawing_page.py, which the tests use too).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.drawing_page import DRAWINGS, NUMBERS, find_chromium, number_drawing, read_all, start_server  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="the trained model to measure")
    parser.add_argument("--screenshot", type=Path, help="also save a screenshot of the page with a digit drawn")
    parser.add_argument("--phone-screenshot", type=Path, help="and one on a phone's screen (390 x 844)")
    parser.add_argument("--numbers", action="store_true", help="draw the ten numbers of NUMBERS instead")
    args = parser.parse_args()
    chromium = find_chromium()
    if chromium is None:
        sys.exit("no chromium found: install it (apt-get install chromium)")
    process, url = start_server("--port", 0, "--model", args.model)
    if url is None:
        sys.exit("the drawing page did not start: " + process.stderr.read().strip())
    try:
        if args.numbers:
            drawings = [number_drawing(number, nth) for nth, number in enumerate(NUMBERS)]
            shown = drawings[-1]
        else:
            drawings = DRAWINGS["drawings"]
            shown = next(d for d in drawings if d["style"] == "with a crossbar")  # small and off-centre
        results, _ = read_all(url, drawings, chromium, screenshot=args.screenshot, screenshot_drawing=shown)
        if args.phone_screenshot:
            read_all(url, [], chromium, screenshot=args.phone_screenshot, screenshot_drawing=shown, phone=True)
    finally:
        process.terminate()
        process.wait()
    wrong = [(d, seen) for d, seen in results if seen != d.get("number", str(d.get("digit")))]
    for drawing, seen in wrong:
        print(f"wrong: {drawing.get('number', drawing.get('digit'))} ({drawing.get('style', 'a number')}) "
              f"read as {seen}")
    what = "drawn numbers" if args.numbers else "drawn digits"
    print(f"{len(results) - len(wrong)} of {len(results)} {what} read right "
          f"({(len(results) - len(wrong)) / len(results):.0%}) by {args.model}")


if __name__ == "__main__":
    main()
