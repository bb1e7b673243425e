"""A LoRA trial's logged MLflow Model loads and answers elsewhere: with its start directory gone and the hub
offline (adapters merged into the base); the adapters travel beside it, naming their base."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from shards.reader import open_reader
from workers.core.reporting import ListReporter
from workers.core.tracking import MlflowRunLogger
from workers.finetune.config import TrialConfig
from workers.finetune.model import PRETRAINED, build_encoder, tiny_encoder_config
from workers.finetune.recipe import run_trial
from workers.finetune.serving import clip_probabilities
from workers.vocabulary import Key


@pytest.mark.slow
def test_a_lora_trials_model_loads_and_predicts_offline_with_its_start_deleted(demo_dir, tmp_path, monkeypatch):
    import mlflow

    torch.manual_seed(0)
    start = tmp_path / "start"
    build_encoder(tiny_encoder_config()).save_pretrained(start)  # a local start: the base stays untrained
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("lora", artifact_location=str(tmp_path / "artifacts"))
    run_id = client.create_run(experiment).info.run_id
    cfg = TrialConfig(
        data_dir=str(demo_dir),
        start=str(start),
        schedule="lora",
        learning_rate=5e-3,
        lora_rank=4,
        train_speakers=("0011",),
        eval_sets={"test_en": ("0015",)},
        batch_size=8,
        epoch_scale=0.5,
        eval_every_steps=2,
        feature_cache_dir=str(tmp_path / "features"),
    )
    run_trial(cfg, MlflowRunLogger(uri, run_id), ListReporter(), device=torch.device("cpu"))

    adapters = client.download_artifacts(run_id, Key.LORA_ADAPTERS_DIR, str(tmp_path / "adapters"))
    base = json.loads((tmp_path / "adapters" / Key.LORA_ADAPTERS_DIR / "config.json").read_text())["lora"]["base"]
    assert base["source"] == str(start.resolve()) and adapters
    clip = open_reader(demo_dir).audio(int(open_reader(demo_dir).index.select(["0015"])[0])).astype(np.float64)
    clip /= 32768.0
    from workers.finetune.checkpoint import load_model

    trained = load_model(tmp_path / "adapters" / Key.LORA_ADAPTERS_DIR).eval()  # adapters on the base, as trained
    expected = clip_probabilities(trained, clip)

    shutil.rmtree(start)
    PRETRAINED.clear()  # nothing of the base left in this process either
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    mlflow.set_tracking_uri(uri)
    served = mlflow.pyfunc.load_model(f"runs:/{run_id}/{Key.MODEL_DIR}")
    import pandas as pd

    answer = served.predict(pd.DataFrame({"audio": [clip.tolist()]}))
    labels = list(answer.columns[1:])
    assert np.allclose(answer.iloc[0][labels].to_numpy(dtype=np.float64), expected, atol=1e-5)


def test_adapters_on_a_hub_base_name_the_commit_it_resolved_to_and_reload_on_it(tmp_path, monkeypatch):
    """The hub is simulated (no downloads): the config transformers returns carries the resolved commit."""
    import copy

    from workers.finetune import encoders
    from workers.finetune.checkpoint import load_model, save_model
    from workers.finetune.model import EmotionClassifier

    commit = "0123456789abcdef" * 2 + "01234567"
    config = tiny_encoder_config()
    config._commit_hash = commit
    asked: list[str | None] = []

    def load_config(source, **options):
        asked.append(options.get("revision"))
        return copy.deepcopy(config)

    def load_pretrained_encoder(source, encoder_config, **options):
        torch.manual_seed(0)  # the hub's weights: the same at every load
        return build_encoder(encoder_config)

    from workers.finetune import model as model_module

    monkeypatch.setattr(model_module, "load_config", load_config)  # where the model looks them up
    monkeypatch.setattr(model_module, "load_pretrained_encoder", load_pretrained_encoder)
    PRETRAINED.clear()
    model = EmotionClassifier(build_encoder("org/base-model"))  # the default branch, as a trial asks for it
    encoders.add_lora(model.encoder, rank=4, alpha=8, target="attention")
    save_model(model, tmp_path / "adapters")
    base = json.loads((tmp_path / "adapters" / "config.json").read_text())["lora"]["base"]
    assert base == {"source": "org/base-model", "revision": "", "commit": commit}
    PRETRAINED.clear()
    load_model(tmp_path / "adapters")
    assert asked == [None, commit]  # reloaded at the commit, not at whatever the branch points to now
