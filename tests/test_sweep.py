"""End to end: a real local Ray runs a sweep whose trials log into a real MLflow store."""

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import sweep
from shards.schema import EMOTIONS

pytestmark = pytest.mark.slow


def test_two_trial_sweep_records_parent_and_children(demo_dir, local_ray, tracking_uri, tmp_path, capsys):
    code = sweep.main(
        [
            "smoke",
            "--data",
            str(demo_dir),
            "--tracking-uri",
            tracking_uri,
            "--storage",
            str(tmp_path / "ray"),
            "--set",
            "schedule=full",
            "--set",
            "epoch_scale=0.5",
            "--set",
            "eval_every_steps=5",
        ]
    )
    assert code == 0
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert {r.info.status for r in runs} == {"FINISHED"}
    for child in children:
        metrics = child.data.metrics
        for set_name in ("test_en", "test_zh", "val"):
            for name in ("accuracy", "macro_f1", "weighted_f1", "uar"):
                assert f"{set_name}/{name}" in metrics
            for emotion in EMOTIONS:
                for name in ("precision", "recall", "f1", "support"):
                    assert f"{set_name}/{emotion}/{name}" in metrics
        assert metrics["test_en/Angry/support"] == 6
        assert child.data.params["schedule"] == "full"
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"confusion_matrix_test_en.png", "classification_report_test_en.txt"} <= artifacts
        assert len(client.get_metric_history(child.info.run_id, "val/loss")) >= 2  # a learning curve
    out = capsys.readouterr().out
    assert "mlflow ui --backend-store-uri" in out and "trials (best first" in out


def usage_error(capsys, argv) -> str:
    """The one `prog: error:` line a usage error prints; its exit status must be 2."""
    with pytest.raises(SystemExit) as exited:
        sweep.main(argv)
    assert exited.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("python -m orchestrator.sweep: error: ")
    return lines[0]


def test_set_keys_and_values_are_checked_before_any_work(tmp_path, monkeypatch, capsys, tracking_uri):
    cache = tmp_path / "cache"
    monkeypatch.setenv("EMOTION_SWEEP_CACHE", str(cache))  # the demo corpus would be built here
    base = ["smoke", "--tracking-uri", tracking_uri, "--storage", str(tmp_path / "ray")]
    line = usage_error(capsys, [*base, "--set", "learning_rte=1e-3"])
    assert "unknown config key 'learning_rte'; did you mean 'learning_rate'?" in line
    line = usage_error(capsys, [*base, "--set", "batch_size=big"])
    assert "'batch_size' expects int" in line
    usage_error(capsys, [*base, "--set", "batch_size"])
    usage_error(capsys, [*base, "--workers-per-trial", "0"])
    assert not cache.exists(), "no demo corpus is built for a command that cannot run"
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "ray").exists()


def test_unknown_sweep_lists_the_available_ones(capsys):
    assert "available: " in usage_error(capsys, ["nope"])


def test_a_sweep_whose_trials_failed_exits_non_zero_naming_them_with_their_tracebacks(
    demo_dir, local_ray, tracking_uri, tmp_path, capsys
):
    missing = tmp_path / "no-model"
    argv = ["smoke", "--data", str(demo_dir), "--tracking-uri", tracking_uri, "--storage", str(tmp_path / "ray")]
    code = sweep.main([*argv, "--set", f"init_from={missing}", "--max-failures", "0"])
    assert code == sweep.EXIT_TRIALS_FAILED != 0
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    trial_ids = sorted(r.data.tags["trial_id"] for r in runs if "mlflow.parentRunId" in r.data.tags)
    assert trial_ids
    out = capsys.readouterr().out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"sweep smoke FAILED: {len(trial_ids)} trial(s) failed: " + ", ".join(trial_ids))
    assert "tag 'error'" in last and str(tmp_path / "ray") in last
    for trial_id in trial_ids:  # the worker's traceback reached the driver's console, line by line
        traceback = [line for line in out.splitlines() if line.startswith(f"  {trial_id} | ")]
        assert 1 < len(traceback) <= 15
        assert any(str(missing) in line for line in traceback)
