"""What every neural trial kind puts on its encoder: the paper's classification head and masked mean pooling."""

from __future__ import annotations

import torch
from torch import nn


class ClassificationHead(nn.Module):
    """dense -> tanh -> dropout -> projection, as in the paper."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(pooled))))


def masked_mean(hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over the frames (or tokens) that hold data ([batch, frames, hidden] -> [batch, hidden])."""
    if frame_mask is None:
        return hidden.mean(dim=1)
    weights = frame_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
