"""Losses of the three ToCoAD training stages (written out in the model README)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torchvision.ops import sigmoid_focal_loss

__all__ = ["FocalLoss", "NegativeGuidanceLoss", "SimSiamLoss"]


class FocalLoss(nn.Module):
    """Stage 1: binary focal loss of D's anomaly logits against G's masks.

    ``FL = mean( -a_t (1 - p_t)^gamma log p_t )`` with ``p_t = p`` and ``a_t = alpha`` on anomalous
    pixels, ``p_t = 1 - p`` and ``a_t = 1 - alpha`` on normal ones (torchvision's
    ``sigmoid_focal_loss``).

    Args:
        alpha: Weight of the anomalous class in ``[0, 1]`` (0.5: both classes equal).
        gamma: Focusing exponent ``>= 0`` (0: weighted cross-entropy).
    """

    def __init__(self, alpha: float = 0.5, gamma: float = 2.0) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            msg = f"focal_alpha must be in [0, 1], got {alpha}."
            raise ValueError(msg)
        if gamma < 0:
            msg = f"focal_gamma must be >= 0, got {gamma}."
            raise ValueError(msg)
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Mean focal loss of ``[B, 1, H, W]`` logits against ``[B, 1, H, W]`` 0/1 masks."""
        return sigmoid_focal_loss(logits, masks, alpha=self.alpha, gamma=self.gamma, reduction="mean")


class SimSiamLoss(nn.Module):
    """Stage 2: symmetric negative cosine similarity of SimSiam with stop-gradient on the targets.

    ``L = -(cos(p_a, sg(z_b)) + cos(p_b, sg(z_a))) / 2``, where ``z`` are projector outputs and ``p`` predictor
    outputs of two views ``a``, ``b`` of the same images: ``[B, D]`` pooled vectors (averaged over the batch), or
    ``[B, D, h, w]`` patch maps whose targets have been warped into the frame of the predicting view, averaged over
    the patches that both views see (``valid_a``, ``valid_b``: ``[B, 1, h, w]`` 0/1 masks in the frames of ``a``
    and ``b``).
    """

    def forward(
        self,
        p_a: torch.Tensor,
        p_b: torch.Tensor,
        z_a: torch.Tensor,
        z_b: torch.Tensor,
        valid_a: torch.Tensor | None = None,
        valid_b: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of predictions ``p_a, p_b`` and (aligned) projections ``z_b`` (frame of a), ``z_a`` (frame of b)."""
        similarity_a = _masked_mean(F.cosine_similarity(p_a, z_b.detach(), dim=1), valid_a)
        similarity_b = _masked_mean(F.cosine_similarity(p_b, z_a.detach(), dim=1), valid_b)
        return -(similarity_a + similarity_b) / 2


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (``[B]`` or ``[B, h, w]``) over the positions where ``mask`` (``[B, 1, h, w]``) is 1.

    Without any selected position the result is a zero that keeps the graph (no gradient, no NaN).
    """
    if mask is None:
        return values.mean()
    mask = mask.reshape(values.shape).to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


class NegativeGuidanceLoss(nn.Module):
    """Stage 2 (our reading of the paper's negative guidance): push anomalous patch features away from normal ones.

    ``L = mean_{i in S} max(0, cos(f_i^anomalous, sg(f_i^normal)) - margin)`` over the set ``S`` of patch
    positions marked anomalous (by the frozen D, or by the synthetic mask), where ``f^normal`` are the features of
    the same image before the anomaly was pasted. Averaging over ``S`` only (not over every patch of the batch)
    keeps the term's size independent of how much of the batch is anomalous; without marked patches it is 0.

    Args:
        margin: Cosine similarity in ``[-1, 1]`` below which a patch is no longer pushed.
    """

    def __init__(self, margin: float = 0.5) -> None:
        super().__init__()
        if not -1.0 <= margin <= 1.0:
            msg = f"negative_margin must be in [-1, 1], got {margin}."
            raise ValueError(msg)
        self.margin = margin

    def forward(self, anomalous: torch.Tensor, normal: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
        """Loss of ``[B, C, h, w]`` anomalous and normal features over the ``[B, 1, h, w]`` 0/1 ``selected`` patches."""
        similarity = F.cosine_similarity(anomalous, normal.detach(), dim=1)
        return _masked_mean((similarity - self.margin).clamp_min(0), selected.detach())
