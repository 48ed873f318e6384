"""Losses of Dmp.

Reconstruction (clean image ``I``, reconstruction ``R`` of its synthetically damaged version)::

    L_rec = l2_weight * MSE(R, I) + ssim_weight * (1 - SSIM_11(R, I)) + feature_weight * L_feat(R, I)
    L_feat = mean over feature levels l of mean over pixels of (1 - cos(phi_l(R), phi_l(I)))

with ``(l2_weight, ssim_weight, feature_weight) = (1, 0.8, 0.2)`` by default (the paper's
``lambda_1, lambda_2, lambda_3``), ``SSIM_11`` the mean SSIM with an 11 x 11 Gaussian window, and ``phi`` the
feature extractor (cosine distance along channels, so the term does not depend on the feature scale).

Defect prediction (logits ``D``, synthetic mask ``M``)::

    L_seg = FocalLoss_{gamma=2}(D, M) + SmoothL1(sigmoid(D), M)

The total loss is ``L_rec + L_seg``.
"""

from __future__ import annotations

import kornia
import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812
from torchvision.ops import sigmoid_focal_loss

__all__ = ["DmpLoss", "FeatureConsistencyLoss"]


class FeatureConsistencyLoss(nn.Module):
    """Mean cosine distance between features of the reconstruction and of the clean image.

    Args:
        extractor: Module mapping ``[B, 3, H, W]`` images to a list of ``[B, C_l, H_l, W_l]`` feature maps.
            Gradients reach the reconstruction through it; they reach its parameters only if those require
            gradients (the ``"gradient"`` ablation).
    """

    def __init__(self, extractor: nn.Module) -> None:
        super().__init__()
        self.extractor = extractor

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss for ``[B, 3, H, W]`` reconstructions and clean targets."""
        distances = [
            (1.0 - F.cosine_similarity(rec, tgt, dim=1)).mean()
            for rec, tgt in zip(self.extractor(reconstruction), self.extractor(target), strict=True)
        ]
        return torch.stack(distances).mean()


class DmpLoss(nn.Module):
    """Reconstruction loss (L2 + SSIM + feature consistency) plus defect-map loss (focal + smooth L1).

    Args:
        feature_extractor: Extractor of the feature-consistency term; ``None`` drops the term.
        l2_weight: Weight of the L2 term (paper's lambda_1).
        ssim_weight: Weight of the SSIM term (paper's lambda_2).
        feature_weight: Weight of the feature-consistency term (paper's lambda_3).
        focal_gamma: Focusing parameter of the focal loss.
    """

    def __init__(
        self,
        feature_extractor: nn.Module | None = None,
        l2_weight: float = 1.0,
        ssim_weight: float = 0.8,
        feature_weight: float = 0.2,
        focal_gamma: float = 2.0,
    ) -> None:
        super().__init__()
        for name, value in (
            ("l2_weight", l2_weight),
            ("ssim_weight", ssim_weight),
            ("feature_weight", feature_weight),
            ("focal_gamma", focal_gamma),
        ):
            if value < 0:
                msg = f"{name} must be >= 0, got {value}."
                raise ValueError(msg)
        self.feature_consistency = FeatureConsistencyLoss(feature_extractor) if feature_extractor is not None else None
        self.l2_weight = l2_weight
        self.ssim_weight = ssim_weight
        self.feature_weight = feature_weight
        self.focal_gamma = focal_gamma

    def forward(
        self,
        images: torch.Tensor,
        reconstruction: torch.Tensor,
        masks: torch.Tensor,
        logits: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Loss terms and their weighted sum.

        Args:
            images: Clean images ``[B, 3, H, W]`` in ``[0, 1]``.
            reconstruction: Reconstructions of the synthetically damaged images ``[B, 3, H, W]``.
            masks: Synthetic defect masks ``[B, 1, H, W]`` of 0/1.
            logits: Predicted defect-map logits ``[B, 1, H, W]``.

        Returns:
            ``{"loss": total, "l2": ..., "ssim": ..., "feature": ... (if enabled), "focal": ..., "smooth_l1": ...}``.
        """
        terms = {
            "l2": F.mse_loss(reconstruction, images),
            "ssim": 1.0 - kornia.metrics.ssim(reconstruction, images, window_size=11).mean(),
        }
        total = self.l2_weight * terms["l2"] + self.ssim_weight * terms["ssim"]
        if self.feature_consistency is not None:
            terms["feature"] = self.feature_consistency(reconstruction, images)
            total = total + self.feature_weight * terms["feature"]
        terms["focal"] = sigmoid_focal_loss(logits, masks, alpha=-1, gamma=self.focal_gamma, reduction="mean")
        terms["smooth_l1"] = F.smooth_l1_loss(torch.sigmoid(logits), masks)
        return {"loss": total + terms["focal"] + terms["smooth_l1"], **terms}
