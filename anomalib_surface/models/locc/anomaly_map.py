"""Anomaly map of Locc in the input image's coordinates.

The local distances are computed on the aligned image ``I_M``. They are up-sampled to ``I_M``'s
resolution and then warped back with the inverse of the image matching transform, so that the map
lies on the input image ``I_O`` (where the ground-truth masks are). Input pixels that the aligned
image does not cover (they were warped out of its frame) take the score of the nearest pixel it covers,
so a defect cut by ``I_M``'s frame extends to the input's border instead of ending in a normal-looking
``0`` (one lying wholly outside ``I_M`` stays unseen).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from .spatial_transformer import inverse_rigid_matrix, warp

__all__ = ["AnomalyMapGenerator"]


class AnomalyMapGenerator(nn.Module):
    """Turn per-position distances on ``I_M`` into a pixel map on ``I_O``."""

    @staticmethod
    def forward(
        distance: torch.Tensor,
        image_size: tuple[int, int] | torch.Size,
        params: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Up-sample ``[B, 1, h, w]`` distances to ``image_size`` and undo the alignment.

        Args:
            distance: Per-position distances on the aligned image.
            image_size: ``(H, W)`` of the input (and aligned) image.
            params: ``[B, 3]`` rigid transforms ``(Tx, Ty, θ)`` that aligned the input, or ``None``
                when the input was not aligned.

        Returns:
            ``[B, 1, H, W]`` anomaly map in input coordinates; nearest covered score where ``I_M`` does not reach.
        """
        anomaly_map = F.interpolate(distance, size=tuple(image_size), mode="bilinear", align_corners=False)
        if params is None:
            return anomaly_map
        return warp(anomaly_map, inverse_rigid_matrix(params, *anomaly_map.shape[-2:]), padding_mode="border")
