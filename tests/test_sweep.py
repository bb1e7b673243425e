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


def test_unknown_set_key_is_named(demo_dir, tracking_uri):
    with pytest.raises(SystemExit, match="unknown config key 'lr'"):
        sweep.main(["smoke", "--data", str(demo_dir), "--tracking-uri", tracking_uri, "--set", "lr=1"])


def test_unknown_sweep_lists_the_available_ones():
    with pytest.raises(SystemExit, match="available: .*smoke"):
        sweep.main(["nope"])
