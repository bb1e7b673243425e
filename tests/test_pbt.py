"""Population-based training end to end: real local Ray, MLflow and checkpoints (orchestrator/schedulers.py)."""

import json

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import sweep
from workers.core.param_history import ParamHistory
from workers.vocabulary import Key, Tag

pytestmark = pytest.mark.slow


def test_pbt_sweep_keeps_one_run_per_trial_with_its_exploits_and_learning_rate_history(
    demo_dir, local_ray, tracking_uri, tmp_path
):
    """Two trials at once, one with a learning rate that blows its validation loss up (1.0): at an epoch's
    end it is in PBT's bottom quarter and continues from the other's checkpoint with a perturbed rate."""
    from ray import tune

    import search_spaces
    from orchestrator import results
    from orchestrator.sweep import run_sweep

    spec = search_spaces.load("smoke").override(
        {
            "schedule": "full",
            "learning_rate": tune.grid_search([1e-3, 1.0]),
            "train_speakers": ("0011",),  # 27 training clips: 4 steps an epoch
            "eval_sets": {"test_en": ("0015",)},
            "epoch_scale": 2.0,  # 4 epochs: PBT decides at each epoch's end
            "eval_every_steps": 2,
        }
    )
    spec = spec.replace(metric="val/loss", mode="min")
    flags = [
        "--tracking-uri",
        tracking_uri,
        "--scheduler",
        "pbt",
        "--perturbation-interval",
        "1",
        "--max-concurrent",
        "2",
    ]
    args = sweep.parse_args(["smoke", "--data", str(demo_dir), *flags])
    record = sweep.new_sweep(spec, args, str(tmp_path / "ray"))
    assert record.resources["scheduler"] == "pbt"
    assert run_sweep(record) == 0
    assert sweep.finish(record) == []

    client = MlflowClient(tracking_uri)
    sweep_results = results.load_sweep(client, client.get_run(record.parent_run_id))
    trial_ids = sorted(t.trial_id for t in sweep_results.trials)
    assert len(trial_ids) == 2 and len(set(trial_ids)) == 2, "one MLflow run per trial"
    assert [t.status for t in sweep_results.trials] == ["FINISHED", "FINISHED"]

    events = []
    for trial in sweep_results.trials:
        run = client.get_run(trial.run_id)
        numbered = sorted(k for k in run.data.tags if k.startswith(Key.PBT_PREFIX))
        events += [(trial, run, json.loads(run.data.tags[k])) for k in numbered]
        history = client.get_metric_history(trial.run_id, f"{Key.PBT_PREFIX}learning_rate")
        assert history, "every PBT trial logs its learning rate's history"
        first = min(history, key=lambda m: (m.step, m.timestamp))
        assert first.step == 0 and first.value == pytest.approx(float(run.data.params["learning_rate"]))
    assert events, "at least one exploit recorded"
    for trial, run, event in events:
        assert event["from_trial"] in trial_ids and event["from_trial"] != trial.trial_id
        assert run.data.tags[Tag.TRIAL_ID] == trial.trial_id
    # A later exploit may land on the rate the trial already had (copy 1e-3, perturb x1.2 -> 1.2e-3, twice).
    changes = [event["values"]["learning_rate"] for _, _, event in events]
    assert any(new != old for old, new in changes), changes
    # The param keeps the first value; the history has the last exploit's value, from the step it resumed at.
    trial, run, event = events[-1]
    values = [m.value for m in client.get_metric_history(trial.run_id, f"{Key.PBT_PREFIX}learning_rate")]
    assert pytest.approx(event["values"]["learning_rate"][1]) in values and len(values) >= 2


class _Recorder:
    def __init__(self):
        self.params, self.metrics = [], []

    def log_params(self, params):
        self.params.append(params)

    def log_metrics(self, metrics, step=None):
        self.metrics.append((metrics, step))


def test_a_restored_pbt_trial_logs_its_new_values_as_metrics_at_the_step_it_resumes_not_as_params(tmp_path):
    (tmp_path / "train_state.json").write_text(json.dumps({"step": 12}))
    logger = _Recorder()
    ParamHistory(logger, ("learning_rate",), tmp_path).log_params({"learning_rate": 2e-3, "batch_size": 8})
    assert logger.params == [{"batch_size": 8}]
    assert logger.metrics == [({"pbt/learning_rate": 2e-3}, 12)]
    batched = _Recorder()
    batched.log_batch = lambda params, tags, metrics_by_step: batched.params.append((params, metrics_by_step))
    ParamHistory(batched, ("learning_rate",), tmp_path).log_batch(params={"learning_rate": 2e-3}, tags={})
    assert batched.params == [({}, {12: {"pbt/learning_rate": 2e-3}})]  # the background writer's path
    assert not hasattr(ParamHistory(_Recorder(), ("learning_rate",), None), "log_batch")
    fresh = _Recorder()
    ParamHistory(fresh, ("learning_rate",), None).log_params({"learning_rate": 1e-3, "batch_size": 8})
    assert fresh.params == [{"learning_rate": 1e-3, "batch_size": 8}]
    assert fresh.metrics == [({"pbt/learning_rate": 1e-3}, 0)]


class _Reports:
    def __init__(self):
        self.reports = []

    def report(self, metrics, checkpoint_dir=None):
        self.reports.append((metrics, checkpoint_dir and sorted(p.name for p in checkpoint_dir.iterdir())))


def test_a_pbt_trial_reports_its_latest_checkpoint_with_every_report(tmp_path):
    from workers.core.param_history import RepeatCheckpoint

    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "weights").write_text("w")
    inner = _Reports()
    reporter = RepeatCheckpoint(inner, None)
    reporter.report({"epoch": 1})  # nothing to carry yet
    reporter.report({"epoch": 2}, checkpoint_dir=tmp_path / "best")
    (tmp_path / "best" / "weights").unlink()  # the recipe's temporary directory is gone after its report
    reporter.report({"epoch": 3})
    assert inner.reports == [({"epoch": 1}, None), ({"epoch": 2}, ["weights"]), ({"epoch": 3}, ["weights"])]


def test_pbt_refuses_a_population_that_differs_in_more_than_what_it_mutates():
    """Another schedule's checkpoint does not fit (its stage and optimizer differ): refused before any trial."""
    from types import SimpleNamespace

    from orchestrator.schedulers import check_population

    same = [SimpleNamespace(values={"schedule": "full", "learning_rate": lr}) for lr in (1e-3, 2e-3)]
    check_population(same, ("learning_rate",))
    mixed = [*same, SimpleNamespace(values={"schedule": "paper_finer", "learning_rate": 1e-3})]
    with pytest.raises(ValueError, match="differ in schedule"):
        check_population(mixed, ("learning_rate",))
