"""The GPU benchmark's CPU dry run: every section runs through the real recipe and writes numbers.

No timing is asserted (the figures come from the H200 run); what is checked is that the prepared
script works end to end, so a device session spends its minutes measuring, not debugging.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

SECTIONS = ("data", "step", "compile", "evaluation", "concurrency", "paper_trial", "packed")


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_gpu_benchmark_imports_without_ray_or_mlflow():
    # The device image has neither: a module-level import of either would fail there.
    code = (
        "import sys; sys.modules['ray'] = None; sys.modules['mlflow'] = None\n"
        "import bench.gpu, bench.__main__, workers.finetune.recipe, workers.core.tracking, workers.core.reporting\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parent.parent)


def test_dry_run_writes_every_section_with_numbers(tmp_path):
    from bench.__main__ import main

    assert main(["gpu", "--dry-run", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "gpu.json").read_text())
    assert all(section in report for section in SECTIONS)
    assert report["environment"]["torch"] and report["environment"]["command"].startswith("python -m bench gpu")
    assert report["data"]["clips"] > 0

    step_rows = report["step"]["rows"]
    configurations = {(r["batch"], r["precision"], r["attention"]) for r in step_rows}
    assert len(configurations) == 2 * 2 * len(report["sizes"]["batch_sizes"])  # nothing skipped in a dry run
    assert {r["optimizer"] for r in step_rows} == {"fused", "foreach"}
    assert all(_number(r[k]) and r[k] > 0 for r in step_rows for k in ("step_ms", "audio_s_per_s", "tflops"))
    assert all(_number(f) and f > 0 for f in report["step"]["flops_per_audio_second"].values())

    assert report["compile"]["complete"] and all(r["compiled"] and r["step_ms"] > 0 for r in report["compile"]["rows"])
    assert all(r["audio_s_per_s"] > 0 for r in report["evaluation"]["rows"])
    assert report["evaluation"]["forward_flops_per_audio_second"] > 0

    for row, trials in zip(report["concurrency"]["rows"], report["sizes"]["concurrency"]):
        assert row["trials"] == trials and row["complete"] == trials
        assert row["aggregate_audio_s_per_s"] > 0 and _number(row["mfu"])

    paper = report["paper_trial"]["rows"]
    assert [r["eval_every_steps"] for r in paper] == [10, report["sizes"]["raised_eval_every"]]
    assert report["packed"]["rows"][0]["complete"] == report["sizes"]["packed"]
    for row in [*paper, *report["packed"]["rows"]]:
        assert not row["errors"] and len(row["per_trial"]) == row["trials"]
        for split in row["per_trial"]:
            assert split["train_steps"] > 0
            assert all(_number(split[k]) for k in ("setup_s", "training_s", "final_evaluation_s", "checkpoint_s"))
            assert split["extrapolated_full_trial_s"] >= split["wall_s"] - 1e-9
    # More evaluation rounds at the paper's 10 steps than with the interval raised.
    assert paper[0]["per_trial"][0]["evaluation_rounds"] > paper[1]["per_trial"][0]["evaluation_rounds"]
    assert "| batch | precision |" in (tmp_path / "gpu.md").read_text()


def head_stage_trial(demo_dir, cache_dir) -> dict:
    """A head-only stage from a cold feature cache, no held-out val clips (so no evaluation rounds)."""
    return {
        "data_dir": str(demo_dir),
        "train_speakers": ("0011", "0012"),
        "eval_sets": {"test_en": ("0015",)},
        "val_fraction": 0.0,
        "feature_cache_dir": str(cache_dir),
        "stages": ({"trainable": "head", "epochs": 0.25, "learning_rate": 1e-3, "batch_size": 4},),
    }


def test_the_feature_pass_is_timed_and_its_audio_counted(demo_dir, tmp_path):
    # It once read 0: the bench patched `recipe.pooled_features`, a name the recipe no longer had.
    import torch

    from bench.gpu.trials import EXPECTED, measure_trial
    from shards.reader import open_reader
    from shards.schema import SAMPLE_RATE
    from workers.core.phases import Phase

    expect = (*EXPECTED, Phase.FEATURE_CACHE, Phase.FEATURE_PASS)
    result = measure_trial(head_stage_trial(demo_dir, tmp_path / "features"), torch.device("cpu"), expect=expect)
    assert result["phases_s"]["feature_pass"] > 0 and result["phase_counts"]["feature_pass"] == 1
    assert result["phases_s"]["feature_cache"] >= result["phases_s"]["feature_pass"]
    index = open_reader(demo_dir).index
    seconds = {s: float(index.num_samples[index.select(s)].sum()) / SAMPLE_RATE for s in (("0011", "0012"), ("0015",))}
    # The encoder ran over the training speakers' clips once (the cache) and over the test speaker's (final evaluation).
    assert abs(result["forward_audio_s"] - seconds[("0011", "0012")] - seconds[("0015",)]) < 1e-6
    assert result["train_steps"] > 0 and result["train_start"] < result["train_end"]


def test_a_trial_that_misses_an_expected_phase_stops_the_bench_naming_it(demo_dir, tmp_path):
    # No held-out val clips: the trial never has an evaluation round, which this bench run expects.
    import pytest
    import torch

    from bench.gpu.trials import EXPECTED, check_phases, measure_trial
    from workers.core.phases import Phase, PhaseNotEntered

    values = head_stage_trial(demo_dir, tmp_path / "features")
    expect = (*EXPECTED, Phase.FEATURE_CACHE, Phase.FEATURE_PASS, Phase.EVALUATION_ROUND)
    with pytest.raises(PhaseNotEntered, match="'evaluation_round'") as raised:
        measure_trial(values, torch.device("cpu"), expect=expect)
    assert raised.value.missing == [Phase.EVALUATION_ROUND]
    # A child that reported a missing phase stops the parent too (the section does not read it as 0 s).
    with pytest.raises(PhaseNotEntered, match="'feature_pass'"):
        check_phases([{"wall_s": 1.0}, {"error": "...", "missing_phases": ["feature_pass"]}])
