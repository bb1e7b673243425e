"""Every encoder family behind one interface: tiny random configs saved with save_pretrained, loaded by path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from workers.finetune import encoders
from workers.finetune.checkpoint import WEIGHTS_FILE, load_model, save_model
from workers.finetune.config import TrialConfig
from workers.finetune.model import PRETRAINED, EmotionClassifier, build_encoder, normalize_audio, set_trainable

FAMILIES = ("wav2vec2", "hubert", "wavlm", "data2vec-audio", "whisper")
# The checkpoint classes that carry a task head, as published checkpoints do.
WITH_TASK_HEAD = {
    "wav2vec2": "Wav2Vec2ForCTC",
    "hubert": "HubertForCTC",
    "wavlm": "WavLMForCTC",
    "data2vec-audio": "Data2VecAudioForCTC",
    "whisper": "WhisperForConditionalGeneration",
}
BARE = {
    "wav2vec2": "Wav2Vec2Model",
    "hubert": "HubertModel",
    "wavlm": "WavLMModel",
    "data2vec-audio": "Data2VecAudioModel",
    "whisper": "WhisperEncoder",
}
SAMPLE_RATE = 16_000


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Per family: a directory holding a checkpoint with its task head, and that head model."""
    root = tmp_path_factory.mktemp("encoders")
    out = {}
    for family in FAMILIES:
        torch.manual_seed(0)
        model = getattr(transformers, WITH_TASK_HEAD[family])(encoders.tiny_config(family))
        model.save_pretrained(root / family)
        out[family] = (str(root / family), model)
    return out


def audio_batch(lengths=(16_000, 7_000), seed=0):
    """Random int16 speech-like noise, zero after each clip's length (as the loader pads)."""
    generator = torch.Generator().manual_seed(seed)
    audio = (torch.randn(len(lengths), max(lengths), generator=generator) * 3000).to(torch.int16)
    lengths = torch.tensor(lengths)
    audio[torch.arange(audio.shape[1])[None, :] >= lengths[:, None]] = 0
    return audio, lengths


def classifier(path, **options):
    torch.manual_seed(0)
    return EmotionClassifier(build_encoder(path), head_dropout=0.0, **options)


@pytest.mark.parametrize("family", FAMILIES)
def test_int16_batch_gives_frames_mask_and_one_logit_per_emotion(saved, family):
    model = classifier(saved[family][0]).eval()
    audio, lengths = audio_batch()
    with torch.no_grad():
        states, frame_mask = encoders.encode(model.encoder, audio, lengths, all_layers=True)
        logits = model.classify(audio, lengths)
    assert logits.shape == (2, 5)
    assert len(states) == 3  # embedding output + 2 layers
    assert all(s.shape == (2, frame_mask.shape[1], 64) for s in states)
    # 10 ms frames for the tiny waveform layout, 20 ms for Whisper (conv2 halves 10 ms mel frames).
    frame_ms = 20 if family == "whisper" else 10
    assert abs(frame_mask.shape[1] - 1000 // frame_ms) <= 2
    assert frame_mask[1].sum() < frame_mask[0].sum() == frame_mask.shape[1]


@pytest.mark.parametrize("family", FAMILIES)
def test_padding_is_masked_and_a_padded_clip_predicts_as_alone(saved, family):
    model = classifier(saved[family][0]).eval()
    audio, lengths = audio_batch()
    with torch.no_grad():
        in_batch = model.classify(audio, lengths)[1]
        alone = model.classify(audio[1:, : lengths[1]], lengths[1:])[0]
        # The same padded batch with the padding declared as audio: the short clip's output moves.
        unmasked = model.classify(audio, torch.full_like(lengths, audio.shape[1]))[1]
    torch.testing.assert_close(in_batch, alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(in_batch, unmasked, atol=1e-4)


def _train_step(model, audio, lengths):
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    loss = torch.nn.functional.cross_entropy(model.classify(audio, lengths), torch.tensor([0, 3]))
    loss.backward()
    optimizer.step()


def _changed(before, after, modules):
    names = [n for module in modules for n, _ in module.named_parameters()]
    return {n: not torch.equal(before[n], after[n]) for n in names}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("part", ["head", "transformer", "all_but_cnn", "all"])
def test_a_freeze_part_means_the_same_in_every_family(saved, family, part):
    model = classifier(saved[family][0])
    set_trainable(model, part)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    _train_step(model, *audio_batch())
    moved = {id(p) for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}

    def any_moved(modules):
        return any(id(p) in moved for module in modules for p in module.parameters())

    assert any_moved([model.head])
    assert any_moved(encoders.frontend_modules(model.encoder)) == (part == "all")
    assert any_moved(encoders.transformer_modules(model.encoder)) == (part != "head")
    if family == "whisper":  # fixed sinusoids: no stage trains them
        assert not any_moved([model.encoder.embed_positions])
    else:  # a frozen front end builds no autograd graph (HF's feature encoders would otherwise)
        features = model.train().encoder.feature_extractor(torch.zeros(1, 4000))
        assert features.requires_grad == (part == "all")


@pytest.mark.parametrize("family", FAMILIES)
def test_a_checkpoint_with_a_task_head_loads_as_the_bare_encoder(saved, family):
    path, with_head = saved[family]
    encoder = build_encoder(path)
    assert type(encoder).__name__ == BARE[family]
    head_state = with_head.state_dict()
    for name, tensor in encoder.state_dict().items():
        matches = [k for k in head_state if k.endswith("." + name) and "decoder" not in k]
        assert matches, f"{name} not found in the {WITH_TASK_HEAD[family]} checkpoint"
        assert torch.equal(tensor, head_state[matches[0]]), name


def test_an_unsupported_model_type_names_the_supported_families(tmp_path):
    transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="unsupported encoder model_type 'bert'.*wav2vec2.*hubert.*wavlm.*whisper"):
        build_encoder(str(tmp_path))


def test_wav2vec2_through_the_new_interface_is_bit_identical_to_the_waveform_forward(saved):
    model = classifier(saved["wav2vec2"][0]).eval()
    audio, lengths = audio_batch()
    with torch.no_grad():
        values, mask = normalize_audio(audio, lengths)
        assert torch.equal(model.classify(audio, lengths), model.classify_waveform(values, attention_mask=mask))


# --- Whisper ---


def test_whisper_log_mel_on_the_device_equals_the_feature_extractor():
    extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    audio, lengths = audio_batch(lengths=(48_000, 20_350, 9_999), seed=1)
    log_mel, mel_mask = encoders.whisper_log_mel(audio, lengths, num_mel_bins=80)
    for clip, length in enumerate(lengths.tolist()):
        samples = audio[clip, :length].numpy().astype(np.float32) / 32768.0
        expected = extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features[0]
        num_frames = int(mel_mask[clip].sum())
        assert num_frames == -(-length // 160)
        torch.testing.assert_close(log_mel[clip, :, :num_frames], expected[:, :num_frames], atol=1e-4, rtol=1e-4)


def test_whisper_pads_short_clips_as_the_feature_extractor_does(saved):
    """A short clip in a batch: the encoder's input frames (after both convolutions, before attention) equal
    WhisperEncoder's on the extractor's own 30 s features, the frames at the clip's end included: the
    extractor pads with its floor value (and the convolutions read it), not with zeros."""
    extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    encoder = build_encoder(saved["whisper"][0]).eval()
    audio, lengths = audio_batch(lengths=(20_350, 9_999), seed=2)
    log_mel, mel_mask = encoders.whisper_log_mel(audio, lengths, num_mel_bins=80)
    with torch.no_grad():
        ours, frame_mask = encoders.run_whisper_encoder(encoder, log_mel, mel_mask, all_layers=True)
    for clip, length in enumerate(lengths.tolist()):
        samples = audio[clip, :length].numpy().astype(np.float32) / 32768.0
        features = extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        num_mel = int(mel_mask[clip].sum())
        past_end = features[0, :, num_mel + 1 : num_mel + 3]
        assert (past_end == past_end.min()).all() and past_end.min() != 0  # the extractor's floor, not 0
        with torch.no_grad():
            reference = encoder(features, output_hidden_states=True).hidden_states[0][0]
        num_frames = int(frame_mask[clip].sum())
        torch.testing.assert_close(ours[0][clip, :num_frames], reference[:num_frames], atol=1e-5, rtol=1e-4)


def test_a_3s_whisper_clip_stays_3s_of_frames(saved):
    model = classifier(saved["whisper"][0]).eval()
    audio, lengths = audio_batch(lengths=(3 * SAMPLE_RATE,))
    with torch.no_grad():
        states, frame_mask = encoders.encode(model.encoder, audio, lengths)
    assert states[-1].shape[1] == frame_mask.shape[1] == 150  # 3 s at 20 ms, not 1500 (30 s)


def test_whisper_on_30s_unmasked_equals_the_transformers_encoder(saved):
    """The own-length forward is WhisperEncoder.forward when given what that insists on (30 s)."""
    encoder = build_encoder(saved["whisper"][0]).eval()
    audio, lengths = audio_batch(lengths=(30 * SAMPLE_RATE,))
    log_mel, mel_mask = encoders.whisper_log_mel(audio, lengths)
    with torch.no_grad():
        ours, _ = encoders.run_whisper_encoder(encoder, log_mel, mel_mask)
        reference = encoder(log_mel).last_hidden_state
    torch.testing.assert_close(ours[-1], reference, atol=1e-4, rtol=1e-4)


def test_whisper_runs_under_bf16_autocast_with_float32_features(saved):
    model = classifier(saved["whisper"][0]).eval()
    audio, lengths = audio_batch()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.classify(audio, lengths)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    with torch.no_grad():
        torch.testing.assert_close(logits.float(), model.classify(audio, lengths), atol=0.1, rtol=0.1)


# --- layers ---


def test_layer_picks_a_hidden_state_and_weighted_sum_weights_plot(saved):
    audio, lengths = audio_batch()
    first = classifier(saved["wavlm"][0], layer=0).eval()
    last = classifier(saved["wavlm"][0]).eval()
    with torch.no_grad():
        states, frame_mask = encoders.encode(first.encoder, audio, lengths, all_layers=True)
        pooled = first.pool_audio(audio, lengths)
        assert torch.allclose(pooled, first.pooler(states[0], frame_mask))
        assert not torch.allclose(pooled, last.pool_audio(audio, lengths))
    with pytest.raises(ValueError, match="layer must be"):
        classifier(saved["wavlm"][0], layer=3)
    summed = classifier(saved["whisper"][0], pooling="weighted_sum")
    figure = encoders.layer_weights_figure(summed.pooler.layer_weights)
    assert len(figure.axes[0].patches) == 3


def test_trial_config_validates_the_new_knobs():
    assert [s.trainable for s in TrialConfig(schedule="lora").stage_list()] == ["head", "lora"]
    assert TrialConfig(layer=4).layer == 4
    for bad in (
        {"layer": -1},
        {"lora_rank": 0},
        {"lora_target": "everything"},
        {"layer": 2, "pooling": "weighted_sum"},
    ):
        with pytest.raises(ValueError):
            TrialConfig(**bad, layerdrop=0.0)


# --- LoRA ---


@pytest.mark.parametrize("family", ["wav2vec2", "whisper"])
def test_lora_trains_only_adapters_and_head_and_saves_them_alone(saved, family, tmp_path):
    path = saved[family][0]
    model = classifier(path)
    encoders.add_lora(model.encoder, rank=4, alpha=8, target="attention_ffn")
    set_trainable(model, "lora")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    audio, lengths = audio_batch()
    _train_step(model, audio, lengths)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed and all("lora_" in n or not n.startswith("encoder.") for n in changed)
    assert any("lora_" in n for n in changed) and any(n.startswith("head.") for n in changed)

    model.eval()
    with torch.no_grad():
        expected = model.classify(audio, lengths)
    save_model(model, tmp_path / "lora")
    full = classifier(path)
    save_model(full, tmp_path / "full")
    lora_bytes = (tmp_path / "lora" / WEIGHTS_FILE).stat().st_size
    full_bytes = (tmp_path / "full" / WEIGHTS_FILE).stat().st_size
    assert lora_bytes < 0.5 * full_bytes

    hits = PRETRAINED.hits
    reloaded = load_model(tmp_path / "lora").eval()
    assert PRETRAINED.hits == hits + 1  # the base came from this worker's loaded weights
    with torch.no_grad():
        torch.testing.assert_close(reloaded.classify(audio, lengths), expected, atol=1e-5, rtol=1e-5)


def test_a_lora_stage_without_adapters_is_an_error(saved):
    with pytest.raises(ValueError, match="LoRA adapters"):
        set_trainable(classifier(saved["hubert"][0]), "lora")


def test_a_lora_model_whose_base_was_trained_saves_the_base_too(saved, tmp_path):
    model = classifier(saved["hubert"][0])
    encoders.add_lora(model.encoder, rank=2, alpha=4, target="attention")
    set_trainable(model, "all_but_cnn")
    _train_step(model, *audio_batch())
    save_model(model, tmp_path / "m")
    reloaded = load_model(tmp_path / "m")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, reloaded.state_dict()[name]), name


# --- named starts and pre-fetching ---


def test_the_named_family_starts_resolve_and_fetch_one_copy_of_the_weights():
    from orchestrator import weights

    args = weights.parse_args(["fetch", "wavlm_large", "hubert_large", "xlsr_300m", "data2vec_large", "--dir", "/w"])
    assert [weights.repo_id(s) for s in args.starts] == [
        "microsoft/wavlm-large",
        "facebook/hubert-large-ll60k",
        "facebook/wav2vec2-xls-r-300m",
        "facebook/data2vec-audio-large",
    ]
    assert weights.repo_id("whisper_large_v3") == "openai/whisper-large-v3"
    # openai/whisper-large-v3's top level: fp16 weights, fp32 shards, other frameworks.
    whisper_listing = [
        "config.json",
        "preprocessor_config.json",
        "model.safetensors",
        "model.fp32-00001-of-00002.safetensors",
        "model.fp32-00002-of-00002.safetensors",
        "model.safetensors.index.fp32.json",
        "pytorch_model.bin",
        "pytorch_model.fp32-00001-of-00002.bin",
        "flax_model.msgpack",
    ]
    assert weights.weight_files(whisper_listing) == ["config.json", "preprocessor_config.json", "model.safetensors"]


def test_show_reads_a_whisper_checkpoint_under_its_own_field_names(saved):
    from orchestrator import weights

    settings = weights.checkpoint_settings(saved["whisper"][0], None)
    assert settings["architecture"]["family"] == "whisper"
    assert settings["architecture"]["hidden_size"] == 64
    assert set(settings["fields"]) == {"hidden_dropout", "attention_dropout", "activation_dropout", "layerdrop"}
