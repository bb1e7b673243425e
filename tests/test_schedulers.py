"""The schedulers' own rules without a sweep: PBT's exploit rule, and bench schedulers' trial-hours (the time
trials ran, from Tune's results, not the span of their runs). PBT end to end: tests/test_pbt.py."""

import json

from bench.schedulers import running_seconds


def test_trial_hours_count_every_report_of_every_trial_and_nothing_else(tmp_path):
    """Two trials' result.json as Tune writes them (one JSON object a line, a restart's reports appended to
    the same file); a checkpoint directory beside them holds no results. Paused time is in no report."""
    trials = {"smoke_a": [12.5, 3.0, 3.5], "smoke_b": [20.0, 4.0]}  # first report: set-up and the first epoch
    for name, times in trials.items():
        directory = tmp_path / "sweep" / "main" / name
        (directory / "checkpoint_000000").mkdir(parents=True)
        lines = [json.dumps({"time_this_iter_s": t, "time_total_s": sum(times[: i + 1])}) for i, t in enumerate(times)]
        (directory / "result.json").write_text("\n".join(lines) + "\n")
    assert running_seconds(tmp_path) == 43.0


def test_pbt_copies_only_a_strictly_better_trial_that_is_not_behind():
    """A tied population (every trial at chance after an epoch) must not exploit, nor a trial copy a donor
    paused epochs behind it: Tune's PBT sent the same trials back to tied or older checkpoints again and
    again while the donors waited (orchestrator/schedulers.py)."""
    from types import SimpleNamespace

    from orchestrator.schedulers import TrackedPBT

    class Trial:  # a Tune trial as PBT's state table keys it (by identity), with its status
        def __init__(self, trial_id, status="RUNNING"):
            self.trial_id, self.status = trial_id, status

    pbt = TrackedPBT(("learning_rate",), time_attr="epoch", hyperparam_mutations={"learning_rate": [1e-3, 2e-3]})
    weak, tied, strong, fresh = (Trial(name) for name in ("weak", "tied", "strong", "fresh"))
    behind, running_behind = Trial("behind", status="PAUSED"), Trial("running behind")
    pbt._trial_state = {  # scores as PBT keeps them (higher is better), times in epochs
        weak: SimpleNamespace(last_score=0.26, last_train_time=2),
        tied: SimpleNamespace(last_score=0.26, last_train_time=2),
        strong: SimpleNamespace(last_score=0.35, last_train_time=2),
        fresh: SimpleNamespace(last_score=None, last_train_time=0),
        behind: SimpleNamespace(last_score=0.35, last_train_time=1),  # paused an epoch back
        running_behind: SimpleNamespace(last_score=0.35, last_train_time=1),  # about to report its next epoch
    }
    assert pbt.worth_copying(strong, weak) and pbt.worth_copying(strong, fresh)
    assert not pbt.worth_copying(tied, weak) and not pbt.worth_copying(weak, strong)
    assert not pbt.worth_copying(fresh, weak) and not pbt.worth_copying(behind, weak)
    assert pbt.worth_copying(running_behind, weak)
    pbt._exploit(tune_controller=None, trial=weak, trial_to_clone=tied)  # returns before touching Tune
    assert pbt.events == {}
