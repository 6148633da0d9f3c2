"""A training run as the command line gives it: which options it takes, what it prints, which files it
publishes (and which it removes), how it stops on a signal, and the model it saves."""

import pytest
from conftest import refusal, run_cli

TINY = ["--limit-train", "1000", "--limit-test", "300", "--epochs", "1", "--batch-size", "64",
        "--precision", "float32"]  # no timing of the precisions: a run of a few seconds


# --- The command line ---------------------------------------------------------------------------------

@pytest.mark.parametrize("typo, meant", [(["--epoch", "2"], "--epochs"), (["--batch", "64"], "--batch-size"),
                                         (["--limit-t", "100"], "--limit-test")])
def test_an_abbreviated_option_is_refused_with_the_option_meant(tmp_path, typo, meant):
    message = refusal(run_cli(*typo, "--output-dir", tmp_path / "out"))
    assert "unrecognized arguments" in message and meant in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("modes", [["--draw", "--predict", "x.png"], ["--predict", "x.png", "--draw"]])
def test_predict_and_draw_together_are_refused(tmp_path, modes):
    message = refusal(run_cli(*modes, "--output-dir", tmp_path))
    assert "--predict and --draw" in message
