"""End to end: a real local Ray runs a sweep whose trials log into a real MLflow store."""

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import sweep
from shards.schema import EMOTIONS
from workers.vocabulary import Key, Tag

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
    # The imbalance is on the parent run before any trial: the 4 training speakers' clips per class.
    per_class = ", ".join(f"{emotion} 24" for emotion in EMOTIONS) + " (imbalance 1.0x)"
    assert parents[0].data.tags[Tag.TRAIN_CLIPS_PER_CLASS] == per_class
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
        assert len(client.get_metric_history(child.info.run_id, Key.curve("val/loss"))) >= 2  # a learning curve
    out = capsys.readouterr().out
    assert "mlflow ui --backend-store-uri" in out and "trials (best first" in out
    assert f"  train speakers' clips per class: {per_class}" in out


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


def test_asha_stops_a_weak_trial_which_carries_stopped_early_and_is_never_chosen_best(
    demo_dir, local_ray, tracking_uri, tmp_path
):
    """A real sweep under ASHA, one trial after the other: the second one's learning rate (1.0) blows
    its validation loss up after its first epoch (the head-only stage), so ASHA stops it at that rung."""
    import dataclasses

    from ray import tune

    import search_spaces
    from orchestrator import results
    from orchestrator.sweep import run_sweep

    spec = dataclasses.replace(search_spaces.load("smoke"), metric="val/loss", mode="min").override(
        {
            "schedule": "paper_finer",  # two stages: epoch 1 (head), epoch 2 (all but the CNN)
            "learning_rate": tune.grid_search([1e-3, 1.0]),
            "epoch_scale": 0.1,
            "eval_every_steps": 1,  # a validation loss at the end of the first (short) epoch
        }
    )
    flags = ["--tracking-uri", tracking_uri, "--scheduler", "asha", "--max-concurrent", "1", "--cpus-per-trial", "2"]
    args = sweep.parse_args(["smoke", "--data", str(demo_dir), *flags])
    record = sweep.new_sweep(spec, args, str(tmp_path / "ray"))
    assert run_sweep(record) == 0
    assert sweep.finish(record) == []

    client = MlflowClient(tracking_uri)
    sweep_results = results.load_sweep(client, client.get_run(record.parent_run_id))
    stopped = [t for t in sweep_results.trials if t.stopped_early]
    completed = [t for t in sweep_results.trials if not t.stopped_early]
    assert [t.params["learning_rate"] for t in stopped] == ["1.0"]
    assert [t.status for t in sweep_results.trials] == ["FINISHED", "FINISHED"]
    (weak,) = stopped
    assert weak.tags.get("trial_state") != "completed" and "test_en/accuracy" not in weak.metrics
    assert sweep_results.best().trial_id == completed[0].trial_id
    assert client.get_run(record.parent_run_id).data.tags["best_trial_id"] == completed[0].trial_id

    # Even scored best of all, a trial stopped early is never chosen.
    client.log_metric(weak.run_id, "val/loss", 0.0, step=10**6)  # its latest value now
    rescored = results.load_sweep(client, client.get_run(record.parent_run_id))
    assert rescored.trials[[t.trial_id for t in rescored.trials].index(weak.trial_id)].metric("val/loss") == 0.0
    assert rescored.best().trial_id == completed[0].trial_id
