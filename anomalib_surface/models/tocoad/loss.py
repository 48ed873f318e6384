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

    ``L = -(cos(p_a, sg(z_b)) + cos(p_b, sg(z_a))) / 2``, averaged over the batch, where ``z`` are
    projector outputs and ``p`` predictor outputs of two views ``a``, ``b`` of the same images.
    """

    def forward(self, p_a: torch.Tensor, p_b: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        """Loss of ``[B, D]`` predictions ``p_a, p_b`` and projections ``z_a, z_b``."""
        similarity_a = F.cosine_similarity(p_a, z_b.detach(), dim=1).mean()
        similarity_b = F.cosine_similarity(p_b, z_a.detach(), dim=1).mean()
        return -(similarity_a + similarity_b) / 2


class NegativeGuidanceLoss(nn.Module):
    """Stage 2: push the features that D marks anomalous away from the normal features at the same place.

    ``L = sum_i w_i * max(0, cos(f_i^anomalous, sg(f_i^normal)) - margin) / max(sum_i w_i, eps)`` over all
    patch positions ``i`` of the batch, where ``w_i`` is D's (frozen, detached) anomaly probability of
    patch ``i`` of the synthetic-anomaly image and ``f^normal`` the features of the same image before
    the anomaly was pasted.

    Args:
        margin: Cosine similarity in ``[-1, 1]`` below which a patch is no longer pushed.
    """

    def __init__(self, margin: float = 0.5, eps: float = 1e-6) -> None:
        super().__init__()
        if not -1.0 <= margin <= 1.0:
            msg = f"negative_margin must be in [-1, 1], got {margin}."
            raise ValueError(msg)
        self.margin = margin
        self.eps = eps

    def forward(self, anomalous: torch.Tensor, normal: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Loss of ``[B, C, h, w]`` anomalous and normal features with ``[B, 1, h, w]`` weights in ``[0, 1]``."""
        similarity = F.cosine_similarity(anomalous, normal.detach(), dim=1).unsqueeze(1)
        weights = weights.detach()
        return (weights * (similarity - self.margin).clamp_min(0)).sum() / weights.sum().clamp_min(self.eps)
