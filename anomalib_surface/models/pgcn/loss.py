"""Losses of PGCN's two training phases.

Phase 1 (generator): mean squared error between the predicted and the real third patch.

Phase 2 (comparator, generator frozen):

- mask term: binary cross-entropy between the predicted difference mask (logits at 1/4 of the patch
  size) and the synthetic-anomaly mask averaged over the same 4x4 cells (soft targets in [0, 1]).
  The paper's printed mask term is degenerate; BCE is used instead.
- hinge term: ``max(0, 1 - y * P)`` with ``y = +1`` for a matching pair (no anomalous pixel in the real
  patch) and ``y = -1`` otherwise, and ``P = 2 * p - 1`` in ``[-1, 1]`` the similarity ``p`` (match
  probability) rescaled. Since ``|P| <= 1`` the hinge never clips: it equals ``2 * (1 - p)`` for matches
  and ``2 * p`` for mismatches.

``loss = mask_weight * mask term + hinge term``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["ComparatorLoss", "match_labels"]


def match_labels(masks: torch.Tensor) -> torch.Tensor:
    """Hinge labels of ``[M, 1, h, w]`` real-patch anomaly masks: ``+1`` if empty (match), else ``-1``."""
    return torch.where(masks.flatten(1).amax(dim=1) > 0, -1.0, 1.0)


class ComparatorLoss(nn.Module):
    """Mask BCE plus similarity hinge of the comparator (see the module docstring).

    Args:
        mask_weight: Weight of the mask term.
    """

    def __init__(self, mask_weight: float = 1.0) -> None:
        super().__init__()
        self.mask_weight = mask_weight

    def forward(
        self,
        match_logits: torch.Tensor,
        mask_logits: torch.Tensor,
        masks: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Loss terms of one batch of patch pairs.

        Args:
            match_logits: ``[M]`` logits of the match probability.
            mask_logits: ``[M, 1, h', w']`` difference-mask logits.
            masks: ``[M, 1, h, w]`` synthetic-anomaly masks of the real patches (0/1).

        Returns:
            ``{"mask": ..., "hinge": ..., "loss": mask_weight * mask + hinge}`` scalar tensors.
        """
        mask_targets = F.adaptive_avg_pool2d(masks, mask_logits.shape[-2:])
        mask_term = F.binary_cross_entropy_with_logits(mask_logits, mask_targets)
        similarity = 2 * torch.sigmoid(match_logits) - 1
        hinge = torch.clamp(1 - match_labels(masks) * similarity, min=0).mean()
        return {"mask": mask_term, "hinge": hinge, "loss": self.mask_weight * mask_term + hinge}
