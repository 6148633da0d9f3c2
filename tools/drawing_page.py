"""The drawing page, started and driven in a real browser: the tools' and the tests' one way to do it.

`start_server` starts the program's `--draw` in its own process and returns its address; `draw` draws a
drawing of data/drawn_digits.json with the mouse, stroke by stroke, in headless Chromium (Playwright);
`read_drawing` and `read_all` wait for the page's answer to each drawing and read `#prediction`.
`number_drawing` writes a number with those digits side by side (NUMBERS: the ten the tools and tests draw).
"""
import base64
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "handwritten_digit_classification.py"
DRAWINGS = json.loads((ROOT / "data" / "drawn_digits.json").read_text())


# The mouse moves through every third sampled point of a stroke, 7.5 of the frame's 100 units apart: a
# curve of radius 10 strays 0.7 units from its chords, and headless Chromium takes ~17 ms a move, however short.
MOVE_EVERY = 3
# Ten two- and three-digit numbers, written with the drawn digits above side by side (see number_drawing).
NUMBERS = ["42", "17", "305", "96", "281", "73", "640", "58", "119", "724"]


def number_drawing(number, nth=0, step=None, box=None):
    """`number` written with the digits of drawn_digits.json side by side, as one drawing (frame 100).

    The digits take turns at their three styles, `step` frame units apart (a digit is about 60 wide:
    70 leaves a gap of a tenth of its height; by default 64 to 80, by nth), each a little up or down
    from the line; `box` (left, top, side) puts the number on the canvas, by default in its middle, the
    digits a quarter to a third of its height.
    """
    step = step or 64 + 4 * (nth % 5)
    strokes, parts = [], []
    for place, digit in enumerate(number):
        drawn = [d for d in DRAWINGS["drawings"] if d["digit"] == int(digit)][(nth + place) % 3]
        lift = (-3, 2, -1, 3)[(nth + place) % 4]
        strokes += [[[x + place * step, y + lift] for x, y in stroke] for stroke in drawn["strokes"]]
        parts.append(len(drawn["strokes"]))
    width = (len(number) - 1) * step + 100
    high = (0.3, 0.24, 0.36)[nth % 3]  # the digits' height, a share of the canvas', as far as they fit
    side = min(0.92, high * width / 100)
    box = box or [round((1 - side) / 2, 3), round(0.5 - side * 50 / width, 3), round(side, 3)]
    return {"number": number, "box": list(box), "parts": parts,  # how many strokes each digit has, in order
            "strokes": [[[round(x * 100 / width, 2), round(y * 100 / width, 2)] for x, y in stroke]
                        for stroke in strokes]}


def find_chromium():
    """Debian's chromium, or None."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return found or ("/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)


def start_server(*args, timeout=120):
    """Start `--draw` with these arguments; return (process, url) once it prints its address.

    Every line it prints goes on to process.output (all of them once process.reader has ended);
    if it ends without an address, returns (process, None).
    """
    process = subprocess.Popen([sys.executable, str(SCRIPT), "--draw", *map(str, args)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    process.output, lines = [], queue.Queue()

    def read():
        for line in process.stdout:
            process.output.append(line)
            lines.put(line)
        lines.put(None)

    process.reader = threading.Thread(target=read, daemon=True)
    process.reader.start()
    while True:
        try:
            line = lines.get(timeout=timeout)
        except queue.Empty:
            process.kill()
            raise TimeoutError(f"the drawing page did not print its address within {timeout} s")
        if line is None:
            process.wait()
            return process, None
        found = re.search(r"(http://\S+?/) ", line)
        if found:
            return process, found.group(1)


def draw(page, drawing, every=MOVE_EVERY):
    """Draw one digit with the mouse: each stroke a press, moves through every `every`-th of its points
    (and its last), a release."""
    canvas = page.locator("#canvas").bounding_box()
    left, top, side = drawing["box"]
    frame = DRAWINGS["frame"]

    def at(point):
        return (canvas["x"] + (left + side * point[0] / frame) * canvas["width"],
                canvas["y"] + (top + side * point[1] / frame) * canvas["height"])

    for stroke in drawing["strokes"]:
        page.mouse.move(*at(stroke[0]))
        page.mouse.down()
        for point in [*stroke[every::every], *stroke[-1:][: (len(stroke) - 1) % every]]:
            page.mouse.move(*at(point))
        page.mouse.up()


def read_drawing(page, drawing):
    """Clear, draw, wait for the page's answer to this very drawing, return the digit (or number) it shows."""
    page.click("#clear")
    page.locator('#prediction[data-state="empty"]').wait_for()
    draw(page, drawing)
    page.locator('#prediction[data-state="ready"]').wait_for(timeout=30_000)
    return page.inner_text("#prediction").strip()


def read_all(url, drawings, chromium, photo=None, screenshot=None, screenshot_drawing=None, phone=False,
             browser=None):
    """Each drawing's (drawing, the digit the page shows), and what else the browser saw.

    With photo: also give the page that image file by its file picker and by dropping it on the
    canvas. With screenshot: save one of the page with screenshot_drawing drawn. With phone: on an
    upright phone's screen (390 x 844) instead of a desktop window. In a Playwright `browser` already
    running (the tests'), else in a Chromium of its own (`chromium`: its path).
    """
    if browser is None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium)
            try:
                return read_all(url, drawings, chromium, photo, screenshot, screenshot_drawing, phone, browser)
            finally:
                browser.close()
    facts = {"errors": [], "requests": []}
    screen = ({"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
               "has_touch": True} if phone else {"viewport": {"width": 1040, "height": 760}})
    page = browser.new_page(**screen)
    try:
        page.on("console", lambda m: m.type == "error" and facts["errors"].append(m.text))
        page.on("pageerror", lambda e: facts["errors"].append(str(e)))
        page.on("request", lambda r: facts["requests"].append(r.url))
        page.goto(url)
        results = [(drawing, read_drawing(page, drawing)) for drawing in drawings]
        facts["seen_pixels"] = page.evaluate("""() => {
            const data = document.getElementById("seen").getContext("2d").getImageData(0, 0, 28, 28).data;
            let lit = 0;
            for (let i = 0; i < data.length; i += 4) lit += data[i] > 60;
            return lit;
        }""")
        if photo:
            page.click("#clear")
            page.set_input_files("#photo", str(photo))
            page.locator('#prediction[data-state="ready"]').wait_for(timeout=30_000)
            facts["photo"] = page.inner_text("#prediction").strip()
            page.click("#clear")
            page.locator('#prediction[data-state="empty"]').wait_for()
            dropped = page.evaluate_handle("""([name, base64]) => {
                const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], name, { type: "image/png" }));
                return transfer;
            }""", [Path(photo).name, base64.b64encode(Path(photo).read_bytes()).decode()])
            page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
            page.locator('#prediction[data-state="ready"]').wait_for(timeout=30_000)
            facts["dropped"] = page.inner_text("#prediction").strip()
        if screenshot:
            read_drawing(page, screenshot_drawing or drawings[0])
            page.mouse.move(0, 0)
            page.wait_for_timeout(500)  # the bars' short animation ends
            page.screenshot(path=str(screenshot))
        return results, facts
    finally:
        page.context.close()
