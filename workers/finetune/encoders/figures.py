"""What a trial plots of its encoder: the weighted layer sum's softmax weights."""

from __future__ import annotations

import torch


def layer_weights_figure(layer_weights: torch.Tensor | list[float], title: str = "layer weights"):
    """A bar chart of a weighted layer sum's softmax weights, from its logits (WeightedLayerSum.layer_weights).

    Index 0 is the embedding output, index k the output of transformer layer k.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    weights = torch.softmax(torch.as_tensor(layer_weights, dtype=torch.float32).detach().cpu(), dim=0)
    figure = Figure(figsize=(max(4.0, 0.3 * len(weights) + 2), 3))
    axes = figure.subplots()
    axes.bar(range(len(weights)), weights.numpy())
    axes.set_xlabel("layer (0: embedding output)")
    axes.set_ylabel("softmax weight")
    axes.set_title(title)
    figure.tight_layout()
    return figure
