"""Start weights: named starts, local directories and pre-fetched hub ids load offline; CTC heads are dropped;
loaded weights are reused in-process by the next trial."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import Wav2Vec2ForCTC, Wav2Vec2Model

from orchestrator import weights
from workers.finetune.model import PRETRAINED, build_encoder, tiny_encoder_config

REPO_ROOT = Path(__file__).resolve().parents[1]
FINER = "jonatasgrosman/wav2vec2-large-xlsr-53-english"


def write_cache_layout(root: Path, repo_id: str, model) -> Path:
    """What `snapshot_download(cache_dir=root)` leaves behind: refs/main -> snapshots/<commit>/files."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    model.save_pretrained(snapshot)
    return snapshot


def tiny_ctc(seed: int) -> Wav2Vec2ForCTC:
    torch.manual_seed(seed)
    return Wav2Vec2ForCTC(tiny_encoder_config())


OFFLINE_SCRIPT = """
import json, sys
from workers.finetune.config import TrialConfig
from workers.finetune.recipe import build_model
from shards.schema import EMOTIONS
ctc_dir, encoder_dir, cache_dir = sys.argv[1:4]
def describe(model):
    layer = model.encoder.encoder.layers[0]
    return {"keys": sorted(model.state_dict()), "bias": layer.feed_forward.output_dense.bias.tolist(),
            "dropout": layer.dropout.p}
print(json.dumps({
    "ctc_dir": describe(build_model(TrialConfig(start=ctc_dir, hidden_dropout=0.2), EMOTIONS)),
    "encoder_dir": describe(build_model(TrialConfig(start=encoder_dir), EMOTIONS)),
    "hub_id": describe(build_model(TrialConfig(start="org/tiny-ctc", weights_dir=cache_dir), EMOTIONS)),
}))
"""


def test_local_directories_and_prefetched_hub_ids_load_offline_without_the_ctc_head(tmp_path):
    ctc, plain = tiny_ctc(0), Wav2Vec2Model(tiny_encoder_config())
    ctc.save_pretrained(tmp_path / "ctc")
    plain.save_pretrained(tmp_path / "encoder")
    write_cache_layout(tmp_path / "weights", "org/tiny-ctc", ctc)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            OFFLINE_SCRIPT,
            str(tmp_path / "ctc"),
            str(tmp_path / "encoder"),
            str(tmp_path / "weights"),
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    ctc_bias = ctc.wav2vec2.encoder.layers[0].feed_forward.output_dense.bias.tolist()
    for name in ("ctc_dir", "hub_id"):
        assert not [k for k in loaded[name]["keys"] if "lm_head" in k]
        assert loaded[name]["bias"] == pytest.approx(ctc_bias)
    assert loaded["encoder_dir"]["bias"] == pytest.approx(
        plain.encoder.layers[0].feed_forward.output_dense.bias.tolist()
    )
    assert (
        loaded["ctc_dir"]["dropout"] == 0.2 and loaded["encoder_dir"]["dropout"] == 0.1
    )  # trial values, not the checkpoint's 0.0


def test_a_missing_prefetched_start_says_how_to_fetch_it(tmp_path):
    with pytest.raises(OSError, match="orchestrator.weights fetch"):
        build_encoder("org/not-fetched", weights_dir=str(tmp_path))


def test_the_next_trial_reuses_loaded_weights_as_an_independent_copy(tmp_path):
    tiny_ctc(1).save_pretrained(tmp_path / "ctc")
    PRETRAINED.clear()
    loads, hits = PRETRAINED.loads, PRETRAINED.hits
    first = build_encoder(str(tmp_path / "ctc"), {"hidden_dropout": 0.1})
    second = build_encoder(str(tmp_path / "ctc"), {"hidden_dropout": 0.3, "mask_time_prob": 0.05})
    assert (PRETRAINED.loads - loads, PRETRAINED.hits - hits) == (1, 1)
    assert second.encoder.layers[0].dropout.p == 0.3
    for name, value in first.state_dict().items():
        assert torch.equal(second.state_dict()[name], value)
    with torch.no_grad():
        first.encoder.layers[0].feed_forward.output_dense.bias.add_(1.0)  # training the first trial's model ...
    third = build_encoder(str(tmp_path / "ctc"))
    assert torch.equal(
        third.encoder.layers[0].feed_forward.output_dense.bias,  # ... leaves the cache untouched
        second.encoder.layers[0].feed_forward.output_dense.bias,
    )
    PRETRAINED.clear()


def test_weight_files_take_configs_and_one_weight_format_from_the_top_level():
    listing = [
        "config.json",
        "preprocessor_config.json",
        "pytorch_model.bin",
        "model.safetensors",
        "language_model/lm.binary",
        "vocab.json",
        "flax_model.msgpack",
    ]
    assert weights.weight_files(listing) == ["config.json", "preprocessor_config.json", "model.safetensors"]
    assert weights.weight_files(["config.json", "pytorch_model.bin"]) == ["config.json", "pytorch_model.bin"]
    sharded = [
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
    ]
    assert weights.weight_files(sharded) == ["config.json", *sorted(sharded[1:])]
    with pytest.raises(ValueError, match="no PyTorch weights"):
        weights.weight_files(["config.json", "tf_model.h5"])


def test_fetch_then_show_and_load_offline(tmp_path, monkeypatch, capsys):
    """The hub is faked (no network here); everything after the download is real."""
    import huggingface_hub

    requested = []
    monkeypatch.setattr(
        huggingface_hub.HfApi,
        "list_repo_files",
        lambda self, repo, revision=None: [
            "config.json",
            "preprocessor_config.json",
            "pytorch_model.bin",
            "model.safetensors",
            "language_model/lm.binary",
        ],
    )

    def fake_download(repo, revision=None, cache_dir=None, allow_patterns=None):
        requested.append((repo, allow_patterns))
        return str(write_cache_layout(Path(cache_dir), repo, tiny_ctc(2)))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    assert weights.main(["fetch", "finer", "--dir", str(tmp_path / "shared")]) == 0
    assert requested == [(FINER, ["config.json", "preprocessor_config.json", "model.safetensors"])]
    assert f"weights_dir={(tmp_path / 'shared').resolve()}" in capsys.readouterr().out

    assert weights.main(["show", "finer", "--dir", str(tmp_path / "shared"), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["fields"]["hidden_dropout"] == {"checkpoint": 0.0, "trial_default": 0.1}
    encoder = build_encoder("finer", weights_dir=str(tmp_path / "shared"))
    assert torch.equal(
        encoder.encoder.layers[0].feed_forward.output_dense.bias,
        tiny_ctc(2).wav2vec2.encoder.layers[0].feed_forward.output_dense.bias,
    )
    PRETRAINED.clear()


def test_showing_a_start_that_is_nowhere_is_a_usage_error(tmp_path, capsys):
    from orchestrator.weights import main

    with pytest.raises(SystemExit) as exited:
        main(["show", str(tmp_path / "no-such-start"), "--dir", str(tmp_path)])
    assert exited.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith("python -m orchestrator.weights: error: ")
    assert "fetch it first" in lines[0]
