"""`--resume` takes a sweep directory in any path form, and a directory it cannot open changes nothing.

After a killed driver, `--resume ray_results/smoke-...` (relative) used to reach Tune as a relative
path, which pyarrow refuses (`ArrowInvalid: URI has empty scheme`), and the sweep was marked failed.
"""

import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import search_spaces
from orchestrator import sweep


@pytest.fixture
def interrupted_sweep(demo_dir, tmp_path, monkeypatch, tracking_uri):
    """A smoke sweep opened (record saved, parent run open) and left interrupted, in tmp_path/ray."""
    monkeypatch.chdir(tmp_path)
    args = sweep.parse_args(["smoke", "--data", str(demo_dir), "--tracking-uri", tracking_uri])
    record = sweep.new_sweep(search_spaces.load("smoke"), args, str(tmp_path / "ray"))
    record.status = "interrupted"
    record.save()
    MlflowClient(tracking_uri).set_terminated(record.parent_run_id, "KILLED")
    return record


def resume(name_or_dir: str, tracking_uri: str):
    args = sweep.parse_args(["smoke", "--resume", name_or_dir, "--tracking-uri", tracking_uri])
    return sweep.resume_sweep(args, "ray")


@pytest.mark.parametrize("form", ["relative", "dot_slash", "trailing_slash", "record_file", "phase_dir", "file_uri"])
def test_resume_takes_any_path_form(interrupted_sweep, tmp_path, tracking_uri, form):
    absolute = interrupted_sweep.directory
    relative = os.path.relpath(absolute, tmp_path)
    given = {
        "relative": relative,
        "dot_slash": f"./{relative}",
        "trailing_slash": f"{relative}/",
        "record_file": f"{relative}/sweep.json",
        "phase_dir": f"{relative}/main",
        "file_uri": Path(absolute).as_uri(),
    }[form]
    record = resume(given, tracking_uri)
    assert record.directory == absolute
    assert record.phase_path("main") == f"{absolute}/main"
    assert MlflowClient(tracking_uri).get_run(record.parent_run_id).info.status == "RUNNING"


@pytest.mark.parametrize("given", ["nosuchscheme://bucket/smoke-x", "ray/not-a-sweep"])
def test_a_sweep_directory_that_cannot_be_opened_changes_nothing(interrupted_sweep, tracking_uri, given, capsys):
    record_file = Path(interrupted_sweep.directory) / "sweep.json"
    before = record_file.read_text()
    # A usage error (UsageError: main reports it through parser.error) or a one-line exit.
    with pytest.raises((SystemExit, sweep.UsageError)) as exit_info:
        resume(given, tracking_uri)
    message = str(getattr(exit_info.value, "code", exit_info.value))
    assert given.split("/")[-1] in message and "\n" not in message
    assert record_file.read_text() == before
    parent = MlflowClient(tracking_uri).get_run(interrupted_sweep.parent_run_id)
    assert parent.info.status == "KILLED" and "resumed" not in parent.data.tags
    assert json.loads(before)["status"] == "interrupted"
