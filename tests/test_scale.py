"""Paper-size encoders: gradient checkpointing changes the memory, not the maths; a real-size XLSR-53 trial
(random weights) runs end to end on 2 cores; `python -m bench scale` measures every family."""

import json

import pytest
import torch

from bench import scale
from shards.demo import build_demo_corpus
from workers.core.reporting import ListReporter
from workers.core.tracking import NullLogger
from workers.finetune.config import TrialConfig
from workers.finetune.model import EmotionClassifier, build_encoder, set_trainable
from workers.finetune.recipe import enable_gradient_checkpointing, run_trial

CPU = torch.device("cpu")


def one_step_gradients(checkpointing: bool, part: str) -> tuple[float, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    model = EmotionClassifier(build_encoder("tiny", {"hidden_dropout": 0.1, "layerdrop": 0.0})).train()
    set_trainable(model, part)
    if checkpointing:
        enable_gradient_checkpointing(model)
    audio = (torch.randn(2, 16000) * 3000).to(torch.int16)
    torch.manual_seed(1)  # the same dropout masks in both runs; checkpointing must replay them
    loss = torch.nn.functional.cross_entropy(model.classify(audio, torch.tensor([16000, 12000])), torch.tensor([0, 3]))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("part", ["all_but_cnn", "all"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(part):
    loss, grads = one_step_gradients(False, part)
    loss_ckpt, grads_ckpt = one_step_gradients(True, part)
    assert loss == loss_ckpt
    assert grads.keys() == grads_ckpt.keys()
    assert any(name.startswith("encoder.encoder.layers") for name in grads)  # the transformer did get gradients
    for name in grads:
        assert torch.allclose(grads[name], grads_ckpt[name], atol=1e-6), name


def test_gradient_checkpointing_is_on_in_the_layers_when_the_knob_is_set(demo_dir, tmp_path):
    cfg = TrialConfig(
        data_dir=str(demo_dir),
        train_speakers=("0011",),
        eval_sets={"test_en": ("0015",)},
        gradient_checkpointing=True,
        stages=({"trainable": "all_but_cnn", "epochs": 0.1, "learning_rate": 1e-3, "batch_size": 4},),
        feature_cache_dir=str(tmp_path / "features"),
    )
    from workers.finetune.recipe import setup

    trial = setup(cfg, NullLogger(), CPU, None)
    layers = trial.model.encoder.encoder.layers
    assert all(layer.gradient_checkpointing for layer in layers)


def test_real_size_configs_have_the_published_architecture():
    counts = {}
    for family in scale.PUBLISHED:
        config = scale.real_size_config(family)
        with torch.device("meta"):  # shapes only: no 300 M random numbers drawn
            counts[family] = sum(p.numel() for p in build_encoder(config).parameters())
    # Bare encoders (no pretraining quantizer / CTC head / Whisper decoder), in millions
    assert 310e6 < counts["xlsr53"] < 320e6
    assert 310e6 < counts["hubert_large"] < 320e6
    assert 310e6 < counts["wavlm_large"] < 320e6
    assert 300e6 < counts["data2vec_large"] < 320e6
    assert 620e6 < counts["whisper_large_v3_encoder"] < 650e6


@pytest.mark.slow
def test_a_real_size_xlsr53_trial_with_gradient_checkpointing_finishes_on_the_cpu(tmp_path):
    """XLSR-53's architecture (315 M parameters, random weights): two optimizer steps of the paper's second
    stage, evaluation and the saved model, on 2 cores and well under 24 GB. One clip per emotion and
    speaker: a 315 M forward pass on a CPU costs seconds per clip."""
    build_demo_corpus(tmp_path / "demo", seed=0, clips_per_emotion=1)
    cfg = TrialConfig(
        data_dir=str(tmp_path / "demo"),
        train_speakers=("0011",),
        eval_sets={"test_en": ("0015",)},
        start="xlsr53_random",
        gradient_checkpointing=True,
        max_seconds=2.0,
        val_fraction=0.2,  # 1 of the speaker's 5 clips; 4 train: 2 steps of 2
        stages=({"trainable": "all_but_cnn", "epochs": 1.0, "learning_rate": 1e-5, "batch_size": 2},),
        eval_every_steps=100,
        eval_batch_size=4,
        feature_cache_dir=str(tmp_path / "features"),
    )
    final = run_trial(cfg, NullLogger(), ListReporter(), device=CPU)
    assert final["step"] == 2
    assert 0.0 <= final["test_en/accuracy"] <= 1.0


@pytest.mark.slow
def test_bench_scale_prints_a_row_per_stage_and_the_checkpoint_sizes(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(scale, "CLIP_SECONDS", 1.0)
    assert scale.main(["--families", "xlsr53", "--stages", "head", "--json", str(tmp_path / "s.json")]) == 0
    result = json.loads((tmp_path / "s.json").read_text())
    (row,) = result["steps"]
    assert row["family"] == "xlsr53" and row["stage"] == "head" and 310e6 < row["encoder_parameters"] < 320e6
    assert row["peak_rss_gb"] > 1.0 and row["step_seconds"] > 0
    assert result["checkpoints"]["xlsr53"]["full_mb"] > 1000 > result["checkpoints"]["xlsr53"]["lora_mb"]
    assert "| xlsr53 |" in capsys.readouterr().out
