"""Losses of Locc: the local one-class loss (eq. 3) and its outlier-exposure form (eq. 5).

The image matching module is trained with a plain mean squared error between the aligned image
and the template (``torch.nn.functional.mse_loss``); it needs no class of its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["LocalCentreLoss", "defect_positions", "half_cosine_distance"]


def half_cosine_distance(features: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Half cosine distance ``0.5 · (1 - cos(F_M, F_C))`` in ``[0, 1]`` at every position.

    Args:
        features: ``[B, D, h, w]`` features ``F_M``.
        centres: ``[D, h, w]`` local centres, or ``[D, 1, 1]`` for one global centre.

    Returns:
        ``[B, h, w]`` distances.
    """
    return 0.5 * (1.0 - F.cosine_similarity(features, centres.unsqueeze(0), dim=1))


def defect_positions(masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Feature positions that are mostly defect: ``[B, 1, H, W]`` 0/1 pixel masks to ``[B, h, w]`` 0/1.

    A position counts as defective when more than half of the pixels it covers are (area average > 0.5).
    """
    return (F.interpolate(masks.float(), size=size, mode="area") > 0.5).float()[:, 0]


class LocalCentreLoss(nn.Module):
    """Pull normal features to their centre, push generated defects at least ``margin`` away.

    Per position with half cosine distance ``d = 0.5 · (1 - cos(F_M, F_C))``:

    - normal position: ``d`` (eq. 3);
    - defect position (outlier exposure): ``max(0, margin - d)`` (eq. 5).

    The loss is the mean over all positions of the batch.

    Args:
        margin: ``δ`` of eq. 5. Defaults to ``0.1`` as in the paper.
    """

    def __init__(self, margin: float = 0.1) -> None:
        super().__init__()
        if not 0.0 < margin <= 1.0:
            msg = f"margin must be in (0, 1] (half cosine distances lie in [0, 1]), got {margin}."
            raise ValueError(msg)
        self.margin = margin

    def forward(
        self,
        features: torch.Tensor,
        centres: torch.Tensor,
        masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of features ``[B, D, h, w]`` against centres ``[D, h, w]`` / ``[D, 1, 1]``.

        Args:
            features: Output ``F_M`` of the mapping network.
            centres: Local centres ``F_C`` (or one global centre).
            masks: ``[B, 1, H, W]`` 0/1 masks of generated defects at any resolution, or ``None``
                when no defects were generated (eq. 3 only).
        """
        distance = half_cosine_distance(features, centres)
        if masks is None:
            return distance.mean()
        defect = defect_positions(masks, distance.shape[-2:])
        return ((1.0 - defect) * distance + defect * (self.margin - distance).clamp_min(0.0)).mean()
