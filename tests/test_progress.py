"""The driver's console: a failed trial's traceback tail under its FAILED line, none with --quiet."""

from types import SimpleNamespace

import pytest

from orchestrator.progress import CONSOLE, TRACEBACK_LINES, TrialProgress


@pytest.fixture
def failed_trial(tmp_path):
    error_file = tmp_path / "error.txt"
    frames = "\n".join(f'  File "recipe.py", line {n}, in step' for n in range(30))
    error_file.write_text(f"Failure # 1\nTraceback (most recent call last):\n{frames}\nValueError: the real cause\n")
    return SimpleNamespace(trial_id="abc_00001", config={}, error_file=str(error_file), last_result={})


@pytest.fixture
def console():
    yield CONSOLE
    CONSOLE.quiet = False


def test_a_failed_trial_prints_the_last_lines_of_its_traceback(failed_trial, console, capsys):
    console.quiet = False
    TrialProgress("val/accuracy", "max", []).on_trial_error(0, [], failed_trial)
    out = capsys.readouterr().out.splitlines()
    assert "abc_00001 FAILED" in out[0]
    assert failed_trial.error_file in out[1]
    traceback = [line for line in out if line.startswith("  abc_00001 | ")]
    assert len(traceback) == TRACEBACK_LINES
    assert traceback[-1].endswith("ValueError: the real cause")


def test_quiet_keeps_one_line_per_trial_event(failed_trial, console, capsys):
    console.quiet = True
    progress = TrialProgress("val/accuracy", "max", [])
    progress.on_trial_error(0, [], failed_trial)
    progress.on_trial_recover(0, [], failed_trial)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "FAILED" in out[0] and "retrying" in out[1]
