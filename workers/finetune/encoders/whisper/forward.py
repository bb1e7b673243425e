"""Whisper's forward pass: WhisperFeatureExtractor's log-mel on the device, the encoder on the batch's own length."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

# Whisper's feature extractor: 25 ms windows every 10 ms at 16 kHz; the encoder's conv2 halves the frames.
WHISPER_SAMPLE_RATE = 16_000
WHISPER_N_FFT = 400
WHISPER_HOP = 160
INT16_SCALE = 32768.0


def encode_audio(encoder: nn.Module, audio: torch.Tensor, lengths: torch.Tensor, all_layers: bool = False):
    """Family.encode of Whisper: int16 audio -> log-mel (float32, here on the device) -> the encoder."""
    # float32 features under bf16 autocast too: log10 of a bf16 mel sum would lose the quiet bins.
    with torch.autocast(audio.device.type, enabled=False):
        log_mel, mel_mask = whisper_log_mel(audio, lengths, encoder.config.num_mel_bins)
    return run_whisper_encoder(encoder, log_mel, mel_mask, all_layers)


@lru_cache(maxsize=8)
def _mel_filters(num_mel_bins: int) -> torch.Tensor:
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=num_mel_bins, sampling_rate=WHISPER_SAMPLE_RATE)
    return torch.from_numpy(extractor.mel_filters).float()  # [n_fft // 2 + 1, num_mel_bins]


def whisper_log_mel(
    audio: torch.Tensor, lengths: torch.Tensor, num_mel_bins: int = 80
) -> tuple[torch.Tensor, torch.Tensor]:
    """int16 [batch, samples] -> log-mel [batch, mels, frames] and mel-frame mask, on audio's device.

    WhisperFeatureExtractor's maths (hann window, power spectrum, its mel filters, log10, floor at
    max - 8, (x + 4) / 4), with each clip's floor taken over the frames that touch its own samples,
    and zeros after its end as the extractor's 30 s padding has: a clip gives the same features
    in any batch. Frames: ceil(samples / 160), 100 a second.
    """
    batch, num_samples = audio.shape
    device = audio.device
    sample_mask = torch.arange(num_samples, device=device)[None, :] < lengths[:, None]
    waveform = audio.float() / INT16_SCALE * sample_mask
    half = WHISPER_N_FFT // 2
    # Centre the first window as torch.stft(center=True) does (reflect), zeros after each clip's end.
    left = waveform[:, 1 : half + 1].flip(-1)
    padded = torch.cat([left, waveform, waveform.new_zeros(batch, WHISPER_N_FFT)], dim=1)
    window = torch.hann_window(WHISPER_N_FFT, device=device)
    spectrum = torch.stft(padded, WHISPER_N_FFT, WHISPER_HOP, window=window, center=False, return_complex=True)
    power = spectrum.abs() ** 2  # [batch, freqs, frames]; frame i centred on sample i * 160
    mel = _mel_filters(num_mel_bins).to(device).T @ power
    log_mel = torch.clamp(mel, min=1e-10).log10()
    frame_starts = torch.arange(log_mel.shape[-1], device=device) * WHISPER_HOP - half
    touches_clip = frame_starts[None, :] < lengths[:, None]
    peak = log_mel.masked_fill(~touches_clip[:, None, :], float("-inf")).amax(dim=(1, 2), keepdim=True)
    log_mel = (torch.maximum(log_mel, peak - 8.0) + 4.0) / 4.0
    num_frames = -(-num_samples // WHISPER_HOP)
    frame_mask = torch.arange(num_frames, device=device)[None, :] < -(-lengths[:, None] // WHISPER_HOP)
    return log_mel[:, :, :num_frames], frame_mask


def run_whisper_encoder(
    encoder: nn.Module, log_mel: torch.Tensor, mel_mask: torch.Tensor, all_layers: bool = False
) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """WhisperEncoder.forward on the batch's own length (it insists on 30 s), padded frames masked.

    Features after a clip's end are zeroed before each conv, so a clip's frames do not depend on
    the batch; attention never looks at padded frames. 2 mel frames make one encoder frame (20 ms).
    """
    dtype = encoder.conv1.weight.dtype
    mel_keep = mel_mask[:, None, :].to(dtype)
    hidden = nn.functional.gelu(encoder.conv1(log_mel.to(dtype) * mel_keep)) * mel_keep
    hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
    frame_mask = mel_mask[:, ::2]
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
