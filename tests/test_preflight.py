"""Bad inputs stop the driver with one line before any trial starts (and before any work a bad `--set` would waste).

Each case runs the real driver (`python -m orchestrator.sweep ...`) as a subprocess: the exit code,
the lines it prints and what it left (MLflow runs, Ray, the demo corpus) are what a user sees.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator import preflight
from shards.demo import build_demo_corpus

ROOT = Path(__file__).resolve().parents[1]


def run_driver(tmp_path, *argv, env=None, timeout=240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "orchestrator.sweep", *argv, "--storage", str(tmp_path / "ray")]
    if "--tracking-uri" not in argv:
        command += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"]
    environment = {**os.environ, "EMOTION_SWEEP_CACHE": str(tmp_path / "cache"), **(env or {})}
    driver = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a driver that does start trials is stopped with all it started
    )
    try:
        stdout, stderr = driver.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        driver.wait()
    return subprocess.CompletedProcess(command, driver.returncode, stdout, stderr)


def assert_refused(result: subprocess.CompletedProcess, tmp_path, *words: str) -> str:
    """Non-zero exit, one line on stderr naming `words` (beside argparse's usage synopsis for a usage
    error), nothing started: no phase, no MLflow run."""
    assert result.returncode != 0, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith(("usage:", " "))]
    assert len(lines) == 1, result.stderr[-3000:]
    for word in words:
        assert word in lines[0], lines[0]
    assert "phase " not in result.stdout
    database = tmp_path / "mlruns" / "mlflow.db"
    if database.exists():
        client = MlflowClient(f"sqlite:///{database}")
        assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
    return lines[0]


@pytest.mark.parametrize(
    ("setting", "words"),
    [
        ("train_speakers=('9999',)", ["9999", "not in"]),
        ("train_speakers=()", ["no training"]),
        ("eval_sets={'test_en': ()}", ["test_en", "no clips"]),
        ("eval_sets={'test_en': ('0011',)}", ["0011", "both"]),  # 0011 trains in smoke: a leak
        ("learning_rate=abc", ["learning_rate", "float"]),
    ],
)
def test_a_bad_trial_setting_is_one_line_before_any_trial(demo_dir, tmp_path, setting, words):
    result = run_driver(tmp_path, "smoke", "--data", str(demo_dir), "--set", setting)
    assert_refused(result, tmp_path, *words)


def test_a_bad_set_value_is_refused_before_the_demo_corpus_is_built(tmp_path):
    result = run_driver(tmp_path, "smoke", "--set", "learning_rate=abc")
    assert_refused(result, tmp_path, "learning_rate", "float")
    assert not (tmp_path / "cache").exists(), "no demo corpus built for a sweep that cannot run"


def test_a_held_out_set_with_too_few_clips_per_class(tmp_path):
    small = tmp_path / "small"
    build_demo_corpus(small, seed=0, clips_per_emotion=preflight.MIN_HELD_OUT_CLIPS_PER_CLASS - 1)
    result = run_driver(tmp_path, "smoke", "--data", str(small))
    assert_refused(result, tmp_path, "held-out set", f"fewer than {preflight.MIN_HELD_OUT_CLIPS_PER_CLASS}")


def test_missing_data_directory(tmp_path):
    result = run_driver(tmp_path, "smoke", "--data", str(tmp_path / "nowhere"))
    assert_refused(result, tmp_path, "nowhere", "no such directory")


@pytest.mark.parametrize("damage", ["truncated", "not_a_manifest"])
def test_an_unreadable_manifest_names_the_file(demo_dir, tmp_path, damage):
    copy = tmp_path / "copy"
    shutil.copytree(demo_dir, copy)
    manifest = copy / "manifest.json"
    manifest.write_text(manifest.read_text()[:100] if damage == "truncated" else '{"format": 1}')
    result = run_driver(tmp_path, "smoke", "--data", str(copy))
    assert_refused(result, tmp_path, str(manifest))

    verify = subprocess.run(
        [sys.executable, "-m", "orchestrator.ingest", "verify", str(copy)], capture_output=True, text=True, cwd=ROOT
    )
    assert verify.returncode != 0
    lines = [line for line in verify.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and str(manifest) in lines[0], verify.stderr[-2000:]


def test_an_unreachable_tracking_server_is_one_line(demo_dir, tmp_path):
    result = run_driver(tmp_path, "smoke", "--data", str(demo_dir), "--tracking-uri", "http://127.0.0.1:9")
    assert_refused(result, tmp_path, "http://127.0.0.1:9")


def test_start_weights_that_cannot_be_had_offline(demo_dir, tmp_path):
    offline = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    result = run_driver(tmp_path, "finer_vs_vanilla", "--data", str(demo_dir), env=offline)
    line = assert_refused(result, tmp_path, "python -m orchestrator.weights fetch")
    assert "finer" in line or "vanilla" in line


def test_starts_that_need_no_download(tmp_path):
    assert preflight.start_problem("tiny") == ""
    (tmp_path / "saved").mkdir()
    assert "config.json" in preflight.start_problem(str(tmp_path / "saved"))
    (tmp_path / "saved" / "config.json").write_text("{}")
    assert preflight.start_problem(str(tmp_path / "saved")) == ""
    assert "weights_dir" in preflight.start_problem("vanilla", weights_dir=str(tmp_path / "empty"))


def test_random_starts_are_the_models_config_starts():
    from workers.finetune.config import RANDOM_STARTS
    from workers.finetune.model import CONFIG_STARTS

    assert set(RANDOM_STARTS) == set(CONFIG_STARTS)


def test_held_out_classes_are_those_the_trial_trains_on(tmp_path):
    from orchestrator.grid import Variant

    counts = {"a": {"Angry": 9, "Sad": 9}, "b": {"Angry": 5, "Sad": 1}, "c": {"Angry": 5, "Sad": 5, "Happy": 1}}
    manifest = {"speakers": {s: {} for s in counts}, "counts": counts}

    def check(train, held_out):
        variant = Variant("s", {"train_speakers": train, "eval_sets": {"test": held_out}}, "", "x")
        preflight.check_trials([variant], manifest, tmp_path)

    check(("a",), ("c",))  # Happy is not trained on: its single clip does not matter
    with pytest.raises(preflight.PreflightError, match=r"fewer than 2 clips of Sad \(1\)"):
        check(("a",), ("b",))
    with pytest.raises(preflight.PreflightError, match="fewer than 2 clips of Happy"):
        check(("a", "c"), ("b",))
    with pytest.raises(preflight.PreflightError, match="no clips"):
        check(("a",), ())
