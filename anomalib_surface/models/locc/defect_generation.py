"""Defect generation module (DGM) of Locc: darkened, lightened or foreign regions in aligned images.

Regions are Perlin shapes (:func:`anomalib_surface.components.perlin_masks`) or axis-aligned
rectangles (:func:`rectangle_masks`). Foreign content, the opacity and the soft region edges come
from the shared :class:`~anomalib_surface.components.SyntheticAnomalyGenerator`: foreign content is
another training image of the batch (re-oriented and re-coloured) or an image of
``anomaly_source_path``. The global torch RNG drives all choices.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from anomalib_surface.components import SyntheticAnomalyGenerator, perlin_masks

__all__ = ["DEFECT_KINDS", "MASK_SHAPES", "DefectGenerator", "rectangle_masks"]

DEFECT_KINDS = ("darken", "lighten", "foreign")
MASK_SHAPES = ("perlin", "rectangle")


def rectangle_masks(
    batch_size: int,
    height: int,
    width: int,
    side_range: tuple[float, float] = (0.15, 0.4),
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Random axis-aligned rectangles, ``[B, 1, H, W]`` 0/1, sides a random fraction ``side_range`` of the image's."""
    low, high = side_range
    sides = torch.empty(batch_size, 2, device=device).uniform_(low, high) * torch.tensor([height, width], device=device)
    corners = torch.rand(batch_size, 2, device=device) * (torch.tensor([height, width], device=device) - sides)
    rows = torch.arange(height, device=device).view(1, height, 1)
    cols = torch.arange(width, device=device).view(1, 1, width)
    top, left = corners[:, 0].view(-1, 1, 1), corners[:, 1].view(-1, 1, 1)
    bottom, right = top + sides[:, 0].view(-1, 1, 1), left + sides[:, 1].view(-1, 1, 1)
    inside = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    return inside.float().unsqueeze(1)


class DefectGenerator(nn.Module):
    """Paste one generated defect into a random subset of the images.

    Each selected image gets one region, whose content is, with equal chance, the image darkened
    (times ``U(0.2, 0.7)``), lightened (``x + (1 - x) · U(0.3, 0.7)``) or foreign content.

    Args:
        anomaly_source_path: Folder of foreign images; ``None`` uses other training images of the batch.
        probability: Fraction of images that receive a defect.
        mask_shape: ``"rectangle"`` (default; large enough for eq. 5) or ``"perlin"`` (irregular).
    """

    def __init__(
        self,
        anomaly_source_path: str | Path | None = None,
        probability: float = 0.5,
        mask_shape: str = "rectangle",
    ) -> None:
        super().__init__()
        if mask_shape not in MASK_SHAPES:
            msg = f"mask_shape must be one of {MASK_SHAPES}, got {mask_shape!r}."
            raise ValueError(msg)
        self.mask_shape = mask_shape
        self.synthesiser = SyntheticAnomalyGenerator(anomaly_source_path=anomaly_source_path, probability=probability)

    def check_disjoint_from(self, test_image_paths: Iterable[str | Path]) -> None:
        """Refuse a foreign source folder that overlaps the test split (see ``SyntheticAnomalyGenerator``)."""
        self.synthesiser.check_disjoint_from(test_image_paths)

    def masks(self, images: torch.Tensor, every_image: bool = False) -> torch.Tensor:
        """One region per selected image (each with ``probability``, or all with ``every_image``), ``[B, 1, H, W]`` 0/1.

        Unselected images get an all-zero mask.
        """
        batch, _, height, width = images.shape
        if self.mask_shape == "perlin":
            masks = perlin_masks(batch, height, width, self.synthesiser.perlin_threshold, images.device)
        else:
            masks = rectangle_masks(batch, height, width, device=images.device)
        if every_image:
            return masks
        selected = torch.rand(batch, device=images.device) < self.synthesiser.probability
        return masks * selected.float().view(-1, 1, 1, 1)

    def fill(self, images: torch.Tensor) -> torch.Tensor:
        """Defect content ``[B, C, H, W]`` in ``[0, 1]``: darkened, lightened or foreign, per image."""
        shape = (images.shape[0], 1, 1, 1)
        kind = torch.randint(len(DEFECT_KINDS), shape, device=images.device)
        darkened = images * torch.empty(shape, device=images.device).uniform_(0.2, 0.7)
        lightened = images + (1.0 - images) * torch.empty(shape, device=images.device).uniform_(0.3, 0.7)
        is_foreign = kind == DEFECT_KINDS.index("foreign")
        foreign = self.synthesiser.fill(images) if bool(is_foreign.any()) else images
        return torch.where(kind == DEFECT_KINDS.index("darken"), darkened, torch.where(is_foreign, foreign, lightened))

    def forward(self, images: torch.Tensor, every_image: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Add defects to ``[B, C, H, W]`` images in ``[0, 1]`` (to a random ``probability`` share, or to ``every_image``).

        Returns:
            Images with defects ``[B, C, H, W]`` (unchanged outside the masks) and 0/1 masks ``[B, 1, H, W]``.
        """
        masks = self.masks(images, every_image)
        alpha = self.synthesiser.alpha(masks)
        return images * (1.0 - alpha) + self.fill(images) * alpha, masks
