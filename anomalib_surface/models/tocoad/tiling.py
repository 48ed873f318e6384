"""Tiled feature extraction with anomalib's :class:`~anomalib.data.utils.tiler.Tiler` (large images)."""

from __future__ import annotations

import torch
from anomalib.data.utils.tiler import ImageUpscaleMode, Tiler
from torch.nn import functional as F  # noqa: N812

__all__ = ["untile_features"]


def untile_features(tiler: Tiler, tiles: torch.Tensor) -> torch.Tensor:
    """Feature map ``[B, C, h, w]`` of whole images from the features ``[B * T, C, t_h, t_w]`` of their tiles.

    ``tiler.tile`` must have been called on the ``[B, 3, H, W]`` images. anomalib's ``Tiler.untile`` keeps the
    border that tiling adds to reach whole tiles (padding mode), or resizes to the image size ``H x W``
    (interpolation mode); this returns the features of the image itself at the tiles' feature scale:
    ``h = round(H * t_h / tile_height)``, ``w = round(W * t_w / tile_width)``.
    """
    scale_h, scale_w = tiles.shape[-2] / tiler.tile_size_h, tiles.shape[-1] / tiler.tile_size_w
    size = (round(tiler.input_h * scale_h), round(tiler.input_w * scale_w))
    features = tiler.untile(tiles)
    if tiler.mode == ImageUpscaleMode.PADDING:
        return features[..., : size[0], : size[1]]
    return F.interpolate(features, size=size, mode="bilinear")
