"""Anomaly generator G of ToCoAD: rotated normal images with Perlin-shaped synthetic anomalies."""

from __future__ import annotations

from pathlib import Path

import torch
from kornia.geometry.conversions import convert_affinematrix_to_homography
from kornia.geometry.transform import affine, get_rotation_matrix2d
from torch import nn

from anomalib_surface.components import SyntheticAnomalyGenerator

__all__ = ["RotatedAnomalyGenerator"]


class RotatedAnomalyGenerator(nn.Module):
    """G: rotate normal images, then paste synthetic anomalies into the rotated images.

    Each image is rotated by a random multiple of 90° (only 0° or 180° for non-square images) plus a
    slight random angle in ``[-rotation_degrees, rotation_degrees]``, with reflection padding. The
    anomaly is a Perlin-noise mask AND-ed with a texture sample (pixels of the texture kept only
    inside the mask) blended into the rotated image, as done by the shared
    :class:`~anomalib_surface.components.SyntheticAnomalyGenerator`: the texture comes from
    ``anomaly_source_path`` (e.g. DTD) or, when ``None``, from another image of the batch.

    Args:
        rotation_degrees: Largest slight rotation (degrees) added to the multiple of 90°.
        anomaly_source_path: Folder of texture images, or ``None`` to use the training batch.
        probability: Fraction of images that receive an anomaly (the others stay normal).
        perlin_threshold: Perlin noise level above which a pixel is in the mask.

    Example:
        >>> generator = RotatedAnomalyGenerator(probability=1.0)
        >>> rotated, augmented, masks, rotations = generator(torch.rand(2, 3, 32, 32))
        >>> augmented.shape, masks.shape
        (torch.Size([2, 3, 32, 32]), torch.Size([2, 1, 32, 32]))
    """

    def __init__(
        self,
        rotation_degrees: float = 10.0,
        anomaly_source_path: str | Path | None = None,
        probability: float = 0.5,
        perlin_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0.0 <= rotation_degrees <= 45.0:  # noqa: PLR2004 - beyond 45° the 90° turns overlap
            msg = f"rotation_degrees must be in [0, 45], got {rotation_degrees}."
            raise ValueError(msg)
        self.rotation_degrees = rotation_degrees
        self.paste = SyntheticAnomalyGenerator(
            anomaly_source_path=anomaly_source_path,
            probability=probability,
            perlin_threshold=perlin_threshold,
        )

    def rotate(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate each ``[B, C, H, W]`` image by a random multiple of 90° plus a slight random angle.

        Returns:
            The rotated images ``[B, C, H, W]`` and the ``[B, 3, 3]`` matrices that map pixel coordinates of
            ``images`` to those of the rotated images (to align features of differently transformed views).
        """
        batch, _, height, width = images.shape
        quarter_turns = torch.randint(4, (batch,), device=images.device)
        if height != width:
            quarter_turns = 2 * (quarter_turns % 2)  # keep the shape of non-square images
        jitter = torch.empty(batch, device=images.device).uniform_(-self.rotation_degrees, self.rotation_degrees)
        angles = (90.0 * quarter_turns + jitter).to(images.dtype)
        center = images.new_tensor([(width - 1) / 2, (height - 1) / 2]).expand(batch, 2)
        matrices = get_rotation_matrix2d(center, angles, torch.ones_like(center))
        rotated = affine(images, matrices, padding_mode="reflection")
        return rotated, convert_affinematrix_to_homography(matrices)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Make synthetic anomalies from normal images.

        Args:
            images: ``[B, C, H, W]`` normal images in ``[0, 1]``.

        Returns:
            ``(rotated, augmented, masks, rotations)``: the rotated normal images ``[B, C, H, W]``, the same
            images with anomalies pasted ``[B, C, H, W]``, the anomaly masks ``[B, 1, H, W]`` (0/1;
            ``augmented`` equals ``rotated`` wherever the mask is 0) and the ``[B, 3, 3]`` rotation matrices
            (pixel coordinates of ``images`` to those of ``rotated``).
        """
        if images.ndim != 4:
            msg = f"images must be a [B, C, H, W] batch, got shape {tuple(images.shape)}."
            raise ValueError(msg)
        rotated, rotations = self.rotate(images)
        augmented, masks = self.paste(rotated)
        return rotated, augmented, masks, rotations
