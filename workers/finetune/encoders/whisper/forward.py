"""Whisper's forward pass: WhisperFeatureExtractor's log-mel on the device, the encoder on the batch's own length."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn

# One source for the encoder pass: the code saved with every model for Hugging Face users runs it too.
from workers.finetune.hub.modeling_emotion_sweep import run_whisper_encoder  # noqa: F401 (Family.encode's)

# Whisper's feature extractor: 25 ms windows every 10 ms at 16 kHz; the encoder's conv2 halves the frames.
WHISPER_SAMPLE_RATE = 16_000
WHISPER_N_FFT = 400
WHISPER_HOP = 160
INT16_SCALE = 32768.0
WHISPER_MEL_FRAMES = 3000  # the extractor's 30 s window: 480,000 samples / 160


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
    """int16 [batch, samples] -> log-mel [batch, mels, frames + 2] and mel-frame mask [batch, frames],
    on audio's device. Frames: ceil(samples / 160), 100 a second.

    WhisperFeatureExtractor's maths (hann window, power spectrum, its mel filters, log10, floor at
    max - 8, (x + 4) / 4), with each clip's floor taken over the frames that touch its own samples.
    After a clip's end every frame is what the extractor's 30 s padding gives (zero samples: the
    clip's floor value; the frame straddling the end holds the clip's tail), so a clip gives the same
    features in any batch. The 2 frames beyond the batch's last (never beyond 30 s) are the right
    context the encoder's two convolutions read for the last frame, as they do in the extractor's output.
    """
    batch, num_samples = audio.shape
    device = audio.device
    sample_mask = torch.arange(num_samples, device=device)[None, :] < lengths[:, None]
    waveform = audio.float() / INT16_SCALE * sample_mask
    half = WHISPER_N_FFT // 2
    # Centre the first window as torch.stft(center=True) does (reflect), zeros after each clip's end
    # (enough for the 2 frames of right context).
    left = waveform[:, 1 : half + 1].flip(-1)
    padded = torch.cat([left, waveform, waveform.new_zeros(batch, WHISPER_N_FFT + 2 * WHISPER_HOP)], dim=1)
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
    return log_mel[:, :, : min(num_frames + 2, max(WHISPER_MEL_FRAMES, num_frames))], frame_mask
