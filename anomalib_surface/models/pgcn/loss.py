"""Losses of PGCN's two training phases.

Phase 1 (generator): mean squared error between the predicted and the real third patch.

Phase 2 (comparator, generator frozen):

- mask term: binary cross-entropy between the predicted difference mask (logits at 1/4 of the patch
  size) and the pair's difference mask averaged over the same 4x4 cells (soft targets in [0, 1]).
  The paper's printed mask term is degenerate; BCE is used instead.
- match term: binary cross-entropy on the match logit, target 1 for a matching pair (empty difference
  mask) and 0 otherwise. The paper's hinge ``max(0, 1 - y * P)`` on ``P = 2 * p - 1`` is linear in the
  probability ``p``, so its gradient with respect to the logit, ``2 * p * (1 - p)``, vanishes on
  confident mistakes; the logistic loss's gradient ``p - target`` does not.

``loss = mask_weight * mask term + match term``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

__all__ = ["ComparatorLoss", "match_targets"]


def match_targets(masks: torch.Tensor) -> torch.Tensor:
    """Match targets of ``[M, 1, h, w]`` difference masks: ``1.0`` if empty (match), else ``0.0``."""
    return (masks.flatten(1).amax(dim=1) <= 0).float()


class ComparatorLoss(nn.Module):
    """Mask BCE plus match BCE of the comparator (see the module docstring).

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
            masks: ``[M, 1, h, w]`` difference masks of the pairs (0/1).

        Returns:
            ``{"mask": ..., "match": ..., "loss": mask_weight * mask + match}`` scalar tensors.
        """
        mask_targets = F.adaptive_avg_pool2d(masks, mask_logits.shape[-2:])
        mask_term = F.binary_cross_entropy_with_logits(mask_logits, mask_targets)
        match_term = F.binary_cross_entropy_with_logits(match_logits, match_targets(masks))
        return {"mask": mask_term, "match": match_term, "loss": self.mask_weight * mask_term + match_term}
