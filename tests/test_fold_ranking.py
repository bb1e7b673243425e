"""A configuration ranks on its complete fold set only (issue 21): the mean of the folds that happened to
finish favours a configuration whose weak folds were stopped early or failed.

The store is real MLflow in a temp dir: cfgFull has 3/3 folds at 0.70 validation accuracy; cfgPart has one
finished fold at 0.78, one stopped early by the scheduler and one failed. The mean over finished folds
(the biased rule) picks cfgPart; the rule picks cfgFull, and the summary tables say cfgPart is 1/3 done.
"""

from __future__ import annotations

from types import SimpleNamespace

from mlflow.tracking import MlflowClient
from sweep_stores import FakeTrial, synthetic_sweep

from orchestrator import results, summary
from orchestrator.progress import TrialProgress
from orchestrator.results import find_parent, load_sweep
from workers.payload import TrialPayload
from workers.vocabulary import Tag


def fold(trial_id: str, config: str, number: int, val: float | None, tagged: bool = True, **extra) -> FakeTrial:
    tags = {Tag.CONFIG_ID: config, Tag.FOLD: str(number), Tag.SCENARIO: "main", **extra.pop("tags", {})}
    if tagged:
        tags[Tag.NUM_FOLDS] = "3"
    scores = {} if val is None else {"val": val, "test_en": val - 0.1}
    return FakeTrial(trial_id, {"learning_rate": config}, scores, tags=tags, **extra)


def folds_store(uri: str, tagged: bool = True):
    trials = [
        fold("full_1", "cfgFull", 1, 0.69, tagged),
        fold("full_2", "cfgFull", 2, 0.70, tagged),
        fold("full_3", "cfgFull", 3, 0.71, tagged),
        fold("part_1", "cfgPart", 1, 0.78, tagged),
        fold("part_2", "cfgPart", 2, 0.40, tagged, tags={Tag.STOPPED_EARLY: "true"}),
        fold("part_3", "cfgPart", 3, None, tagged, status="FAILED", error="RuntimeError: CUDA error"),
    ]
    parent_id = synthetic_sweep(uri, "folds_rank", trials)
    client = MlflowClient(uri)
    return load_sweep(client, find_parent(client, parent_id))


def biased_best(trials, metric="val/accuracy"):
    """The rule before issue 21: mean over the finished folds of each configuration."""
    finished = [t for t in trials if t.selectable(metric)]
    by_config = {}
    for t in finished:
        by_config.setdefault(t.config_id, []).append(t.metric(metric))
    return max(by_config, key=lambda c: sum(by_config[c]) / len(by_config[c]))


def test_a_configuration_with_folds_missing_is_never_best(tracking_uri):
    sweep = folds_store(tracking_uri)
    assert biased_best(sweep.trials) == "cfgPart"  # the store is built so the old rule errs
    chosen = sweep.best()
    assert chosen.config_id == "cfgFull" and chosen.trial_id == "full_3"
    assert [t.trial_id for t in sweep.ranked()][:4] == ["full_3", "full_2", "full_1", "part_1"]
    progress = {c.key: c.progress for c in results.configurations(sweep.trials)}
    assert progress == {"cfgFull": "3/3", "cfgPart": "1/3"}


def test_runs_without_the_num_folds_tag_count_the_folds_their_scenario_ran(tracking_uri):
    sweep = folds_store(tracking_uri, tagged=False)
    assert sweep.best().config_id == "cfgFull"


def test_the_summary_tables_show_how_many_folds_finished(tracking_uri):
    sweep = folds_store(tracking_uri)
    table = summary.trials_table(sweep, ["learning_rate"], folds=True)
    lines = table.splitlines()
    assert summary.FOLDS_DONE in lines[0]
    assert lines[1].split()[0] == "full_3" and "3/3" in lines[1]
    part = next(line for line in lines if line.split()[0] == "part_1")
    assert "1/3" in part
    folds = summary.fold_table(results.fold_rows(sweep.trials), {})
    assert "1/3 (incomplete: not ranked)" in next(line for line in folds.splitlines() if "cfgPart" in line)
    assert "3/3" in next(line for line in folds.splitlines() if "cfgFull" in line)


def tune_trial(trial_id: str, config: str, number: int, val: float, status: str = "TERMINATED", final: bool = True):
    result = {"val/accuracy": val, **({"trial_seconds": 1.0} if final else {"epoch": 1})}
    tags = {Tag.CONFIG_ID: config, Tag.FOLD: str(number), Tag.NUM_FOLDS: "3", Tag.SCENARIO: "main"}
    return SimpleNamespace(
        trial_id=trial_id, status=status, last_result=result, config=TrialPayload({}, tags).to_config()
    )


def test_the_console_names_the_same_best_as_the_rule():
    trials = [
        tune_trial("full_1", "cfgFull", 1, 0.69),
        tune_trial("full_2", "cfgFull", 2, 0.70),
        tune_trial("full_3", "cfgFull", 3, 0.71),
        tune_trial("part_1", "cfgPart", 1, 0.78),
        tune_trial("part_2", "cfgPart", 2, 0.95, final=False),  # stopped by ASHA at an epoch report
        tune_trial("part_3", "cfgPart", 3, 0.99, status="RUNNING", final=False),
    ]
    console = TrialProgress("val/accuracy", "max", [])
    assert console._best(trials).trial_id == "full_3"
    assert "best val/accuracy 0.710 (full_3" in console.status(trials)
    assert console._best(trials[3:]) is None  # nothing complete yet: no best


def test_every_folded_trial_carries_how_many_folds_its_configuration_runs(demo_dir):
    import search_spaces
    from orchestrator.grid import build_grid, fill_init_from
    from shards.writer import read_manifest

    speakers = read_manifest(demo_dir)["speakers"]
    grid = build_grid(search_spaces.load("transfer_zh").with_preset("tiny"), speakers, folds="loso")
    main = fill_init_from(grid.phases[-1], "/models/base")  # after the pretrain phase
    num_folds = len({v.fold for v in main.variants})
    assert num_folds > 1
    assert {v.tags()[Tag.NUM_FOLDS] for v in main.variants} == {str(num_folds)}
