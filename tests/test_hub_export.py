"""A trained model as Hugging Face users use it: pipeline("audio-classification") in a process without this
project's code, a model card that names the held-out speakers and metrics, ONNX equal to torch, the Hub upload."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestrator import export
from workers.core.tracking import NullLogger
from workers.finetune.checkpoint import load_model, save_model
from workers.finetune.config import TrialConfig
from workers.finetune.model import EmotionClassifier, build_encoder
from workers.finetune.serving import clip_probabilities

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
FAMILY_STARTS = ("tiny", "tiny_hubert", "tiny_wavlm", "tiny_data2vec", "tiny_whisper")

# Runs in a fresh interpreter: the project's packages cannot be imported, only torch and transformers.
FRESH_PIPELINE = """
import importlib.abc, json, sys
ROOT = {root!r}
class NoProjectCode(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {{"workers", "shards", "orchestrator", "search_spaces", "bench", "deploy"}}:
            raise ImportError(f"project code {{name}} must not be needed")
sys.meta_path.insert(0, NoProjectCode())
sys.path = [p for p in sys.path if p.rstrip("/") != ROOT]  # the checkout itself, not its .venv
import numpy as np
from transformers import pipeline
answers = {{}}
for model_dir, clip_path in json.loads(sys.argv[1]):
    classifier = pipeline("audio-classification", model=model_dir, trust_remote_code=True)
    answers[model_dir] = classifier(np.load(clip_path), top_k=None)
assert not any(name.split(".")[0] in {{"workers", "shards"}} for name in sys.modules)
print(json.dumps(answers))
"""


class ModelKeeper(NullLogger):
    """Keeps a copy of the model directory the trial logs (what becomes its MLflow Model's transformers/)."""

    def __init__(self, into: Path):
        self.into = into

    def log_model(self, model_dir: str, metrics=None, step=None, model_step: int = 0) -> None:
        shutil.copytree(model_dir, self.into)


@pytest.fixture(scope="module")
def trained(demo_dir, tmp_path_factory):
    """A real (tiny, short) trial of the recipe: its logged model directory and its final metrics."""
    from workers.core.reporting import ListReporter
    from workers.finetune.recipe import run_trial

    tmp = tmp_path_factory.mktemp("trained")
    cfg = TrialConfig(
        data_dir=str(demo_dir),
        train_speakers=("0011", "0012"),
        eval_sets={"test_en": ("0015",), "test_zh": ("0001",)},
        stages=({"trainable": "all_but_cnn", "epochs": 0.5, "learning_rate": 1e-3, "batch_size": 4},),
        eval_every_steps=4,
        feature_cache_dir=str(tmp / "features"),
    )
    final = run_trial(cfg, ModelKeeper(tmp / "model"), ListReporter(), device=CPU)
    return tmp / "model", final


def two_second_clip(seed: int = 0, num_samples: int = 32000) -> np.ndarray:
    t = np.arange(num_samples) / 16000
    noise = np.random.default_rng(seed).standard_normal(num_samples) * 0.05
    return (0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.2 * t)) + noise).clip(-1, 1).astype(np.float32)


def saved_family_model(start: str, directory: Path, pooling: str = "mean") -> Path:
    torch.manual_seed(0)
    return save_model(EmotionClassifier(build_encoder(start), pooling=pooling).eval(), directory)


def fresh_pipeline(pairs: list[tuple[Path, Path]]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    script = FRESH_PIPELINE.format(root=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps([[str(m), str(c)] for m, c in pairs])],
        capture_output=True,
        text=True,
        cwd="/",
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_trials_model_answers_in_a_fresh_process_through_pipeline_as_predict_does(trained, tmp_path):
    model_dir, _ = trained
    whisper_dir = saved_family_model("tiny_whisper", tmp_path / "whisper", pooling="attentive")
    clip = two_second_clip()
    np.save(tmp_path / "clip.npy", clip)
    answers = fresh_pipeline([(model_dir, tmp_path / "clip.npy"), (whisper_dir, tmp_path / "clip.npy")])
    for directory, tolerance in ((model_dir, 1e-5), (whisper_dir, 1e-5)):
        model = load_model(directory).eval()
        expected = dict(zip(model.labels, clip_probabilities(model, clip)))
        got = {answer["label"]: answer["score"] for answer in answers[str(directory)]}
        assert set(got) == set(model.labels) and len(got) == 5
        assert max(abs(got[label] - expected[label]) for label in expected) < tolerance


def test_the_hf_forward_of_every_family_equals_predict_in_process(tmp_path):
    from transformers import pipeline

    clip = two_second_clip(1)
    for start in FAMILY_STARTS:
        directory = saved_family_model(start, tmp_path / start, pooling="weighted_sum")
        classifier = pipeline("audio-classification", model=str(directory), trust_remote_code=True)
        got = {answer["label"]: answer["score"] for answer in classifier(clip, top_k=None)}
        model = load_model(directory).eval()
        expected = dict(zip(model.labels, clip_probabilities(model, clip)))
        assert max(abs(got[label] - expected[label]) for label in expected) < 1e-5, start


def test_the_model_card_validates_and_names_the_held_out_speakers_and_metrics(trained):
    from huggingface_hub import ModelCard

    model_dir, final = trained
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.pipeline_tag == "audio-classification"
    assert card.data.library_name == "transformers"
    assert "0015" in card.text and "0001" in card.text and "0011, 0012" in card.text
    for name in ("test_en", "test_zh"):
        row = next(line for line in card.text.splitlines() if line.startswith(f"| {name} |"))
        for key in ("accuracy", "uar", "macro_f1"):
            assert f"{final[f'{name}/{key}']:.3f}" in row
    assert "acted" in card.text and "Angry" in card.text and "learning_rate" in card.text


def onnx_and_torch_logits(directory: Path, onnx_path: Path, lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    import onnxruntime
    from transformers import WhisperFeatureExtractor

    session = onnxruntime.InferenceSession(str(onnx_path))
    model = load_model(directory).eval()
    longest = max(lengths)
    clips = np.stack([np.pad(two_second_clip(n, n), (0, longest - n)) for n in lengths]).astype(np.float32)
    if model.family == "whisper":
        extractor = WhisperFeatureExtractor(return_attention_mask=True)
        frames = -(-longest // 160) + 2  # + the right context the encoder's convolutions read for the last frame
        features = np.stack(
            [extractor(c[:n], sampling_rate=16000)["input_features"][0][:, :frames] for c, n in zip(clips, lengths)]
        )
        mask = np.array([[i < -(-n // 160) for i in range(frames)] for n in lengths], dtype=np.int64)
        onnx_logits = session.run(None, {"input_features": features.astype(np.float32), "attention_mask": mask})[0]
    else:
        mask = np.array([[i < n for i in range(longest)] for n in lengths], dtype=np.int64)
        onnx_logits = session.run(None, {"input_values": clips, "attention_mask": mask})[0]
    audio = torch.from_numpy(np.clip(np.round(clips.astype(np.float64) * 32768), -32768, 32767).astype(np.int16))
    with torch.no_grad():
        torch_logits = model.classify(audio, torch.tensor(lengths)).numpy()
    return onnx_logits, torch_logits


@pytest.mark.parametrize("start", FAMILY_STARTS)
def test_onnx_export_matches_torch_on_clips_of_several_lengths(start, tmp_path):
    directory = saved_family_model(start, tmp_path / "model", pooling="attentive")
    assert export.main([str(directory), "--onnx", str(tmp_path / "model.onnx")]) == 0
    for lengths in ([8000], [20000, 11000], [40000, 40000, 9000]):
        onnx_logits, torch_logits = onnx_and_torch_logits(directory, tmp_path / "model.onnx", lengths)
        assert np.abs(onnx_logits - torch_logits).max() < 1e-4, (start, lengths)


class StandInHub:
    """What the export asks of huggingface_hub.HfApi, recorded instead of sent."""

    calls: list = []

    def create_repo(self, repo_id, exist_ok=False, private=False, repo_type=None):
        self.calls.append(("create_repo", repo_id, private))
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, folder_path, repo_id, commit_message=""):
        self.calls.append(("upload_folder", repo_id, sorted(os.listdir(folder_path))))


def test_push_to_hub_uploads_the_directory_and_its_card(trained, tmp_path, monkeypatch):
    import huggingface_hub

    model_dir, _ = trained
    StandInHub.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", StandInHub)
    code = export.main([str(model_dir), "--out", str(tmp_path / "hf"), "--push-to-hub", "lab/esd-emotion", "--private"])
    assert code == 0
    (create, repo, private), (upload, repo_again, files) = StandInHub.calls
    assert (create, repo, private, upload, repo_again) == (
        "create_repo",
        "lab/esd-emotion",
        True,
        "upload_folder",
        repo,
    )
    for name in (
        "README.md",
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "modeling_emotion_sweep.py",
    ):
        assert name in files


def test_a_lora_model_exports_merged_and_loads_without_peft_state(tmp_path):
    from workers.finetune.encoders import add_lora, has_lora

    torch.manual_seed(0)
    encoder = add_lora(build_encoder("tiny"), rank=4, alpha=8.0, target="attention")
    model = EmotionClassifier(encoder).eval()
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)  # adapters that change the answer
    save_model(model, tmp_path / "lora")
    clip = two_second_clip(2)
    before = clip_probabilities(load_model(tmp_path / "lora").eval(), clip)
    assert export.main([str(tmp_path / "lora"), "--out", str(tmp_path / "hf")]) == 0
    merged = load_model(tmp_path / "hf").eval()
    assert not has_lora(merged.encoder) and json.loads((tmp_path / "hf" / "config.json").read_text())["lora"] is None
    assert np.abs(clip_probabilities(merged, clip) - before).max() < 1e-5


def test_export_refuses_a_features_model_in_one_line(tmp_path, capsys):
    (tmp_path / "features_model.json").write_text(json.dumps({"kind": "acoustic_features", "labels": ["a", "b"]}))
    assert export.main([str(tmp_path), "--out", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fine-tuned models only" in err[0]
