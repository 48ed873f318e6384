"""Anomaly map of ToCoAD: nearest-neighbour patch distances upsampled to the image and smoothed (as PatchCore)."""

from __future__ import annotations

import torch
from anomalib.models.components import GaussianBlur2d
from torch import nn
from torch.nn import functional as F  # noqa: N812

__all__ = ["AnomalyMapGenerator"]


class AnomalyMapGenerator(nn.Module):
    """Upsample ``[B, 1, h, w]`` patch scores to the image (nearest) and blur them with a Gaussian of ``sigma`` pixels.

    Args:
        sigma: Gaussian standard deviation in pixels.
    """

    def __init__(self, sigma: float = 4) -> None:
        super().__init__()
        self.blur = GaussianBlur2d(sigma=sigma, channels=1)

    def forward(self, patch_scores: torch.Tensor, image_size: tuple[int, int] | torch.Size) -> torch.Tensor:
        """``[B, 1, h, w]`` patch scores -> ``[B, 1, H, W]`` anomaly map for ``image_size = (H, W)``."""
        return self.blur(F.interpolate(patch_scores, size=(image_size[0], image_size[1])))
