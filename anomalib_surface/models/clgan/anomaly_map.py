"""Anomaly map of CLGAN: the per-channel reconstruction residual reduced to one smoothed map."""

from __future__ import annotations

import torch
from anomalib.models.components import GaussianBlur2d
from torch import nn

__all__ = ["AnomalyMapGenerator"]

CHANNEL_REDUCTIONS = ("max", "mean")


class AnomalyMapGenerator(nn.Module):
    """Reduce a per-channel residual ``|x - G(x)|`` to one map and smooth it.

    Rule: the channels are combined per pixel by their maximum (``"max"``, default: a pixel is as anomalous
    as its most deviating colour channel, the single-map counterpart of the paper's per-channel
    segmentation) or by their mean (``"mean"``, less noisy when all channels deviate together), then the
    map is blurred with a Gaussian of standard deviation ``sigma`` pixels (reflect padding).

    Args:
        channel_reduction (str): ``"max"`` or ``"mean"``. Defaults to ``"max"``.
        sigma (float): Gaussian standard deviation in pixels; ``0`` disables smoothing. Defaults to ``4.0``.
    """

    def __init__(self, channel_reduction: str = "max", sigma: float = 4.0) -> None:
        super().__init__()
        if channel_reduction not in CHANNEL_REDUCTIONS:
            msg = f"channel_reduction must be one of {CHANNEL_REDUCTIONS}, got {channel_reduction!r}."
            raise ValueError(msg)
        if sigma < 0:
            msg = f"sigma must be >= 0, got {sigma}."
            raise ValueError(msg)
        self.channel_reduction = channel_reduction
        self.blur = GaussianBlur2d(sigma=float(sigma), channels=1) if sigma > 0 else nn.Identity()

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` non-negative residual -> ``[B, 1, H, W]`` smoothed anomaly map."""
        if self.channel_reduction == "max":
            anomaly_map = residual.amax(dim=1, keepdim=True)
        else:
            anomaly_map = residual.mean(dim=1, keepdim=True)
        return self.blur(anomaly_map)
