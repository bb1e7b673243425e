"""The report follows what a sweep declared (its scenarios in order, its mixing knob), not the sweep's name:
read from the parent run's tags the driver writes at sweep start, inferred from the trials for older stores."""

import dataclasses
import re

import pytest
from mlflow.tracking import MlflowClient
from ray import tune
from sweep_stores import FakeTrial, add_trials, source_mixed, source_mixed_trials, synthetic_sweep

import search_spaces
from orchestrator import report, sweep
from workers.vocabulary import SweepTag

SOURCE_MIXED = {SweepTag.SCENARIOS: "mixed,en_only", SweepTag.MIXING_KNOB: "source_fraction"}


@pytest.fixture
def store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    (tmp_path / "mlruns").mkdir()
    MlflowClient(uri).search_experiments()  # create the database
    return uri


def written(uri, parent_id, out):
    assert report.main([parent_id, "--tracking-uri", uri, "--out", str(out), "--no-log"]) == 0
    return (out / "report.md").read_text()


def transfer_of(markdown):
    assert "## Transfer to English: Mandarin fraction" in markdown
    return markdown.split("## Transfer to English: Mandarin fraction")[1].split("\n## ")[0]


def scenario_rows(markdown):
    section = markdown.split("## Best configuration per scenario")[1].split("\n## ")[0]
    return re.findall(r"^\| (\w+) \| \d+/\d+ \|", section, flags=re.M)


@pytest.mark.parametrize("declared", [True, False], ids=["declared", "old store: inferred"])
def test_a_sweep_mixing_through_source_fraction_gets_its_transfer_section(store, tmp_path, declared):
    parent_id = source_mixed(store, SOURCE_MIXED if declared else None)
    out = tmp_path / "report"
    section = transfer_of(written(store, parent_id, out))
    assert "the share of Mandarin clips" in section and "`source_fraction`" in section
    assert (
        "| source_fraction | trials | selected trial | val/accuracy | test_en/accuracy | test_zh/accuracy |" in section
    )
    assert re.findall(r"^\| ([\d.]+) \| 1 \| mix_\d \|", section, flags=re.M) == ["0.2", "0.5", "0.8"]
    assert "| 0.8 | 1 | mix_2 | 0.800 | 0.560 | 0.670 |" in section  # English forgotten, Mandarin learnt
    assert "| en_only (reference) | 1 | en_0 | 0.900 | 0.850 | 0.300 |" in section
    assert (out / "images" / "transfer_source_fraction.png").stat().st_size > 10_000


def test_scenarios_follow_the_declared_order_and_old_stores_the_order_they_ran_in(store, tmp_path):
    declared = source_mixed(store, SOURCE_MIXED, sweep_name="declared")
    assert scenario_rows(written(store, declared, tmp_path / "declared")) == ["mixed", "en_only"]
    inferred = source_mixed(store, sweep_name="old")  # en_only's trial started first
    assert scenario_rows(written(store, inferred, tmp_path / "old")) == ["en_only", "mixed"]


def test_a_sweep_that_declares_no_mixing_gets_no_transfer_section(store, tmp_path):
    trials = [
        FakeTrial(f"t{k}", {"english_fraction": f}, {"val": 0.8, "test_en": 0.7, "test_zh": 0.4})
        for k, f in enumerate((0.2, 0.8))
    ]
    parent_id = synthetic_sweep(store, "smoke", trials, parent_tags={SweepTag.MIXING_KNOB: ""})
    assert "## Transfer" not in written(store, parent_id, tmp_path)


def test_the_driver_stores_the_sweeps_declaration_and_the_report_reads_it(demo_dir, store, tmp_path):
    """A sweep declared in search_spaces, mixing Mandarin in through source_fraction: the driver writes its
    declaration on the parent run it opens; the report on that run's trials plots the Mandarin share."""
    base = search_spaces.load("transfer_zh").with_preset("tiny")
    mixing = {"mix_source": "zh", "source_fraction": tune.grid_search([0.2, 0.5, 0.8])}
    spec = base.replace(
        mixing_knob="source_fraction",
        scenarios=tuple(
            dataclasses.replace(s, space=mixing) if s.name == "mixed" else s
            for s in base.scenarios
            if s.name != "zh_only"
        ),
    )
    args = sweep.parse_args(["transfer_zh", "--data", str(demo_dir), "--tracking-uri", store, "--experiment", "mix"])
    record = sweep.new_sweep(spec, args, str(tmp_path / "ray"))
    tags = MlflowClient(store).get_run(record.parent_run_id).data.tags
    assert tags[SweepTag.SCENARIOS] == "base,zero_shot,mixed"
    assert tags[SweepTag.MIXING_KNOB] == "source_fraction"
    add_trials(store, record.parent_run_id, source_mixed_trials())
    section = transfer_of(written(store, record.parent_run_id, tmp_path / "report"))
    assert re.findall(r"^\| ([\d.]+) \| 1 \| mix_\d \|", section, flags=re.M) == ["0.2", "0.5", "0.8"]
