"""An emotion-sweep model for Hugging Face users: `pipeline("audio-classification", model=DIR,
trust_remote_code=True)` or `AutoModelForAudioClassification.from_pretrained(DIR, trust_remote_code=True)`.

This file is copied into every saved model directory (config.json's `auto_map` names it), so it
imports only torch and transformers: a colleague needs neither emotion-sweep nor its code. It
computes what the trained model computes (workers.finetune.model.EmotionClassifier.classify, checked
equal by the project's tests): samples on the int16 grid the model was trained on, normalised per
clip on the device (wav2vec2 families) or Whisper's log-mel from the family's own feature extractor,
the encoder, pooling over the frames that hold audio, then dense -> tanh -> dropout -> projection.

Inputs, as the saved `preprocessor_config.json` prepares them:
    wav2vec2, HuBERT, WavLM, data2vec-audio   input_values [batch, samples] floats in [-1, 1] at 16 kHz
                                              (not normalised: the model does it) + attention_mask
    Whisper                                   input_features [batch, 80, frames] + attention_mask
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MODEL_TYPE = "emotion-sweep"
INT16_SCALE = 32768.0
WHISPER_HOP = 160  # samples per log-mel frame at 16 kHz


class EmotionSweepConfig(PretrainedConfig):
    """config.json of a saved model: the encoder's own config (a dict with its model_type), pooling,
    layer, the head's width and dropout, and the labels (id2label)."""

    model_type = MODEL_TYPE

    def __init__(self, encoder=None, pooling="mean", layer="last", hidden_size=None, head_dropout=0.1, lora=None, **kw):
        self.encoder = encoder
        self.pooling = pooling
        self.layer = layer
        self.hidden_size = hidden_size
        self.head_dropout = head_dropout
        self.lora = lora
        super().__init__(**kw)


def encoder_config(values: dict) -> PretrainedConfig:
    values = dict(values)
    return AutoConfig.for_model(values.pop("model_type"), **values)


def build_bare_encoder(config: PretrainedConfig) -> nn.Module:
    """The family's encoder without any task head (Whisper: its encoder alone)."""
    if config.model_type == "whisper":
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        return WhisperEncoder(config)
    from transformers import AutoModel

    return AutoModel.from_config(config)


def num_states(config: PretrainedConfig) -> int:
    """Hidden states an encoder returns: the embedding output plus one per transformer layer."""
    layers = config.encoder_layers if config.model_type == "whisper" else config.num_hidden_layers
    return layers + 1


def to_int16_grid(input_values: torch.Tensor) -> torch.Tensor:
    """Float samples in [-1, 1] on the int16 grid the model was trained on (the shards store int16)."""
    return torch.clamp(torch.round(input_values.float() * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1)


def whisper_inputs(input_features: torch.Tensor, attention_mask: torch.Tensor | None):
    """WhisperFeatureExtractor's output (padded to 30 s; its attention_mask per sample) -> the log-mel frames
    that hold the clip (+ 2 of right context) and their mask [batch, frames] (frame i starts at sample i * 160)."""
    if attention_mask is None:
        attention_mask = torch.ones(input_features.shape[0], input_features.shape[-1], dtype=torch.long)
    if attention_mask.shape[-1] != input_features.shape[-1]:
        attention_mask = attention_mask[:, ::WHISPER_HOP]
    num_frames = int(attention_mask.sum(dim=1).max())
    mel_mask = attention_mask[:, :num_frames].bool().to(input_features.device)
    # 2 frames of right context: what the encoder's two convolutions read for the last frame.
    return input_features[:, :, : num_frames + 2], mel_mask


def waveform_inputs(input_values: torch.Tensor, attention_mask: torch.Tensor | None):
    """Raw samples in [-1, 1] (Wav2Vec2FeatureExtractor, do_normalize=False) -> int16-grid audio and lengths."""
    if attention_mask is None:
        attention_mask = torch.ones_like(input_values, dtype=torch.long)
    return to_int16_grid(input_values), attention_mask.sum(dim=1).to(input_values.device)


def normalize_audio(audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int16 [batch, samples] + lengths -> zero-mean unit-variance floats and the attention mask.

    Statistics cover only each clip's own samples, as Wav2Vec2FeatureExtractor(do_normalize=True) does.
    """
    mask = torch.arange(audio.shape[1], device=audio.device)[None, :] < lengths[:, None]
    values = audio.float() * mask
    count = lengths.clamp(min=1).unsqueeze(1).float()
    mean = values.sum(dim=1, keepdim=True) / count
    centered = (values - mean) * mask
    variance = (centered**2).sum(dim=1, keepdim=True) / count
    return centered / torch.sqrt(variance + 1e-7), mask.long()


def encode_waveform(encoder: nn.Module, values: torch.Tensor, sample_mask: torch.Tensor, all_layers: bool):
    """The wav2vec2-style families on normalised waveforms: (hidden states, frame mask)."""
    hooks = []
    if encoder.config.model_type == "data2vec-audio":
        # HF zeroes padded frames before the first positional conv only; the model was trained with
        # them zeroed before each one, so a clip's frames do not depend on its batch's padding.
        def zero_padding(module, args):
            keep = encoder._get_feature_vector_attention_mask(args[0].shape[-1], sample_mask)[:, None, :]
            return (args[0] * keep.to(args[0].dtype), *args[1:])

        hooks = [layer.register_forward_pre_hook(zero_padding) for layer in encoder.encoder.pos_conv_embed.layers]
    try:
        outputs = encoder(values, attention_mask=sample_mask, output_hidden_states=all_layers)
    finally:
        for hook in hooks:
            hook.remove()
    states = tuple(outputs.hidden_states) if all_layers else (outputs.last_hidden_state,)
    return states, encoder._get_feature_vector_attention_mask(states[0].shape[1], sample_mask)


def run_whisper_encoder(
    encoder: nn.Module, log_mel: torch.Tensor, mel_mask: torch.Tensor, all_layers: bool = False
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """WhisperEncoder.forward on the batch's own length (it insists on 30 s), padded frames masked.

    `log_mel` as `whisper_log_mel` gives it: after each clip's end the frames the extractor's padding
    has (its floor value, not zeros), and right context beyond `mel_mask`'s frames. The convolutions
    read them as they read the extractor's 30 s input, so a clip's frames equal WhisperEncoder's on the
    extractor's features and do not depend on the batch; attention never looks at padded frames.
    2 mel frames make one encoder frame (20 ms).
    """
    dtype = encoder.conv1.weight.dtype
    hidden = nn.functional.gelu(encoder.conv1(log_mel.to(dtype)))
    hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
    frame_mask = mel_mask[:, ::2]
    hidden = hidden[:, : frame_mask.shape[1]]  # the right context's own frames are not the batch's
    num_frames = hidden.shape[1]
    max_frames = encoder.embed_positions.num_embeddings
    if num_frames > max_frames:
        raise ValueError(
            f"Whisper's encoder covers at most {max_frames} frames (30 s); this batch has {num_frames}: "
            "set max_seconds to 30 or less"
        )
    hidden = hidden + encoder.embed_positions.weight[:num_frames]
    hidden = nn.functional.dropout(hidden, p=encoder.dropout, training=encoder.training)
    blocked = torch.finfo(hidden.dtype).min
    attention_bias = torch.zeros(frame_mask.shape, dtype=hidden.dtype, device=hidden.device)
    attention_bias = attention_bias.masked_fill(~frame_mask, blocked)[:, None, None, :]
    states = [hidden]
    for layer in encoder.layers:
        if encoder.training and encoder.layerdrop > 0 and torch.rand([]) < encoder.layerdrop:
            continue
        hidden = layer(hidden, attention_bias)
        states.append(hidden)
    # As WhisperEncoder's hidden_states: the last entry is after the final norm (kept apart from the
    # embedding output when layerdrop skipped every layer).
    final = encoder.layer_norm(hidden)
    if len(states) > 1:
        states[-1] = final
    else:
        states.append(final)
    return (tuple(states) if all_layers else (states[-1],)), frame_mask


def masked_mean(hidden: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    weights = frame_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


class AttentiveScore(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.score = nn.Linear(hidden_size, 1)


class LayerWeights(nn.Module):
    def __init__(self, count: int):
        super().__init__()
        self.layer_weights = nn.Parameter(torch.zeros(count))


class Head(nn.Module):
    """dense -> tanh -> dropout -> projection, as in the paper."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(pooled))))


class EmotionSweepForAudioClassification(PreTrainedModel):
    config_class = EmotionSweepConfig
    base_model_prefix = "emotion"
    main_input_name = "input_values"
    _keys_to_ignore_on_load_unexpected = [r"masked_spec_embed"]

    def __init__(self, config: EmotionSweepConfig):
        super().__init__(config)
        if config.lora:
            raise ValueError("a LoRA model loads here once its adapters are merged (python -m orchestrator.export)")
        self.encoder = build_bare_encoder(encoder_config(config.encoder))
        hidden_size = self.encoder.config.d_model if config.encoder["model_type"] == "whisper" else None
        hidden_size = hidden_size or self.encoder.config.hidden_size
        self.whisper = config.encoder["model_type"] == "whisper"
        self.layer = int(config.layer) if str(config.layer).isdigit() else "last"
        if config.pooling == "attentive":
            self.pooler = AttentiveScore(hidden_size)
        elif config.pooling == "weighted_sum":
            self.pooler = LayerWeights(num_states(self.encoder.config))
        else:
            self.pooler = nn.Module()
        self.head = Head(hidden_size, config.num_labels, config.head_dropout)
        self.post_init()

    def _states(self, input_values, input_features, attention_mask, all_layers: bool):
        if self.whisper:
            return run_whisper_encoder(self.encoder, *whisper_inputs(input_features, attention_mask), all_layers)
        values, sample_mask = normalize_audio(*waveform_inputs(input_values, attention_mask))
        return encode_waveform(self.encoder, values, sample_mask, all_layers)

    def _pool(self, states: tuple[torch.Tensor, ...], frame_mask: torch.Tensor) -> torch.Tensor:
        if self.config.pooling == "weighted_sum":
            weights = torch.softmax(self.pooler.layer_weights, dim=0).to(states[0].dtype)
            return masked_mean(sum(w * s for w, s in zip(weights, states)), frame_mask)
        hidden = states[-1] if self.layer == "last" else states[self.layer]
        if self.config.pooling == "attentive":
            scores = self.pooler.score(hidden).squeeze(-1).float().masked_fill(~frame_mask.bool(), float("-inf"))
            return (hidden * torch.softmax(scores, dim=1).unsqueeze(-1).to(hidden.dtype)).sum(dim=1)
        return masked_mean(hidden, frame_mask)

    def forward(self, input_values=None, attention_mask=None, input_features=None, labels=None, **kwargs):
        all_layers = self.config.pooling == "weighted_sum" or self.layer != "last"
        states, frame_mask = self._states(input_values, input_features, attention_mask, all_layers)
        logits = self.head(self._pool(states, frame_mask))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
