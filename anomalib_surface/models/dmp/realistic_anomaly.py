"""Realistic synthetic anomalies: geometry-varied fills lit like the surface around them.

:class:`RealisticAnomalyGenerator` keeps everything of :class:`SyntheticAnomalyGenerator` (Perlin-shaped
masks, fill from a source folder or from the training batch with colour changes, random opacity, soft
edges, :meth:`~SyntheticAnomalyGenerator.check_disjoint_from`) and adds the two things that make a pasted
region hard to tell from a real defect by low-level statistics:

- **geometry changes of the fill**: a random rotation and scaling of the fill texture, so that a defect
  cut from another training image does not repeat the surface's texture at the same scale and angle;
- **lighting from the surroundings**: the fill's local brightness is moved towards the local brightness of
  the *uncovered* surface around the region, estimated at every pixel by a normalised (masked) Gaussian
  convolution over the pixels outside the mask. Brightness gradients across the surface (vignetting, a
  light from one side) are thus continued through the defect instead of being replaced by a flat shift.

Used by Dmp (Peng et al., Sensors 2024) and available to every model that trains on synthetic defects.
"""

from __future__ import annotations

import math
from pathlib import Path

import kornia
import torch

from anomalib_surface.components.synthetic_anomaly import SyntheticAnomalyGenerator

__all__ = ["RealisticAnomalyGenerator", "local_mean"]


def _blur(tensor: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur with zero padding, so that weights outside the image count as absent."""
    kernel = 2 * math.ceil(3 * sigma) + 1
    return kornia.filters.gaussian_blur2d(tensor, (kernel, kernel), (sigma, sigma), border_type="constant")


def local_mean(images: torch.Tensor, weights: torch.Tensor, sigma: float, prior_weight: float = 1e-2) -> torch.Tensor:
    """Weighted local mean of ``images`` by normalised Gaussian convolution.

    Args:
        images: ``[B, C, H, W]`` values.
        weights: ``[B, 1, H, W]`` non-negative pixel weights (e.g. 1 outside a mask, 0 inside).
        sigma: Standard deviation (pixels) of the Gaussian window.
        prior_weight: Weight of each image's global weighted mean, used where no weighted pixel is
            within reach of the window (deep inside a large region).

    Returns:
        ``[B, C, H, W]``: at every pixel, the Gaussian-weighted mean of the weighted pixels around it.
    """
    total = weights.sum(dim=(2, 3), keepdim=True)
    global_mean = torch.where(
        total > 0,
        (images * weights).sum(dim=(2, 3), keepdim=True) / total.clamp_min(1e-6),
        images.mean(dim=(2, 3), keepdim=True),
    )
    return (_blur(images * weights, sigma) + prior_weight * global_mean) / (_blur(weights, sigma) + prior_weight)


class RealisticAnomalyGenerator(SyntheticAnomalyGenerator):
    """Synthetic anomalies with geometry-varied fills and lighting matched to the surrounding surface.

    Args:
        anomaly_source_path: Folder of source images (e.g. DTD textures or crops of real defects);
            ``None`` fills from the training batch itself (another image, re-oriented and re-coloured).
        probability: Fraction of images of a batch that receive an anomaly.
        opacity_range: ``(min, max)`` opacity of the pasted fill, drawn uniformly per image.
        soft_edge_sigma: Standard deviation (pixels) of the fade at the inside border of the region.
        match_lighting: Strength in ``[0, 1]`` with which the fill's local brightness is moved to the
            brightness of the surrounding surface (``0``: off, ``1``: same local mean per channel).
        perlin_threshold: Perlin noise level above which a pixel is in the region.
        lighting_sigma: Size of the lighting window, as the standard deviation of its Gaussian in
            fractions of the image's shorter side.
        scale_range: ``(min, max)`` random scaling of the fill texture (``(1, 1)``: no scaling).
        rotation: Maximum random rotation of the fill texture in degrees (``0``: none).

    Example:
        >>> generator = RealisticAnomalyGenerator(probability=1.0, match_lighting=1.0)
        >>> augmented, masks = generator(torch.rand(2, 3, 64, 64))
        >>> augmented.shape, masks.shape
        (torch.Size([2, 3, 64, 64]), torch.Size([2, 1, 64, 64]))
    """

    def __init__(
        self,
        anomaly_source_path: str | Path | None = None,
        probability: float = 0.5,
        opacity_range: tuple[float, float] = (0.2, 1.0),
        soft_edge_sigma: float = 1.0,
        match_lighting: float = 0.5,
        perlin_threshold: float = 0.5,
        lighting_sigma: float = 0.05,
        scale_range: tuple[float, float] = (0.5, 2.0),
        rotation: float = 180.0,
    ) -> None:
        super().__init__(
            anomaly_source_path=anomaly_source_path,
            probability=probability,
            opacity_range=opacity_range,
            soft_edge_sigma=soft_edge_sigma,
            match_lighting=match_lighting,
            perlin_threshold=perlin_threshold,
        )
        if lighting_sigma <= 0:
            msg = f"lighting_sigma must be > 0 (a fraction of the image side), got {lighting_sigma}."
            raise ValueError(msg)
        low, high = scale_range
        if not 0 < low <= high:
            msg = f"scale_range must satisfy 0 < min <= max, got {scale_range}."
            raise ValueError(msg)
        if not 0 <= rotation <= 180:
            msg = f"rotation must be in [0, 180] degrees, got {rotation}."
            raise ValueError(msg)
        self.lighting_sigma = lighting_sigma
        self.geometry = kornia.augmentation.RandomAffine(
            degrees=rotation,
            scale=(float(low), float(high)),
            padding_mode="reflection",
            p=1.0,
        )

    def fill(self, images: torch.Tensor) -> torch.Tensor:
        """Re-coloured fill (see the base class) randomly rotated and scaled, ``[B, C, H, W]`` in ``[0, 1]``."""
        return self.geometry(super().fill(images)).clamp(0.0, 1.0)

    def _match_lighting(self, fill: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Move the fill's local mean inside each region to the local mean of the surface around it."""
        if self.match_lighting == 0:
            return fill
        sigma = self.lighting_sigma * min(images.shape[-2:])
        surroundings = local_mean(images, 1.0 - masks, sigma)
        fill_lighting = local_mean(fill, masks, sigma)
        return (fill + self.match_lighting * (surroundings - fill_lighting)).clamp(0.0, 1.0)
