"""A saved model as ONNX: logits from the inputs its feature extractor prepares, any batch size and length.

    wav2vec2 families   input_values [batch, samples] float32 in [-1, 1] at 16 kHz, attention_mask [batch, samples]
    Whisper             input_features [batch, 80, frames] (WhisperFeatureExtractor), attention_mask [batch, frames]
                        (1 on each clip's frames; pass 2 frames past the longest clip's end, as the
                        extractor's 30 s output has them: the encoder's convolutions read them)
    output              logits [batch, labels] (labels in config.json's id2label order)

Exported from the model's Hugging Face code (modeling_emotion_sweep.py), so ONNX Runtime, the
pipeline and `predict` compute the same thing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from workers.finetune.hub import modeling_emotion_sweep as hf_code

OPSET = 17  # STFT-free graphs; 17 is what current onnxruntime releases all run


class WaveformLogits(nn.Module):
    def __init__(self, model: hf_code.EmotionSweepForAudioClassification):
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_values=input_values, attention_mask=attention_mask).logits


class WhisperLogits(nn.Module):
    """Whisper on every given frame, padding masked (no trimming to the longest clip: its length is data)."""

    def __init__(self, model: hf_code.EmotionSweepForAudioClassification):
        super().__init__()
        self.model = model

    def forward(self, input_features: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        model = self.model
        states, frame_mask = hf_code.run_whisper_encoder(
            model.encoder, input_features, attention_mask.bool(), all_layers=model.config.pooling == "weighted_sum"
        )
        return model.head(model._pool(states, frame_mask))


def load_hf_model(model_dir: str | Path) -> hf_code.EmotionSweepForAudioClassification:
    return hf_code.EmotionSweepForAudioClassification.from_pretrained(str(model_dir)).eval()


def export_onnx(model_dir: str | Path, out_path: str | Path) -> Path:
    """Write the ONNX graph of the model in `model_dir` (a saved model with its config.json) to `out_path`."""
    model = load_hf_model(model_dir)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if model.whisper:
        wrapper, names = WhisperLogits(model), ["input_features", "attention_mask"]
        example = (torch.zeros(2, model.encoder.config.num_mel_bins, 200), torch.ones(2, 200, dtype=torch.long))
    else:
        wrapper, names = WaveformLogits(model), ["input_values", "attention_mask"]
        example = (torch.zeros(2, 16000), torch.ones(2, 16000, dtype=torch.long))
    length_axis = 2 if model.whisper else 1
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            example,
            str(out_path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes={
                names[0]: {0: "batch", length_axis: "length"},
                names[1]: {0: "batch", 1: "length"},
                "logits": {0: "batch"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    return out_path
