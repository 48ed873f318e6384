"""Per-epoch checks of stages 1 and 2 on held-out synthetic anomalies (our addition; the paper reports none).

The check set is drawn once, at the first training step, from the first training batch with a fixed seed: each
image rotated by G and given a synthetic anomaly. D never trains on these anomalies (it trains on fresh draws), so
its average precision on them says whether stage 1 still improves, and whether stage 2 keeps F readable by D. The
nearest-neighbour gap says what stage 2 does to the memory bank: a bank of the normal patch features of the first
half of the check images, queried by the second half's normal and anomalous patches.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F  # noqa: N812
from torchmetrics.functional.classification import binary_average_precision

from .torch_model import TocoadModel

__all__ = ["HeldOutCheck"]

MIN_IMAGES_FOR_GAP = 2
"""The gap needs one image for the bank and one to query it."""


class HeldOutCheck:
    """Held-out synthetic anomalies and the two measures computed on them.

    Args:
        normal: ``[N, 3, H, W]`` rotated normal images in ``[0, 1]``.
        anomalous: The same images with synthetic anomalies, ``[N, 3, H, W]``.
        masks: ``[N, 1, H, W]`` 0/1 anomaly masks.
    """

    def __init__(self, normal: torch.Tensor, anomalous: torch.Tensor, masks: torch.Tensor) -> None:
        self.normal, self.anomalous, self.masks = normal, anomalous, masks

    @torch.no_grad()
    def discriminator_ap(self, model: TocoadModel, normalize: Callable[[torch.Tensor], torch.Tensor]) -> float:
        """Pixel average precision of D's anomaly probabilities (upsampled to the image size) against the masks."""
        training = model.discriminator.training
        model.discriminator.eval()
        logits = model.discriminate(model.embed(normalize(self.anomalous)))
        model.discriminator.train(training)
        probabilities = torch.sigmoid(F.interpolate(logits, size=self.masks.shape[-2:], mode="bilinear"))
        return float(binary_average_precision(probabilities.flatten(), self.masks.flatten().long()))

    @torch.no_grad()
    def nearest_neighbour_gap(self, model: TocoadModel, normalize: Callable[[torch.Tensor], torch.Tensor]) -> float | None:
        """``d_anomalous / d_normal - 1`` for the mean nearest-neighbour distances to a bank of normal patches.

        The bank holds every patch of the first half of the normal images; ``d_normal`` averages over every patch of
        the other half, ``d_anomalous`` over their patches at least half covered by an anomaly. ``None`` with fewer
        than two images or no such patch.
        """
        half = self.normal.shape[0] // 2
        normal = model.embed(normalize(self.normal))
        anomalous = model.embed(normalize(self.anomalous[half:]))
        patch_masks = F.interpolate(self.masks[half:], size=anomalous.shape[-2:], mode="area") >= 0.5  # noqa: PLR2004
        if half < MIN_IMAGES_FOR_GAP // 2 or not patch_masks.any():
            return None
        bank = _patches(normal[:half])
        d_normal = torch.cdist(_patches(normal[half:]), bank).amin(dim=1).mean()
        anomalous_patches = anomalous.permute(0, 2, 3, 1)[patch_masks.squeeze(1)]
        d_anomalous = torch.cdist(anomalous_patches, bank).amin(dim=1).mean()
        return float(d_anomalous / d_normal.clamp_min(1e-12) - 1)


def _patches(embedding: torch.Tensor) -> torch.Tensor:
    """``[B * h * w, C]`` patch features of a ``[B, C, h, w]`` embedding."""
    return embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1])
