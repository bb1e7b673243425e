"""The driver on a real local Ray that declares 2 fake GPUs, with a real MLflow store.

Trials record where and when they ran (tags CUDA_VISIBLE_DEVICES, started_at, ended_at), so the
tests can see how Tune packed them. Every named sweep's tiny preset runs here, shortened with
--set (epoch_scale, eval_every_steps) on the small demo corpus.
"""

from collections import Counter

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from orchestrator import sweep
from shards.schema import EMOTIONS

pytestmark = pytest.mark.slow

SHORT = ["--set", "epoch_scale=0.3", "--set", "eval_every_steps=5"]
RAY_INIT = dict(include_dashboard=False, log_to_driver=False, configure_logging=True, logging_level="WARNING")


@pytest.fixture(scope="module")
def fake_gpu_ray():
    """Its own Ray (2 fake GPUs, 4 logical CPUs); the session `local_ray` gets its Ray back afterwards."""
    import ray

    session_ray_was_up = ray.is_initialized()
    if session_ray_was_up:
        ray.shutdown()
    ray.init(num_cpus=4, num_gpus=2, **RAY_INIT)
    yield ray
    ray.shutdown()
    if session_ray_was_up:
        ray.init(num_cpus=2, **RAY_INIT)  # as tests/conftest.py's local_ray made it


def run(name, demo_dir, tracking_uri, tmp_path, *flags):
    argv = [name, "--data", str(demo_dir), "--tracking-uri", tracking_uri, "--storage", str(tmp_path / "ray"), *flags]
    assert sweep.main(argv) == 0


def sweep_runs(tracking_uri, experiment):
    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1, "one parent run per invocation"
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert len({c.data.tags["trial_id"] for c in children}) == len(children), "one run per trial"
    return client, parents[0], children


def peak_overlap(runs):
    """The largest set of runs whose [started_at, ended_at] intervals all overlap."""
    events = sorted(
        [(float(r.data.tags["started_at"]), 1, i) for i, r in enumerate(runs)]
        + [(float(r.data.tags["ended_at"]), -1, i) for i, r in enumerate(runs)],
        key=lambda e: (e[0], e[1]),
    )
    running, peak = set(), set()
    for _, kind, index in events:
        running = running | {index} if kind == 1 else running - {index}
        peak = max(peak, running, key=len)
    return [runs[i] for i in peak]


def assert_contract(child, sweep_name, sets):
    tags = child.data.tags
    for key in (
        "sweep",
        "trial_id",
        "scenario",
        "start",
        "train_speakers",
        "test_speakers",
        "data_hash",
        "git_commit",
        "config_id",
        "CUDA_VISIBLE_DEVICES",
        "started_at",
        "ended_at",
    ):
        assert key in tags, key
    assert tags["sweep"] == sweep_name and tags["trial_state"] == "completed"
    for name in ("learning_rate", "batch_size", "schedule", "english_fraction", "train_speakers"):
        assert name in child.data.params
    for set_name in sets:
        for stat in ("accuracy", "macro_f1"):
            assert f"{set_name}/{stat}" in child.data.metrics
        assert f"{set_name}/{EMOTIONS[0]}/support" in child.data.metrics


def test_finer_vs_vanilla_tiny_fans_out_two_at_a_time_on_two_gpus(
    fake_gpu_ray, demo_dir, tracking_uri, tmp_path, capsys
):
    run("finer_vs_vanilla", demo_dir, tracking_uri, tmp_path, "--preset", "tiny", "--gpus-per-trial", "1", *SHORT)
    client, parent, children = sweep_runs(tracking_uri, "finer_vs_vanilla")
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    assert Counter(c.data.tags["scenario"] for c in children) == {"finer": 2, "vanilla": 2}
    for child in children:
        assert_contract(child, "finer_vs_vanilla", ["test_en"])
        assert child.data.tags["test_speakers"] == "0015"
        assert "test_zh/accuracy" not in child.data.metrics
    assert {c.data.tags["CUDA_VISIBLE_DEVICES"] for c in children} == {"0", "1"}
    peak = peak_overlap(children)
    assert len(peak) == 2, "one GPU per trial: two at a time"
    assert sorted(c.data.tags["CUDA_VISIBLE_DEVICES"] for c in peak) == ["0", "1"]
    assert parent.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.txt", "summary.txt"} <= artifacts
    out = capsys.readouterr().out
    assert "status:" in out and "best configuration per scenario" in out
    assert "== finer" in out and "== vanilla" in out and "macro avg" in out and "weighted avg" in out


def test_transfer_zh_tiny_packs_four_trials_on_two_gpus(fake_gpu_ray, demo_dir, tracking_uri, tmp_path):
    run("transfer_zh", demo_dir, tracking_uri, tmp_path, "--preset", "tiny", "--gpus-per-trial", "0.5", *SHORT)
    client, parent, children = sweep_runs(tracking_uri, "transfer_zh")
    by_scenario = {}
    for child in children:
        by_scenario.setdefault(child.data.tags["scenario"], []).append(child)
        assert child.info.status == "FINISHED"
        assert_contract(child, "transfer_zh", ["test_zh", "test_en"])
    assert {k: len(v) for k, v in by_scenario.items()} == {"base": 1, "zero_shot": 1, "zh_only": 1, "mixed": 3}
    fractions = sorted(float(c.data.params["english_fraction"]) for c in by_scenario["mixed"])
    assert fractions == [0.25, 0.5, 0.75]
    (base,), (zero_shot,) = by_scenario["base"], by_scenario["zero_shot"]
    # Zero-shot evaluates the base exactly as trained: same held-out numbers, no training step.
    for key in ("test_zh/accuracy", "test_en/accuracy", "test_zh/macro_f1", "val/accuracy"):
        assert zero_shot.data.metrics[key] == pytest.approx(base.data.metrics[key], abs=1e-6)
    assert zero_shot.data.metrics["step"] == 0 and base.data.metrics["step"] > 0
    assert all(c.data.params["init_from"].endswith("checkpoint_000000") for c in children if c is not base)
    main_phase = [c for c in children if c is not base]
    peak = peak_overlap(main_phase)
    assert len(peak) == 4, "half a GPU per trial: four at a time"
    assert Counter(c.data.tags["CUDA_VISIBLE_DEVICES"] for c in peak) == {"0": 2, "1": 2}
    assert parent.data.tags["sweep"] == "transfer_zh" and parent.info.status == "FINISHED"


def test_folds_record_mean_and_std_per_configuration(fake_gpu_ray, demo_dir, tracking_uri, tmp_path):
    run(
        "smoke",
        demo_dir,
        tracking_uri,
        tmp_path,
        "--folds",
        "emobox",
        "--set",
        "learning_rate=1e-3",
        "--set",
        "schedule=full",
        *SHORT,
    )
    client, parent, children = sweep_runs(tracking_uri, "smoke")
    assert sorted(c.data.tags["fold"] for c in children) == ["emobox-1", "emobox-2", "emobox-4"]
    (config_id,) = {c.data.tags["config_id"] for c in children}
    accuracies = [c.data.metrics["test_en/accuracy"] for c in children]
    metrics = parent.data.metrics
    assert metrics[f"folds/{config_id}/test_en/accuracy_mean"] == pytest.approx(np.mean(accuracies))
    assert metrics[f"folds/{config_id}/test_en/accuracy_std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert f"folds/{config_id}/test_en/macro_f1_mean" in metrics
    assert "folds.txt" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    fold_speakers = {c.data.tags["fold"]: c.data.tags["test_speakers"] for c in children}
    assert fold_speakers["emobox-1"] == "0002,0011,0016"  # test_zh from the base plan, then the fold's English


def test_failing_trial_is_retried_then_marked_failed_and_the_sweep_goes_on(
    fake_gpu_ray, demo_dir, tracking_uri, tmp_path
):
    from ray import tune

    import search_spaces
    from orchestrator.sweep import run_sweep

    spec = search_spaces.load("smoke").override(
        {
            "schedule": "full",
            "learning_rate": 1e-3,
            "epoch_scale": 0.3,
            "init_from": tune.grid_search(["", str(tmp_path / "no-model")]),
        }
    )
    args = sweep.parse_args(["smoke", "--data", str(demo_dir), "--tracking-uri", tracking_uri, "--max-failures", "1"])
    state = sweep.new_sweep(spec, args, str(tmp_path / "ray"))
    assert run_sweep(state) == 0
    sweep.finish(state)
    client, parent, children = sweep_runs(tracking_uri, "smoke")
    failed = [c for c in children if c.info.status == "FAILED"]
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(failed) == 1 and len(finished) == 1
    assert "no-model" in failed[0].data.tags["error"]
    assert failed[0].data.tags["retries"] == "1"
    assert failed[0].data.tags["attempt"] == "2" and "attempt/2/started_at" in failed[0].data.tags  # try + retry
    assert "test_en/accuracy" in finished[0].data.metrics
    assert parent.info.status == "FAILED"


def test_workers_per_trial_trains_one_trial_data_parallel(fake_gpu_ray, demo_dir, tracking_uri, tmp_path):
    from shards.batching import holdout
    from shards.reader import ShardReader

    run(
        "smoke",
        demo_dir,
        tracking_uri,
        tmp_path,
        "--workers-per-trial",
        "2",
        "--set",
        "schedule=full",
        "--set",
        "learning_rate=1e-3",
        *SHORT,
    )
    client, parent, children = sweep_runs(tracking_uri, "smoke")
    (child,) = children
    assert child.info.status == "FINISHED" and "test_en/accuracy" in child.data.metrics
    # batch_size is global (issue 21): each step's 8 clips are split over the 2 workers, so an epoch has
    # as many steps as a one-process trial's.
    reader = ShardReader(demo_dir)
    train_rows, _ = holdout(reader.index, reader.index.select(("0011", "0012", "0013", "0014")), 0.1, 0)
    expected_steps = max(1, round(2 * 0.3 * -(-len(train_rows) // 8)))  # schedule 'full': 2 epochs x epoch_scale
    assert child.data.metrics["step"] == expected_steps
    # The MLflow Model's transformers directory holds the weights (issue 17's model layout).
    weights = client.list_artifacts(child.info.run_id, "model/data/transformers")
    assert "model.safetensors" in {a.path.split("/")[-1] for a in weights}
