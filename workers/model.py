"""The paper's model: a wav2vec2 encoder, mean pooling over valid frames, and a small head."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2Model

from shards.schema import EMOTIONS
from workers.config import START_MODELS, TRAINABLE_PARTS


def tiny_encoder_config() -> Wav2Vec2Config:
    """A ~0.1 M-parameter wav2vec2 for the demo and tests (XLSR's layout, no weights).

    Conv strides 5*4*4*2 = 160 samples a frame (10 ms at 16 kHz): 1.8 s is ~180 frames.
    Hidden size 64 learned the demo corpus's prosody about 1.5x better than 32 (held-out speaker
    0.63 vs 0.43 after 8 epochs); the 10 ms frames halve the cost of 5 ms ones at equal accuracy.
    """
    return Wav2Vec2Config(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        conv_dim=(32, 32, 32, 32),
        conv_stride=(5, 4, 4, 2),
        conv_kernel=(10, 8, 8, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        mask_time_prob=0.0,
        vocab_size=8,
    )


def build_encoder(start: str | Wav2Vec2Config) -> Wav2Vec2Model:
    """An encoder from a config, a named start, a hub id or a local directory.

    A CTC checkpoint (e.g. the 'finer' start) loads into Wav2Vec2Model without its CTC head.
    """
    if isinstance(start, Wav2Vec2Config):
        return Wav2Vec2Model(start)
    if start == "tiny":
        return Wav2Vec2Model(tiny_encoder_config())
    source = START_MODELS.get(start, start)
    if Path(source).exists():
        source = str(Path(source).resolve())
    return Wav2Vec2Model.from_pretrained(source)


class ClassificationHead(nn.Module):
    """dense -> tanh -> dropout -> projection, as in the paper."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(pooled))))


class EmotionClassifier(nn.Module):
    def __init__(self, encoder: Wav2Vec2Model, num_labels: int = len(EMOTIONS), head_dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.head = ClassificationHead(encoder.config.hidden_size, num_labels, head_dropout)
        self.labels = list(EMOTIONS)[:num_labels]

    def pool(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """Mean of the encoder's last hidden states over the frames that hold audio."""
        hidden = self.encoder(input_values, attention_mask=attention_mask).last_hidden_state
        if attention_mask is None:
            return hidden.mean(dim=1)
        frame_mask = self.encoder._get_feature_vector_attention_mask(hidden.shape[1], attention_mask)
        frame_mask = frame_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * frame_mask).sum(dim=1) / frame_mask.sum(dim=1).clamp(min=1.0)

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.pool(input_values, attention_mask))


def set_trainable(model: EmotionClassifier, part: str) -> None:
    """Freeze everything, then unfreeze `part`. The head is always trainable."""
    if part not in TRAINABLE_PARTS:
        raise ValueError(f"unknown trainable part {part!r}; choose one of {TRAINABLE_PARTS}")
    model.requires_grad_(False)
    model.head.requires_grad_(True)
    encoder = model.encoder
    if part == "transformer":
        encoder.encoder.requires_grad_(True)
    elif part == "all_but_cnn":
        encoder.requires_grad_(True)
        encoder.feature_extractor.requires_grad_(False)
    elif part == "all":
        encoder.requires_grad_(True)


def normalize_audio(audio: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int16 [batch, samples] + lengths -> zero-mean unit-variance floats and the attention mask.

    Done on the device: shipping int16 halves the bytes and keeps the CPU side cheap. Statistics
    cover only each clip's own samples, as Wav2Vec2FeatureExtractor(do_normalize=True) does.
    """
    mask = torch.arange(audio.shape[1], device=audio.device)[None, :] < lengths[:, None]
    values = audio.float() * mask
    count = lengths.clamp(min=1).unsqueeze(1).float()
    mean = values.sum(dim=1, keepdim=True) / count
    centered = (values - mean) * mask
    variance = (centered**2).sum(dim=1, keepdim=True) / count
    return centered / torch.sqrt(variance + 1e-7), mask.long()
