"""End to end: `encoders --preset tiny` through the real driver (local Ray, MLflow store in a temp dir)
gives a finished trial per encoder family plus a LoRA trial, and the report's encoder table."""

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import report, sweep
from shards.schema import EMOTIONS
from workers.finetune.encoders import SUPPORTED_MODEL_TYPES
from workers.vocabulary import Tag

pytestmark = pytest.mark.slow

TINY_STARTS = {
    "tiny": "wav2vec2",
    "tiny_hubert": "hubert",
    "tiny_wavlm": "wavlm",
    "tiny_data2vec": "data2vec-audio",
    "tiny_whisper": "whisper",
}


def assert_full_metric_set(metrics: dict) -> None:
    for set_name in ("val", "test_en"):
        for name in ("accuracy", "uar", "macro_f1", "weighted_f1", "loss", "ece"):
            assert f"{set_name}/{name}" in metrics, f"{set_name}/{name}"
        for emotion in EMOTIONS:
            for name in ("precision", "recall", "f1", "support"):
                assert f"{set_name}/{emotion}/{name}" in metrics


def test_tiny_encoders_sweep_runs_every_family_and_lora_and_reports_the_encoder_table(
    demo_dir, local_ray, tracking_uri, tmp_path
):
    code = sweep.main(
        [
            "encoders",
            "--preset",
            "tiny",
            "--data",
            str(demo_dir),
            "--tracking-uri",
            tracking_uri,
            "--storage",
            str(tmp_path / "ray"),
            # As small as the path allows: a quarter of an epoch per stage, one evaluation round in it.
            "--set",
            "epoch_scale=0.25",
            "--set",
            "eval_every_steps=4",
        ]
    )
    assert code == 0
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("encoders")
    runs = client.search_runs([experiment.experiment_id])
    children = [r for r in runs if Tag.PARENT_RUN in r.data.tags]
    assert {r.info.status for r in children} == {"FINISHED"}
    fine_tuned = [r for r in children if r.data.tags[Tag.SCENARIO] == "fine_tune"]
    lora = [r for r in children if r.data.tags[Tag.SCENARIO] == "lora"]
    # One trial per family, each built from its own start and tagged with that family.
    assert {r.data.params["start"]: r.data.tags[Tag.ENCODER_FAMILY] for r in fine_tuned} == TINY_STARTS
    assert set(TINY_STARTS.values()) == set(SUPPORTED_MODEL_TYPES)
    assert len(lora) == 1 and lora[0].data.params["schedule"] == "lora"
    for run in children:
        assert_full_metric_set(run.data.metrics)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        # (The model is an MLflow logged model, not a run artifact: tests/test_model_artifact.py checks it.)
        assert {"confusion_matrix_test_en.png", "classification_report_test_en.txt"} <= artifacts

    parent = next(r for r in runs if Tag.PARENT_RUN not in r.data.tags)
    out = tmp_path / "report"
    assert report.main([parent.info.run_id, "--tracking-uri", tracking_uri, "--out", str(out), "--no-log"]) == 0
    text = (out / "report.md").read_text()
    section = text.split("## Encoders", 1)[1].split("\n## ", 1)[0]
    assert "test_en UA" in section and "test_en WA" in section and "test_en macro F1" in section
    table_lines = [line for line in section.splitlines() if line.startswith("|")]
    for start, family in TINY_STARTS.items():
        assert any(f"| fine_tune | {start} | {family} |" in line for line in table_lines), start
    assert any("| lora | tiny | wav2vec2 |" in line for line in table_lines)
    # The paper's tables stay, one per selected trial (the best of each scenario).
    assert text.count("Precision") >= 2 and "Selected trials in detail" in text
