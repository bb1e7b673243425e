"""Where results go when no flag says: MLFLOW_TRACKING_URI as MLflow users expect, else ./mlruns."""

from __future__ import annotations

from orchestrator import paths


def test_mlflow_tracking_uri_decides_when_no_flag_is_given(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert paths.default_tracking_uri() == "http://127.0.0.1:5000"


def test_a_relative_sqlite_uri_becomes_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///store/mlflow.db")
    assert paths.default_tracking_uri() == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


def test_without_the_variable_the_store_is_under_the_current_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert paths.default_tracking_uri() == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
