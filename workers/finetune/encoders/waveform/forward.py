"""The waveform families' forward pass: int16 audio -> normalised waveform and HF attention mask -> hidden states."""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from workers.finetune.encoders.registry import family_of

# One source: the code saved with every model for Hugging Face users normalises the same way.
from workers.finetune.hub.modeling_emotion_sweep import normalize_audio  # noqa: F401 (its old home)


def encode_audio(
    encoder: nn.Module, audio: torch.Tensor, lengths: torch.Tensor, all_layers: bool = False
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Family.encode of the waveform families: int16 audio, normalised here on its device."""
    values, sample_mask = normalize_audio(audio, lengths)
    return encode_waveform(encoder, values, sample_mask, all_layers)


def encode_waveform(
    encoder: nn.Module, values: torch.Tensor, sample_mask: torch.Tensor | None, all_layers: bool = False
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
    """The wav2vec2-style families on normalised waveforms and their sample mask."""
    # The sample mask's width (the input's, or a front end's output handed over: encoders.waveform.frames).
    num_samples = values.shape[1] if sample_mask is None else sample_mask.shape[1]
    with _padding_zeroed_between_position_convs(encoder, num_samples, sample_mask):
        outputs = encoder(values, attention_mask=sample_mask, output_hidden_states=all_layers)
    states = tuple(outputs.hidden_states) if all_layers else (outputs.last_hidden_state,)
    frame_mask = None
    if sample_mask is not None:
        frame_mask = encoder._get_feature_vector_attention_mask(states[0].shape[1], sample_mask)
    return states, frame_mask


@contextmanager
def _padding_zeroed_between_position_convs(encoder: nn.Module, num_samples: int, sample_mask: torch.Tensor | None):
    """data2vec: HF zeroes padded frames before the first positional conv only; the next ones would read
    the first one's output there, and a clip's last frames would depend on the batch's padding."""
    if sample_mask is None or not family_of(encoder.config).stacked_position_convs:
        yield
        return
    num_frames = int(encoder._get_feat_extract_output_lengths(num_samples))
    keep = encoder._get_feature_vector_attention_mask(num_frames, sample_mask)[:, None, :]

    def zero_padding(module, args):
        return (args[0] * keep.to(args[0].dtype), *args[1:])

    handles = [layer.register_forward_pre_hook(zero_padding) for layer in encoder.encoder.pos_conv_embed.layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
