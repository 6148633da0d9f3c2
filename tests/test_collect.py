"""Collecting your own digits on the drawing page (--draw --collect DIR): a real server over real
HTTP, the page's Save buttons clicked in a real browser, and --evaluate DIR reading back what was saved."""
import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, browser_page, bundled_mnist, refusal, request_json, run_main, served
from PIL import Image

from digits import folders
from digits.collect import Collection
from tools.drawing_page import DRAWINGS, draw, number_drawing, start_server

SCREENSHOTS = os.environ.get("COLLECT_SCREENSHOTS")  # a folder: keep the page's screenshots there


def drawing_of(digit, nth=0):
    return [d for d in DRAWINGS["drawings"] if d["digit"] == digit][nth]


def visible_files(folder):
    """{relative path: digit} of what --evaluate would read in folder/0..9/."""
    return {f"{p.parent.name}/{p.name}": int(p.parent.name) for p in folder.glob("[0-9]/*") if p.is_file()
            and not p.name.startswith(".")}


def stop(process):
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


@pytest.fixture(scope="module")
def collecting(trained, tmp_path_factory):
    out, _, _ = trained
    folder = tmp_path_factory.mktemp("collected") / "mine"  # made by the server
    process, url = start_server("--port", 0, "--model", out / "model.keras", "--collect", folder)
    assert url, "".join(process.output) + process.stderr.read()
    yield url, folder, process
    stop(process)


@pytest.fixture(scope="module")
def plain(server):
    """The drawing page without --collect: conftest's session server."""
    _, url = server
    return url


def test_a_saved_drawing_lands_in_its_digit_folder_with_what_the_model_saw(collecting):
    url, folder, process = collecting
    assert any(f"Saving the drawings you label to {folder}/<digit>/" in line for line in process.output)
    counts = {str(d): 0 for d in range(10)}
    assert request_json(url, "GET", "/collection") == (200, {"collecting": True, "counts": counts, "adapt_minimum": 5})
    status, reply = request_json(url, "POST", "/save", {"strokes": drawing_of(3)["strokes"], "digit": 3})
    assert status == 200, reply
    assert reply["digit"] == 3 and reply["counts"]["3"] == 1 and sum(reply["counts"].values()) == 1
    saved = folder / reply["saved"]
    assert saved.parent == folder / "3" and saved.is_file()
    seen = folder / "3" / ".seen" / saved.name
    with Image.open(saved) as drawing, Image.open(seen) as small:
        assert drawing.mode == "L" and drawing.width > 100 and small.size == (28, 28)
        small = np.asarray(small)
    umask = os.umask(0o022)
    os.umask(umask)
    assert saved.stat().st_mode & 0o777 == seen.stat().st_mode & 0o777 == 0o666 & ~umask  # as any file saved
    # --evaluate reads the drawing back into the very 28x28 image the model saw on the page
    assert np.array_equal(folders.read_digit(saved), small)
    _, predicted = request_json(url, "POST", "/predict", {"strokes": drawing_of(3)["strokes"]})
    assert np.array_equal(np.array(predicted["image"]), small)
    assert request_json(url, "GET", "/collection") == (200, {"collecting": True, "counts": reply["counts"],
                                                        "adapt_minimum": 5})


def test_names_never_collide_and_no_half_written_file_is_left(collecting):
    url, folder, _ = collecting
    before = visible_files(folder)
    replies = []

    def save():
        replies.append(request_json(url, "POST", "/save", {"strokes": drawing_of(5)["strokes"], "digit": 5}))

    threads = [threading.Thread(target=save) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status, _ in replies] == [200] * 12
    names = {reply["saved"] for _, reply in replies}
    assert len(names) == 12 and set(visible_files(folder)) == set(before) | names
    assert max(reply["counts"]["5"] for _, reply in replies) == 12
    assert not [p for p in folder.rglob(".saving-*")]  # temporary files are gone
    assert len(list((folder / "5" / ".seen").iterdir())) == 12


@pytest.mark.parametrize("payload", [
    {"strokes": [[[0, 0], [0, 50]]], "digit": "3"},
    {"strokes": [[[0, 0], [0, 50]]], "digit": 10},
    {"strokes": [[[0, 0], [0, 50]]], "digit": -1},
    {"strokes": [[[0, 0], [0, 50]]], "digit": True},
    {"strokes": [[[0, 0], [0, 50]]], "digit": 3.0},
    {"strokes": [[[0, 0], [0, 50]]], "digit": "../../escape"},
    {"strokes": [[[0, 0], [0, 50]]], "digit": None},
    {"strokes": [[[0, 0], [0, 50]]]},
    {"digit": 4},
    {"strokes": [[[0, 0], [0, 50]]], "image": "AAAA", "digit": 4},
    {"strokes": "no", "digit": 4},
    {"image": "bm90IGFuIGltYWdl", "digit": 4},
    [4],
])
def test_bad_saves_are_refused_and_nothing_is_written(collecting, payload):
    url, folder, _ = collecting
    before = sorted(p.relative_to(folder) for p in folder.parent.rglob("*"))
    status, reply = request_json(url, "POST", "/save", payload)
    assert status == 400 and isinstance(reply["error"], str) and reply["error"], reply
    assert sorted(p.relative_to(folder) for p in folder.parent.rglob("*")) == before
    assert request_json(url, "GET", "/collection")[0] == 200  # still serving


def test_without_collect_there_is_nothing_to_save(plain):
    assert request_json(plain, "GET", "/collection") == (200, {"collecting": False})
    assert request_json(plain, "POST", "/save", {"strokes": drawing_of(3)["strokes"], "digit": 3})[0] == 404


def test_collect_into_a_file_is_refused(trained, tmp_path):
    out, _, _ = trained
    (tmp_path / "file").write_text("x")
    message = refusal(run_main("--draw", "--port", 0, "--model", out / "model.keras", "--collect", tmp_path / "file"))
    assert message == f"error: --collect: {tmp_path / 'file'} is a file, not a folder: choose another path"


def test_save_buttons_in_a_browser_then_evaluate_reads_them_back(collecting, plain, trained, tmp_path):
    url, folder, _ = collecting
    shots = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path
    errors, saved = [], {}
    with browser_page(viewport={"width": 1040, "height": 760}) as page:
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        with page.expect_response(lambda r: r.url.endswith("/collection")) as asked:
            page.goto(plain)
        assert asked.value.json() == {"collecting": False}
        page.wait_for_timeout(300)  # the page's answer to it has run
        assert page.locator("#collect").is_hidden() and page.locator("#save-buttons button").count() == 0
        page.goto(url)
        page.locator('#save-buttons button[data-digit="9"]').wait_for()
        counts = request_json(url, "GET", "/collection")[1]["counts"]
        assert page.inner_text('#save-buttons button[data-digit="5"] .count') == str(counts["5"])
        for n, (digit, by_key) in enumerate([(7, False), (2, False), (0, True), (7, True)]):
            draw(page, drawing_of(digit, n % 2))
            page.locator('#prediction[data-state="ready"]').wait_for(timeout=30_000)
            if by_key:
                page.keyboard.press(str(digit))
            else:
                page.click(f'#save-buttons button[data-digit="{digit}"]')
            page.locator("#saved", has_text=f"Saved as {digit} (").wait_for(timeout=30_000)
            name = page.inner_text("#saved").split("(")[1].split(")")[0]
            saved[name] = digit
            page.locator('#prediction[data-state="empty"]').wait_for()  # cleared for the next digit
        assert page.inner_text('#save-buttons button[data-digit="7"] .count') == str(counts["7"] + 2)
        last = name  # the last save, undone: its file goes, the count goes back, nothing is left to undo
        page.click("#undo")
        page.locator("#saved", has_text=f"Removed {last}.").wait_for(timeout=30_000)
        assert not (folder / last).exists() and not (folder / "7" / ".seen" / last.split("/")[1]).exists()
        assert page.inner_text('#save-buttons button[data-digit="7"] .count') == str(counts["7"] + 1)
        assert page.locator("#undo").is_hidden()
        del saved[last]
        page.keyboard.press("4")  # nothing drawn: nothing saved, and the page says why
        page.locator("#saved.error", has_text="Draw a digit first").wait_for()
        draw(page, drawing_of(4))
        page.locator('#prediction[data-state="ready"]').wait_for(timeout=30_000)
        page.mouse.move(0, 0)
        page.wait_for_timeout(400)
        page.screenshot(path=str(shots / "collect.png"))
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(300)
        page.screenshot(path=str(shots / "collect-phone.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px phone"
    assert errors == []
    files = visible_files(folder)
    assert all(files[name] == digit for name, digit in saved.items()) and len(saved) == 3
    # --evaluate reads every saved drawing back under the digit it was saved as, each once
    out, _, _ = trained
    report = tmp_path / "report"
    result = run_main("--evaluate", folder, "--model", out / "model.keras", "--output-dir", report)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((report / f"evaluate-{folder.name}" / "metrics.json").read_text())
    read_back = {f"{p['path'].split(os.sep)[-2]}/{p['path'].split(os.sep)[-1]}": p["label"]
                 for p in metrics["predictions"]}
    assert read_back == files and metrics["images"] == len(files) and metrics["skipped"] == []
    assert f"Images: {len(files)} of your digits" in result.stdout


def test_a_number_is_not_saved_as_one_digit(collecting):
    """A label names one digit: a drawing of several is refused, saying why, and nothing is written;
    the page shows the refusal where it shows what was saved."""
    url, folder, _ = collecting
    before = sorted(p.relative_to(folder) for p in folder.parent.rglob("*"))
    status, reply = request_json(url, "POST", "/save", {"strokes": number_drawing("42")["strokes"], "digit": 4})
    assert (status, reply) == (400, {"error": "the drawing holds 2 digits, nothing saved: save one digit at a "
                                              "time (Clear, then draw one)"})
    x_test = bundled_mnist().x_test  # a photo of a number is told by the number reader, as /predict tells it
    row = Image.fromarray(255 - np.pad(np.concatenate([x_test[0], x_test[1], x_test[2]], axis=1), 20))
    photo = io.BytesIO()
    row.resize((row.width * 4, row.height * 4)).save(photo, "PNG")
    image = base64.b64encode(photo.getvalue()).decode()
    status, reply = request_json(url, "POST", "/save", {"image": image, "digit": 7})
    assert (status, reply) == (400, {"error": "the photo holds 3 digits, nothing saved: save one digit at a "
                                              "time (Clear, then draw one)"})
    assert sorted(p.relative_to(folder) for p in folder.parent.rglob("*")) == before
    with browser_page(viewport={"width": 1040, "height": 760}) as page:
        page.goto(url)
        page.locator('#save-buttons button[data-digit="9"]').wait_for()
        draw(page, number_drawing("305", 2))
        page.locator('#prediction[data-state="ready"]').wait_for(timeout=30_000)
        page.keyboard.press("3")
        page.locator("#saved.error", has_text="the drawing holds 3 digits, nothing saved").wait_for()
        assert page.locator("#piece-list li").count() == 3  # the drawing stays, to clear or finish
    assert sorted(p.relative_to(folder) for p in folder.parent.rglob("*")) == before


def test_a_save_that_fails_leaves_no_copy_of_what_the_model_saw(tmp_path):
    """The drawing cannot be written (a file-size limit, as a full disk would): its 28x28 copy in .seen/,
    written first, goes too, and the save fails; nothing half-written is left."""
    script = ("import resource, signal, sys, numpy as np; from digits.collect import Collection; "
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000)); "
              "c = Collection(sys.argv[1]); rng = np.random.default_rng(0)\n"
              "try:\n    c.save(rng.random((200, 200)), np.zeros((28, 28)), 5)\n"
              "except OSError as e:\n    print('failed', e.errno)")
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path / "mine")], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.stdout.startswith("failed"), result.stdout + result.stderr
    assert [p for p in (tmp_path / "mine").rglob("*") if p.is_file()] == []


def test_a_collection_full_in_bytes_refuses_more_and_says_so(tmp_path):
    """The collection's files, all digits and .seen/ together, are bounded in bytes too: past the bound a
    save is answered 409 with a message the page shows, and nothing is written."""
    folder = tmp_path / "mine"
    with served(Collection(folder, max_bytes=1)) as url:  # one byte: the first save fills it
        status, reply = request_json(url, "POST", "/save", {"strokes": drawing_of(3)["strokes"], "digit": 3})
        assert status == 200, reply
        before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
        status, reply = request_json(url, "POST", "/save", {"strokes": drawing_of(5)["strokes"], "digit": 5})
        assert status == 409 and reply["error"].startswith(f"{folder} already holds ")
        assert "MiB of drawings, as much as one page saves (0.0 MiB): collect into another folder" in reply["error"]
        assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before


def test_undo_removes_only_the_file_this_server_saved_while_it_is_still_there(tmp_path):
    folder = tmp_path / "mine"
    with served(Collection(folder)) as url:
        first = request_json(url, "POST", "/save", {"strokes": drawing_of(3)["strokes"], "digit": 3})[1]["saved"]
        status, reply = request_json(url, "POST", "/save", {"strokes": drawing_of(3, 1)["strokes"], "digit": 3})
        assert status == 200 and reply["counts"]["3"] == 2
        last = reply["saved"]
        assert request_json(url, "POST", "/undo", {"saved": last}) == (
            200, {"removed": last, "counts": {**{str(d): 0 for d in range(10)}, "3": 1}})
        assert not (folder / last).exists() and not (folder / "3" / ".seen" / last.split("/")[1]).exists()
        assert (folder / first).is_file() and (folder / "3" / ".seen" / first.split("/")[1]).is_file()
        status, reply = request_json(url, "POST", "/undo", {"saved": last})  # undone once: nothing more to undo
        assert status == 404 and "is not a drawing this page saved: nothing removed" in reply["error"]
        (folder / "3" / "mine.png").write_bytes(b"the user's own file")  # not the server's to remove
        for name in ["3/mine.png", "../mine/3/mine.png", first.replace("/", "/../3/")]:
            status, reply = request_json(url, "POST", "/undo", {"saved": name})
            assert status == 404, reply
        assert (folder / "3" / "mine.png").read_bytes() == b"the user's own file"
        (folder / first).unlink()  # replaced by another file of that name: not the drawing saved
        (folder / first).write_bytes(b"another file")
        status, reply = request_json(url, "POST", "/undo", {"saved": first})
        assert (status, reply) == (410, {"error": f"{first} is no longer there as it was saved: nothing removed"})
        assert (folder / first).read_bytes() == b"another file"
        for payload in [{"saved": 3}, {"saved": first, "digit": 3}, {}, [first]]:
            status, reply = request_json(url, "POST", "/undo", payload)
            assert status == 400 and reply["error"], reply
    with served(None) as url:  # without --collect: nothing to undo
        assert request_json(url, "POST", "/undo", {"saved": first})[0] == 404
