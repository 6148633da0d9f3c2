"""The package's shape: what needs no Keras imports without it, imports run one way, and the command
line answers before Keras loads."""
import ast
import os
import re
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, SCRIPT, refusal, run_cli

PACKAGE = ROOT / "digits"
KERAS_FREE = ["errors", "files", "settings", "signals", "cli", "data", "outputs", "photos", "drawing", "hosts",
              "replies", "requests", "server", "backend", "folders", "collect", "your_digits",
              "evaluation", "predict", "numbers", "lines", "reader", "adapt"]
# A keras (and tensorflow) that cannot be imported: put first on the path of a child process.
BLOCKER = 'raise ImportError("{} is blocked: this module must not need it")\n'


@pytest.fixture(scope="module")
def without_keras(tmp_path_factory):
    """A PYTHONPATH under which `import keras` and `import tensorflow` fail."""
    blocked = tmp_path_factory.mktemp("blocked")
    for name in ("keras", "tensorflow", "jax", "torch"):
        (blocked / name).mkdir()
        (blocked / name / "__init__.py").write_text(BLOCKER.format(name))
    return str(blocked)


def test_keras_free_modules_import_without_keras(without_keras):
    """Each module of KERAS_FREE imported on its own, all in one process, with Keras impossible to load."""
    code = """import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(f"digits.{name}")
    except ImportError as e:
        print(f"{name}: {e}")
    for loaded in [module for module in sys.modules if module.startswith("digits")]:
        del sys.modules[loaded]  # the next one imports on its own
"""
    result = subprocess.run([sys.executable, "-c", code, *KERAS_FREE], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={"PYTHONPATH": f"{without_keras}:{ROOT}", "PATH": ""}, check=False)
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr


def test_the_photo_pipeline_and_the_draw_requests_work_without_keras(without_keras):
    """Not only import: read a drawing into the 28x28 digit, with Keras impossible to load."""
    code = ("from digits import requests; "
            "found = requests.digits_from_request({'strokes': [[[0, 0], [0, 50]]]}); "
            "assert len(found.pieces) == 1, found; d = found.pieces[0].digit; "
            "assert d.shape == (28, 28) and d.max() > 0.9, d.max()")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={"PYTHONPATH": f"{without_keras}:{ROOT}", "PATH": ""}, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("args,words", [
    (["--help"], None),
    (["--epochs", "0"], ["--epochs", "at least 1"]),
    (["--epocs", "2"], ["unrecognized arguments: --epocs"]),
    (["--data", "/no/such/folder"], ["--data", "/no/such/folder does not exist"]),
    (["--output-dir", str(SCRIPT)], ["--output-dir", "is a file, not a folder"]),
    (["--filters", "1", "2", "3", "4"], ["--filters 1 2 3 4", "at most 3"]),
])
def test_the_command_line_answers_without_keras(without_keras, tmp_path, args, words):
    """--help, a typo, an impossible setting, a missing --data path: answered before Keras would load."""
    result = run_cli(*args, env={"PYTHONPATH": without_keras})
    if words is None:
        assert result.returncode == 0 and "--predict" in result.stdout, result.stderr
        return
    message = refusal(result)
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("case", ["missing", "folder", "fifo", "device", "several", "port in use"])
def test_predict_and_draw_answer_without_keras(without_keras, tmp_path, case):
    """A --predict with nothing to read (a missing file, a folder, a FIFO or a device, left unopened), and
    --draw on a port in use: answered before Keras would load. The model file's first bytes pass its check."""
    model = tmp_path / "model.keras"
    model.write_bytes(b"PK\x03\x04 a model's first bytes")
    env = {"PYTHONPATH": without_keras}
    if case == "port in use":
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            message = refusal(run_cli("--draw", "--port", port, "--model", model, env=env))
        assert message == f"error: port {port} is already in use on 127.0.0.1: pass another, e.g. --port {port + 1}"
        return
    missing, folder, fifo = tmp_path / "missing.png", tmp_path / "photos", tmp_path / "pipe.png"
    folder.mkdir()
    os.mkfifo(fifo)
    paths = {"missing": [missing], "folder": [folder], "fifo": [fifo], "device": ["/dev/zero"],
             "several": [missing, folder, fifo]}[case]
    message = refusal(run_cli("--predict", *paths, "--model", model, env=env, timeout=120))
    assert message == {
        "missing": f"error: --predict: {missing}: no such file: check the name",
        "folder": f"error: --predict: {folder} is a folder: to read the images in it, pass {folder}/*; for labelled "
                  f"digits in {folder}/0/ ... {folder}/9/, use --evaluate {folder}",
        "fifo": f"error: --predict: {fifo}: a named pipe (FIFO), not an image: only regular files are read, save "
                f"what it holds to a file and give that",
        "device": "error: --predict: /dev/zero: a device, not an image: only regular files are read, save what it "
                  "holds to a file and give that",
        "several": f"error: --predict: {missing}: no such file: check the name (and 2 more that cannot be read)",
    }[case]


def imports_of(path):
    """The digits.* modules a file imports, at any level."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("digits"):
            found |= ({f"digits.{alias.name}" for alias in node.names} if node.module == "digits"
                      else {node.module})
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("digits")}
    return {name.removeprefix("digits.") for name in found}


def test_imports_run_one_way_and_modules_stay_small():
    modules = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    graph = {name: imports_of(path) & set(modules) for name, path in modules.items()}
    order, done = [], set()

    def visit(name, trail):
        assert name not in trail, f"import cycle: {' -> '.join([*trail, name])}"
        if name not in done:
            for other in sorted(graph[name]):
                visit(other, [*trail, name])
            done.add(name)
            order.append(name)

    for name in sorted(graph):
        visit(name, [])
    for name, path in modules.items():
        assert len(path.read_text().splitlines()) <= 330, f"digits/{name}.py has grown past ~300 lines"


def test_the_layout_table_names_every_module_and_its_imports():
    """docs/layout.md's tables: a row for each module of digits/, whose last column lists exactly the
    digits modules it imports (function-level imports included)."""
    modules = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    rows = re.findall(r"^\| \[`(\w+)`\]\(\.\./digits/\w+\.py\) \|.*\| ([^|]+) \|$",
                      (ROOT / "docs" / "layout.md").read_text(), re.MULTILINE)
    documented = {name: set(re.findall(r"\w+", imports)) & set(modules) for name, imports in rows}
    assert sorted(documented) == sorted(modules)
    for name, path in modules.items():
        assert documented[name] == imports_of(path) - {name}, f"docs/layout.md's row for {name}"


def test_tools_and_benchmarks_never_import_the_tests():
    """The tests may use tools/ (the drawing page driven in a browser, photos of digits); tools and
    benchmarks stand on their own: no conftest, no test module, no tests/ on their path."""
    for path in [*ROOT.glob("tools/*.py"), *ROOT.glob("benchmarks/*.py"), ROOT / "train_number_reader.py"]:
        text = path.read_text()
        nodes = list(ast.walk(ast.parse(text)))
        imported = {alias.name.split(".")[0] for node in nodes if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module.split(".")[0] for node in nodes if isinstance(node, ast.ImportFrom) and node.module}
        assert not imported & {"conftest", "tests"} and not any(name.startswith("test_") for name in imported), path
        assert '"tests"' not in text and "/tests" not in text, f"{path} puts tests/ on its path"
