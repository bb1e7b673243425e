"""`python -m orchestrator.sweep NAME --dry-run` (issue 21): every named sweep's trial grid, printed in seconds,
with no Ray started, no MLflow store created and no sweep directory written."""

from __future__ import annotations

import re

import pytest
import ray

import search_spaces
from orchestrator import sweep


@pytest.fixture
def ray_init_refused(monkeypatch):
    """A dry run must never start Ray. Another test's session-wide local Ray may already be up in this
    process, so "Ray is not initialized afterwards" proves nothing: make any `ray.init` fail instead."""

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run called ray.init")

    monkeypatch.setattr(ray, "init", refuse)
    was_up = ray.is_initialized()
    yield
    assert ray.is_initialized() == was_up


def test_every_named_sweep_previews_its_grid_without_ray_or_mlflow(demo_dir, tmp_path, capsys, ray_init_refused):
    mlruns, storage = tmp_path / "mlruns", tmp_path / "ray"
    where = ["--data", str(demo_dir), "--tracking-uri", f"sqlite:///{mlruns / 'mlflow.db'}", "--storage", str(storage)]
    names = search_spaces.available()
    assert len(names) >= 6
    for name in names:
        assert sweep.main([name, "--dry-run", *where]) == 0
        out = capsys.readouterr().out
        header = re.search(rf"^sweep {name} \(\w+\): (\d+) trial\(s\)", out, flags=re.M)
        assert header, out
        trial_lines = re.findall(r"^\s+\d+ \S+.*\| train \d+ spk/\d+ clips", out, flags=re.M)
        assert len(trial_lines) == int(header.group(1)) > 0
        assert "resources:" in out
    assert not mlruns.exists() and not storage.exists()


def test_a_folded_preview_lists_each_fold_with_its_held_out_speaker_and_the_differing_values(
    demo_dir, capsys, ray_init_refused
):
    assert sweep.main(["smoke", "--dry-run", "--data", str(demo_dir), "--folds", "loso", "--cpus-per-trial", "2"]) == 0
    out = capsys.readouterr().out
    folds = re.findall(r"fold=(\S+)", out)
    assert len(set(folds)) > 1 and "folds: loso" in out
    assert re.search(r"learning_rate=\S+ schedule=\S+", out)  # the values that differ between trials
    assert "2 CPU(s)" in out
