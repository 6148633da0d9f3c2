"""Your own labelled digits: --evaluate DIR (DIR/0/ ... DIR/9/) and --data DIR (DIR/train/0..9/,
DIR/test/0..9/), through the command line on real image files."""
import json
import os

import numpy as np
import pytest
from conftest import bundled_mnist, make_unreadable, refusal, run_main
from PIL import Image

from digits import folders
from digits.data import load_mnist
from digits.evaluation import confusion_matrix
from tools.digit_photos import KINDS, phone_photo, predictions


def write_photos(root, indices, rng, label_of=None):
    """Phone photos of these MNIST test digits in root/<digit>/; {path: label}."""
    _, _, x_test, y_test, _ = bundled_mnist()
    written = {}
    for n, i in enumerate(indices):
        label = int(y_test[i]) if label_of is None else label_of(i)
        image, extension = phone_photo(x_test[i], KINDS[n % len(KINDS)], rng)
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        path = root / str(label) / f"test{i}-{KINDS[n % len(KINDS)]}.{extension}"
        image.save(path)
        written[str(path)] = label
    return written


def write_mnist_pngs(root, images, labels, prefix):
    """Each 28x28 MNIST digit as it is, a grayscale PNG in root/<label>/."""
    for n, (image, label) in enumerate(zip(images, labels)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(root / str(label) / f"{prefix}{n}.png")


@pytest.fixture(scope="module")
def evaluated(trained, tmp_path_factory):
    """--evaluate on photos of 40 MNIST test digits, one of them filed under a wrong digit, a blank
    photo and a broken file; then --predict on the same files, one by one."""
    out, _, _ = trained
    root = tmp_path_factory.mktemp("mine")
    labels = write_photos(root, range(40), np.random.default_rng(0))
    # a seven filed as a one: a mistake whatever the model, so the matrix has an off-diagonal cell
    _, _, x_test, y_test, _ = bundled_mnist()
    seven = int(np.flatnonzero(y_test == 7)[10])
    labels.update(write_photos(root, [seven], np.random.default_rng(1), label_of=lambda i: 1))
    Image.new("L", (300, 200), 235).save(root / "3" / "blank.png")
    (root / "5" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "5" / ".hidden.png").write_bytes(b"skipped: hidden")
    report = tmp_path_factory.mktemp("report")
    result = run_main("--evaluate", root, "--model", out / "model.keras", "--output-dir", report)
    report = report / f"evaluate-{root.name}"  # beside a training run's outputs, not over them
    one_by_one = run_main("--predict", *labels, "--model", out / "model.keras", "--output-dir",
                          tmp_path_factory.mktemp("predict"))
    return root, labels, report, result, one_by_one


def test_evaluate_reproduces_predicting_the_same_files_one_by_one(evaluated):
    root, labels, report, result, one_by_one = evaluated
    assert result.returncode == 0, result.stderr
    assert one_by_one.returncode == 0, one_by_one.stderr
    read_alone = predictions(one_by_one.stdout)
    assert sorted(read_alone) == sorted(labels)
    metrics = json.loads((report / "metrics.json").read_text())
    assert {p["path"]: p["predicted"] for p in metrics["predictions"]} == read_alone
    assert {p["path"]: p["label"] for p in metrics["predictions"]} == labels
    truth, seen = np.array(list(labels.values())), np.array([read_alone[path] for path in labels])
    expected = confusion_matrix(truth, seen)
    assert metrics["confusion_matrix"] == expected.tolist()
    assert expected[1].sum() >= 1 and expected[1, 1] < expected[1].sum()  # the misfiled seven
    accuracy = float((truth == seen).mean())
    assert metrics["test_accuracy"] == pytest.approx(accuracy) and metrics["images"] == len(labels) == 41
    assert f"Test accuracy: {accuracy:.4f}" in result.stdout
    assert "digit  precision  recall" in result.stdout and "Most confused" in result.stdout
    assert metrics["per_class"]["1"]["support"] == int(expected[1].sum())


def test_blank_and_broken_images_are_listed_counted_and_left_out(evaluated):
    root, _, report, result, _ = evaluated
    errors = result.stderr.strip().splitlines()
    assert sorted(errors) == sorted([f"{root / '3' / 'blank.png'}: error: blank image: no digit found",
                                     f"{root / '5' / 'broken.jpg'}: error: not an image this program can read "
                                     f"(UnidentifiedImageError)"]), result.stderr
    assert ("Left out: 2 images that could not be read or held no digit (each named on stderr, with its error)"
            in result.stdout.splitlines())  # not "listed above": the list is on stderr, this line on stdout
    metrics = json.loads((report / "metrics.json").read_text())
    assert sorted(s["path"] for s in metrics["skipped"]) == [str(root / "3" / "blank.png"),
                                                             str(root / "5" / "broken.jpg")]


def test_evaluate_writes_its_pictures_like_a_run(evaluated):
    _, _, report, result, _ = evaluated
    assert sorted(p.name for p in report.iterdir()) == ["confusion_matrix.png", "metrics.json", "misclassified.png"]
    for name in ("confusion_matrix.png", "misclassified.png"):
        with Image.open(report / name) as image:
            assert image.format == "PNG" and image.width > 400
    assert f"Saved: {report / 'confusion_matrix.png'}" in result.stdout


@pytest.fixture(scope="module")
def odd_folder(trained, tmp_path_factory):
    """--evaluate over ten MNIST digits and files that are not what they seem: a named pipe (FIFO),
    which a reader would wait on for ever; an image it may not read (None where this user reads any);
    a broken file whose name holds a newline and an escape sequence. Returns (the folder, the report
    folder, the result, the unreadable image)."""
    out, _, _ = trained
    root = tmp_path_factory.mktemp("odd")
    _, _, x_test, y_test, _ = bundled_mnist()
    write_mnist_pngs(root, x_test[:10], y_test[:10], "d")
    os.mkfifo(root / "7" / "pipe.png")
    (root / "5" / "bad\x1b[31m\nname.png").write_bytes(b"not a picture")
    try:
        locked = make_unreadable(root / "2" / "locked.png")
    except pytest.skip.Exception:
        locked = None
    report = tmp_path_factory.mktemp("report")
    result = run_main("--evaluate", root, "--model", out / "model.keras", "--output-dir", report)
    return root, report / f"evaluate-{root.name}", result, locked


def test_a_fifo_is_left_out_unopened_with_its_reason(odd_folder):
    root, report, result, _ = odd_folder
    assert result.returncode == 0, result.stderr
    assert (f"{root / '7' / 'pipe.png'}: error: a named pipe (FIFO), not an image: only regular files are read, "
            "save what it holds to a file and give that") in result.stderr.splitlines()
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["images"] == 10 and str(root / "7" / "pipe.png") in [s["path"] for s in metrics["skipped"]]


def test_names_in_the_list_of_those_left_out_are_escaped(odd_folder):
    root, _, result, _ = odd_folder
    assert (f"{root}/5/bad\\x1b[31m\\nname.png: error: not an image this program can read (UnidentifiedImageError)"
            in result.stderr.splitlines())
    assert "\x1b" not in result.stdout + result.stderr


def test_an_unreadable_image_is_left_out_as_permission_denied(odd_folder):
    _, _, result, locked = odd_folder
    if locked is None:
        pytest.skip("no file here is unreadable to this user (root reads through permission bits)")
    assert f"{locked}: error: permission denied: make it readable (chmod +r)" in result.stderr.splitlines()


def test_a_28x28_digit_reaches_the_network_unchanged_as_with_predict(tmp_path):
    """The folder reader and --predict's steps agree: MNIST's own digits pass as they are."""
    _, _, x_test, y_test, _ = bundled_mnist()
    write_mnist_pngs(tmp_path, x_test[:20], y_test[:20], "d")
    read = folders.read_labelled(tmp_path)
    order = [int(p.stem[1:]) for p in read.paths]
    assert np.array_equal(read.images, x_test[order]) and np.array_equal(read.labels, y_test[order])


def test_data_folders_train_a_model(tmp_path):
    """--data DIR with train/0..9/ and test/0..9/ of PNGs: the same pixels as the IDX files, mixed, and it trains."""
    x_train, y_train, x_test, y_test, _ = bundled_mnist()
    write_mnist_pngs(tmp_path / "set" / "train", x_train[:600], y_train[:600], "train")
    write_mnist_pngs(tmp_path / "set" / "test", x_test[:200], y_test[:200], "test")
    loaded = load_mnist(str(tmp_path / "set"))
    for got, wanted in ((loaded.x_train, x_train[:600]), (loaded.x_test, x_test[:200])):
        assert sorted(image.tobytes() for image in got) == sorted(image.tobytes() for image in wanted)
    assert len(set(loaded.y_train[:60].tolist())) == 10  # shuffled: the first 60 are not all zeros
    pairs = {image.tobytes(): label for image, label in zip(x_train[:600], y_train[:600])}
    assert all(pairs[image.tobytes()] == label for image, label in zip(loaded.x_train, loaded.y_train))
    out = tmp_path / "out"
    result = run_main("--data", tmp_path / "set", "--epochs", "1", "--batch-size", "32", "--output-dir", out)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["train_images"] == 600 and metrics["data"]["test_images"] == 200
    assert metrics["test_accuracy"] > 0.5  # 600 digits, one epoch: far above chance (0.1)


def test_a_folder_of_too_many_files_is_refused_before_reading(tmp_path, monkeypatch):
    """MAX_FILES is 200,000: lowered here so that the test need not write that many."""
    for n in range(6):
        (tmp_path / str(n % 2)).mkdir(exist_ok=True)
        (tmp_path / str(n % 2) / f"{n}.png").write_bytes(b"never decoded")
    monkeypatch.setattr(folders, "MAX_FILES", 5)
    with pytest.raises(folders.InputError, match="more than 5 images"):
        folders.list_labelled(tmp_path)


def evaluate_refusal(root, tmp_path, *extra):
    return refusal(run_main("--evaluate", root, "--model", tmp_path / "none.keras", "--output-dir",
                            tmp_path / "out", *extra))


def test_evaluate_refuses_a_bad_folder_in_one_line(tmp_path):
    """Before Keras loads: a missing folder, a subfolder not named after a digit, no image at all."""
    assert "--evaluate" in evaluate_refusal(tmp_path / "nowhere", tmp_path)
    assert "does not exist" in evaluate_refusal(tmp_path / "nowhere", tmp_path)
    (tmp_path / "empty").mkdir()
    assert "holds no labelled image" in evaluate_refusal(tmp_path / "empty", tmp_path)
    (tmp_path / "mixed" / "3").mkdir(parents=True)
    (tmp_path / "mixed" / "3" / "a.png").write_bytes(b"x")
    (tmp_path / "mixed" / "threes").mkdir()
    message = evaluate_refusal(tmp_path / "mixed", tmp_path)
    assert "'threes' is not a digit" in message and message.startswith("error: --evaluate: ")
    (tmp_path / "set" / "train" / "3").mkdir(parents=True)
    (tmp_path / "set" / "test").mkdir()
    assert "'test' is not a digit" in evaluate_refusal(tmp_path / "set", tmp_path)
    assert f"give {tmp_path / 'set' / 'test'}" in evaluate_refusal(tmp_path / "set", tmp_path)
    (tmp_path / "file.png").write_bytes(b"x")
    assert "is a file, not a folder" in evaluate_refusal(tmp_path / "file.png", tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", ["--evaluate", "--data"])
def test_an_unreadable_digit_folder_is_refused_in_one_line(tmp_path, mode):
    """Before Keras loads: a digit folder that may not be listed is named, with what to do."""
    _, _, x_test, y_test, _ = bundled_mnist()
    root = tmp_path / "mine"
    images = root / "train" if mode == "--data" else root
    write_mnist_pngs(images, x_test[:5], y_test[:5], "d")
    if mode == "--data":
        write_mnist_pngs(root / "test", x_test[5:8], y_test[5:8], "d")
    locked = make_unreadable(images / "3", folder=True)
    args = ["--data", root, "--epochs", "1"] if mode == "--data" else ["--evaluate", root, "--model", tmp_path / "m"]
    message = refusal(run_main(*args, "--output-dir", tmp_path / "out"))
    assert message == f"error: {mode}: {locked}: permission denied: make the folder readable (chmod +rx)"


def test_evaluate_refuses_a_folder_where_nothing_can_be_read(trained, tmp_path):
    out, _, _ = trained
    (tmp_path / "mine" / "4").mkdir(parents=True)
    (tmp_path / "mine" / "4" / "a.png").write_bytes(b"not a png")
    Image.new("RGB", (60, 60), "white").save(tmp_path / "mine" / "4" / "white.jpg")  # read as a digit before
    result = run_main("--evaluate", tmp_path / "mine", "--model", out / "model.keras", "--output-dir", tmp_path / "o")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3 and "Traceback" not in result.stderr
    assert lines[-1].startswith("error: --evaluate: none of the 2 images")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args,words", [
    (["--evaluate", "d", "--draw"], "--draw and --evaluate are different modes: give one of them"),
    (["--collect", "d"], "--collect saves the digits drawn on the drawing page: use it with --draw"),
])
def test_options_that_do_not_go_together_are_refused(args, words):
    assert words in refusal(run_main(*args))


def test_data_folders_refuse_what_cannot_train(tmp_path):
    """Each refusal names --data and the problem: a folder not named after a digit, an empty set,
    an unreadable image, an image too large (in bytes, or in pixels by its header)."""
    def data_refusal(root):
        message = refusal(run_main("--data", root, "--epochs", "1", "--output-dir", tmp_path / "out"))
        assert message.startswith("error: --data: "), message
        return message

    x_train, y_train, _, _, _ = bundled_mnist()
    good = tmp_path / "good"
    write_mnist_pngs(good / "train", x_train[:10], y_train[:10], "a")
    write_mnist_pngs(good / "test", x_train[10:15], y_train[10:15], "b")

    (good / "train" / "sevens").mkdir()
    assert "'sevens' is not a digit" in data_refusal(good)
    (good / "train" / "sevens").rmdir()

    empty = tmp_path / "empty"
    write_mnist_pngs(empty / "train", x_train[:10], y_train[:10], "a")
    (empty / "test").mkdir()
    assert f"{empty / 'test'} holds no labelled image" in data_refusal(empty)

    broken = good / "test" / str(y_train[10]) / "broken.png"
    broken.write_bytes(b"\x89PNG damaged")
    message = data_refusal(good)
    assert f"{broken}: not an image" in message and "remove or replace it" in message
    broken.unlink()

    huge = good / "train" / str(y_train[0]) / "huge.png"
    with huge.open("wb") as file:  # sparse: no disk is spent on the 51 MB
        file.truncate(51 * 2**20)
    assert f"{huge}: 51 MB, more than the 50 MB" in data_refusal(good)
    huge.unlink()

    Image.new("1", (8000, 8000)).save(huge)  # a few kilobytes that declare 64 megapixels
    assert "64,000,000 pixels, more than the 50,000,000" in data_refusal(good)


def test_the_folder_readers_and_the_collection_need_no_keras(tmp_path):
    """digits.folders, digits.collect and digits.your_digits import, and a folder reads, with Keras impossible."""
    import subprocess
    import sys

    from conftest import ROOT

    for name in ("keras", "tensorflow", "jax", "torch"):
        (tmp_path / "blocked" / name).mkdir(parents=True)
        (tmp_path / "blocked" / name / "__init__.py").write_text(f"raise ImportError('{name} is blocked')\n")
    _, _, x_test, y_test, _ = bundled_mnist()
    write_mnist_pngs(tmp_path / "mine", x_test[:3], y_test[:3], "d")
    code = ("import digits.collect, digits.your_digits; from digits import folders; "
            f"r = folders.read_labelled({str(tmp_path / 'mine')!r}); assert len(r.labels) == 3, r")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": f"{tmp_path / 'blocked'}:{ROOT}", "PATH": ""}, check=False)
    assert result.returncode == 0, result.stderr
