"""--adapt DIR: the model fine-tuned on your own digits, measured before and after on digits it never
trained on; through the command line (main(argv) in this process, and the program as a user runs it)
on real image files, and the whole loop in a real browser: collect on the page, adapt, draw."""
import contextlib
import hashlib
import io
import json

import numpy as np
import pytest
from conftest import browser_page, bundled_mnist, make_unreadable, refusal, run_main
from PIL import Image, ImageFilter

import handwritten_digit_classification as program
from tools.drawing_page import DRAWINGS, draw, start_server

PER_DIGIT = 8  # 2 held out (a quarter), 6 adapted on


def write_own_digits(root, per_digit, first=0, skip=()):
    """`per_digit` MNIST test digits of each digit, drawn with a thicker pen (a style of one's own), as
    28x28 PNGs in root/<digit>/, each folder's first ones left out for the digits in `skip`."""
    _, _, x_test, y_test, _ = bundled_mnist()
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True, exist_ok=True)
        count = per_digit - skip.count(digit)
        for i in np.flatnonzero(y_test == digit)[first : first + count]:
            bold = Image.fromarray(x_test[i]).filter(ImageFilter.MaxFilter(3))
            bold.save(root / str(digit) / f"bold{i}.png")
    return root


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def adapted(trained, tmp_path_factory):
    """--adapt in this process on 8 bold digits a digit, from the quick model: (model, its SHA-256
    before, the adaptation's folder, exit status, what it printed)."""
    out, _, _ = trained
    model = out / "model.keras"
    before = sha256(model)
    mine = write_own_digits(tmp_path_factory.mktemp("own") / "mine", PER_DIGIT)
    report = tmp_path_factory.mktemp("adapt")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        status = program.main(["--adapt", str(mine), "--model", str(model), "--output-dir", str(report),
                               "--seed", "0"])
    return model, before, report / "adapt-mine", status, printed.getvalue()


def test_adapt_writes_a_new_model_and_keeps_the_original(adapted):
    model, before, folder, status, printed = adapted
    assert status == 0, printed
    assert sha256(model) == before  # the model it started from, byte for byte
    assert sorted(p.name for p in folder.iterdir()) == ["before_after.png", "metrics.json", "model.keras"]
    assert sha256(folder / "model.keras") != before
    with Image.open(folder / "before_after.png") as picture:
        assert picture.width > 1000 and picture.height > 300
    assert f"--draw --model {folder / 'model.keras'}" in printed
    assert f"--predict IMAGE --model {folder / 'model.keras'}" in printed


def test_before_and_after_are_measured_on_held_out_digits_only(adapted):
    _, _, folder, _, printed = adapted
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["images"] == 10 * PER_DIGIT
    assert (metrics["held_out"], metrics["adapted_on"]) == (20, 60)  # a quarter of each digit's 8: 2
    held = metrics["held_out_paths"]
    assert len(set(held)) == 20 and all(sum(f"/{d}/" in p for p in held) == 2 for d in range(10))
    for when in ("before", "after"):
        measured = metrics[when]
        confusion = np.array(measured["confusion_matrix"])
        assert confusion.sum() == 20 and (confusion.sum(axis=1) == 2).all()  # the held-out digits, nothing else
        assert measured["held_out_accuracy"] == pytest.approx(np.trace(confusion) / 20)
        assert 0.8 < measured["mnist_test_accuracy"] <= 1
        assert set(measured["per_digit"]) == {str(d) for d in range(10)}
    assert metrics["before"] != metrics["after"]  # the model changed
    assert metrics["after"]["mnist_test_accuracy"] > metrics["before"]["mnist_test_accuracy"] - 0.05
    assert (f"Held-out accuracy: {metrics['before']['held_out_accuracy']:.4f} -> "
            f"{metrics['after']['held_out_accuracy']:.4f}") in printed
    assert f"MNIST test accuracy: {metrics['before']['mnist_test_accuracy']:.4f} -> " in printed


def test_the_adapted_model_reads_with_evaluate(adapted, tmp_path):
    _, _, folder, _, _ = adapted
    mine = write_own_digits(tmp_path / "more", 2, first=20)
    result = run_main("--evaluate", mine, "--model", folder / "model.keras", "--output-dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "Images: 20 of your digits" in result.stdout


@pytest.mark.parametrize("case", ["too few", "empty", "unreadable folder", "unreadable images", "another shape"])
def test_bad_input_is_refused_in_one_line_and_nothing_is_written(trained, tmp_path, case):
    out, _, _ = trained
    model = out / "model.keras"
    mine = tmp_path / "mine"
    if case == "too few":
        write_own_digits(mine, 5, skip=[3, 3, 7])
        expected = "add 2 more 3s, 1 more 7"
    elif case == "empty":
        mine.mkdir()
        expected = "holds no labelled image"
    elif case == "unreadable folder":
        make_unreadable(mine, folder=True)
        expected = "permission denied"
    elif case == "unreadable images":
        for digit in range(10):
            (mine / str(digit)).mkdir(parents=True)
            for n in range(5):
                (mine / str(digit) / f"broken{n}.png").write_bytes(b"\x89PNG not really")
        expected = "(50 of its images could not be read or held no digit)"
    else:
        import keras

        write_own_digits(mine, 5)
        model = tmp_path / "colour.keras"
        keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(10)]).save(model)
        expected = "not 28x28 digits to 10 classes"
    message = refusal(run_main("--adapt", mine, "--model", model, "--output-dir", tmp_path / "out"))
    assert message.startswith("error: ") and expected in message, message
    assert not (tmp_path / "out").exists()


def test_adapt_takes_no_training_options_but_a_seed(tmp_path):
    message = refusal(run_main("--adapt", tmp_path, "--epochs", "3"))
    assert "--epochs is for training; --adapt uses a trained model" in message
    assert "different modes" in refusal(run_main("--adapt", tmp_path, "--evaluate", tmp_path))


def test_collect_in_a_browser_then_adapt_then_draw_with_the_new_model(trained, tmp_path):
    """The page counts what is saved and says how many more --adapt needs; one more 7 drawn and saved
    on the page makes enough; --adapt adapts on the folder; the page with the new model reads a drawing."""
    out, _, _ = trained
    mine = write_own_digits(tmp_path / "mine", 5, skip=[7])
    process, url = start_server("--port", 0, "--model", out / "model.keras", "--collect", mine)
    try:
        assert url, "".join(process.output)
        with browser_page(viewport={"width": 1040, "height": 760}) as page:
            page.goto(url)
            page.locator("#adapt-note", has_text="1 more 7.").wait_for(timeout=30_000)
            assert page.inner_text('#save-buttons button[data-digit="7"] .count') == "4"
            draw(page, next(d for d in DRAWINGS["drawings"] if d["digit"] == 7))
            page.locator('#prediction[data-state="ready"]').wait_for(timeout=30_000)
            page.click('#save-buttons button[data-digit="7"]')
            page.locator("#adapt-note.enough", has_text="Enough of every digit to adapt").wait_for(timeout=30_000)
    finally:
        process.terminate()
        process.wait(timeout=60)
    result = run_main("--adapt", mine, "--model", out / "model.keras", "--output-dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    adapted = tmp_path / "out" / "adapt-mine" / "model.keras"
    assert f"--draw --model {adapted}" in result.stdout
    process, url = start_server("--port", 0, "--model", adapted)
    try:
        assert url, "".join(process.output)
        with browser_page(viewport={"width": 1040, "height": 760}) as page:
            page.goto(url)
            draw(page, next(d for d in DRAWINGS["drawings"] if d["digit"] == 4))
            page.locator('#prediction[data-state="ready"]').wait_for(timeout=30_000)
            assert page.inner_text("#prediction").strip()[:1].isdigit()
    finally:
        process.terminate()
        process.wait(timeout=60)
