"""The waveform families from the conv front end's output on: what a cached front end feeds.

A wav2vec2-style encoder is a conv front end (`feature_extractor`: normalised samples -> `conv_dim[-1]`
channels, one frame per prod(conv_stride) samples, 320 for XLSR-53) followed by HF's forward: feature
projection, SpecAugment (`_mask_hidden_states`, in training), the transformer. `encode_frames` runs that
forward unchanged (every family's own, hidden-state capture and adapters included) on given front-end
outputs: a forward hook hands them over in place of the front end's, which runs on a stand-in input one
receptive field long. `frontend_rounded` makes the live path feed the same values: a frozen front end's
output held at fp16, the cache's precision (workers.finetune.frontend_cache).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from workers.finetune.encoders.waveform.forward import encode_waveform

CACHE_DTYPE = torch.float16


def frame_hop(config) -> int:
    """Samples per frame of the conv front end: the product of its strides (320 for XLSR-53, 160 for `tiny`)."""
    return int(np.prod(config.conv_stride))


def frames_for_samples(config, samples):
    """Frames the front end makes of clips of `samples` samples (HF's _get_feat_extract_output_lengths)."""
    frames = np.asarray(samples, dtype=np.int64)
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        frames = np.maximum((frames - kernel) // stride + 1, 0)
    return frames


def samples_for_frames(config, frames):
    """The fewest samples that make `frames` frames (>= 1): a sample mask HF turns into that frame mask."""
    samples = frames
    for kernel, stride in reversed(list(zip(config.conv_kernel, config.conv_stride))):
        samples = (samples - 1) * stride + kernel
    return samples


@contextmanager
def frontend_rounded(encoder: nn.Module):
    """The conv front end's output rounded to fp16 (the cache's precision) while inside: a frozen front end
    then feeds the same values whether it runs or its output comes from the cache."""

    def rounded(module, args, output):
        return output.to(CACHE_DTYPE).to(output.dtype)

    handle = encoder.feature_extractor.register_forward_hook(rounded)
    try:
        yield
    finally:
        handle.remove()


def encode_frames(
    encoder: nn.Module, features: torch.Tensor, frame_lengths: torch.Tensor, all_layers: bool = False
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """HF's forward of a waveform encoder from its front end's output: (hidden states, frame mask).

    `features` [batch, frames, channels] (any float dtype; a clip's frames first, padding after), `frame_lengths`
    [batch] the frames of each clip. Equals `encode_waveform` on the clips whose front end made `features`.
    """
    config = encoder.config
    samples = samples_for_frames(config, frame_lengths.to(torch.long))
    positions = torch.arange(int(samples.max()), device=features.device)
    sample_mask = (positions[None, :] < samples[:, None]).long()
    stand_in = torch.zeros((features.shape[0], int(samples_for_frames(config, 1))), device=features.device)
    given = features.transpose(1, 2)

    def hand_over(module, args, output):
        return given.to(output.dtype)

    handle = encoder.feature_extractor.register_forward_hook(hand_over)
    try:
        return encode_waveform(encoder, stand_in, sample_mask, all_layers)
    finally:
        handle.remove()


@torch.no_grad()
def frontend_output(encoder: nn.Module, values: torch.Tensor) -> torch.Tensor:
    """The front end's output for normalised samples [batch, samples]: [batch, frames, channels] in fp16."""
    return encoder.feature_extractor(values).transpose(1, 2).to(CACHE_DTYPE)
