"""Synthetic anomalies for self-supervised training: Perlin-shaped masks filled from a source.

Shared by every model that trains on synthetic defects (Clgan's corrupted-input option, Dmp,
Tocoad's generator, Locc's outlier exposure, Pgcn's comparator pairs). The fill comes from an
*anomaly source folder* (e.g. DTD, or crops of real defects) when the user has one, otherwise from
the training images themselves (another image of the batch, re-oriented and re-coloured). Test
data is never a source: :meth:`SyntheticAnomalyGenerator.check_disjoint_from` refuses a source
folder that overlaps the test split.

All tensors are batched ``[B, C, H, W]`` images in ``[0, 1]`` on any device; masks are
``[B, 1, H, W]`` float tensors of 0/1. The global torch RNG drives all randomness, so
``lightning.seed_everything`` makes it reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import kornia
import torch
from anomalib.data.utils.generators.perlin import generate_perlin_noise
from torch import nn
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import functional as tvf

from anomalib_surface.io.image_io import read_image

__all__ = ["SyntheticAnomalyGenerator", "check_source_disjoint", "list_images", "perlin_masks", "paths_of_test_split"]


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files (any torchvision image extension, any depth) below ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        msg = f"anomaly_source_path '{folder}' is not a folder of images."
        raise FileNotFoundError(msg)
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMG_EXTENSIONS and path.is_file())


def paths_of_test_split(trainer: object) -> list[str]:
    """Image paths of the test split of ``trainer``'s datamodule (``[]`` if it has none), for ``check_disjoint_from``."""
    test_data = getattr(getattr(trainer, "datamodule", None), "test_data", None)
    samples = getattr(test_data, "samples", None)
    return [] if samples is None else list(samples.image_path)


def check_source_disjoint(anomaly_source_path: str | Path | None, test_image_paths: Iterable[str | Path]) -> None:
    """Refuse an anomaly source folder that overlaps the test split (``None``: no folder, nothing to check).

    Raises:
        ValueError: If a test image lies inside the source folder or the folder inside a test folder.
    """
    if anomaly_source_path is None:
        return
    source = Path(anomaly_source_path).resolve()
    for path in test_image_paths:
        test_path = Path(path).resolve()
        if test_path.is_relative_to(source) or source.is_relative_to(test_path.parent):
            msg = (
                f"anomaly_source_path '{anomaly_source_path}' overlaps the test split (test image "
                f"'{path}'). Synthetic anomalies must never be drawn from test data: use a separate folder "
                "such as DTD, or leave anomaly_source_path unset to use the training images."
            )
            raise ValueError(msg)


PERLIN_SCALE_EXPONENTS = 6
"""Perlin lattice scales are ``2**e`` for ``e`` in ``[0, 6)``, as in anomalib's ``generate_perlin_noise``."""


def random_perlin_scale(side: int) -> int:
    """A random Perlin lattice scale for an image side: anomalib's distribution, capped at the side.

    anomalib draws scales up to 32 whatever the size, which fails on sides of 16 px or less (the noise is
    computed on the next power of two and needs at least one pixel per lattice cell).
    """
    padded_exponent = math.ceil(math.log2(max(side, 1)))
    high = min(PERLIN_SCALE_EXPONENTS, padded_exponent + 1)
    return 2 ** int(torch.randint(0, high, (1,)).item())


def perlin_masks(
    batch_size: int,
    height: int,
    width: int,
    threshold: float = 0.5,
    device: torch.device | str = "cpu",
    max_tries: int = 10,
) -> torch.Tensor:
    """Random irregular binary masks from thresholded, randomly rotated Perlin noise.

    Args:
        batch_size: Number of masks ``B``.
        height: Mask height ``H``.
        width: Mask width ``W``.
        threshold: Noise level above which a pixel is anomalous (0.5 as in DRAEM).
        device: Device of the result.
        max_tries: Noise is redrawn up to this many times when a mask comes out empty.

    Returns:
        ``[B, 1, H, W]`` float masks of 0/1, each with at least one anomalous pixel whenever
        one of the ``max_tries`` draws had one.
    """
    masks = []
    for _ in range(batch_size):
        for _ in range(max_tries):
            scale = (random_perlin_scale(height), random_perlin_scale(width))
            noise = generate_perlin_noise(height, width, scale=scale, device=torch.device(device))
            angle = torch.empty(1, device=noise.device).uniform_(-90.0, 90.0)
            noise = kornia.geometry.transform.rotate(noise[None, None], angle, padding_mode="reflection")[0]
            mask = (noise > threshold).float()
            if mask.any():
                break
        masks.append(mask)
    return torch.stack(masks)


class SyntheticAnomalyGenerator(nn.Module):
    """Paste Perlin-shaped regions filled from an anomaly source into images.

    Args:
        anomaly_source_path: Folder of source images (e.g. DTD textures or real defect crops).
            ``None`` fills from the training batch itself (another image of the batch, rotated by a
            multiple of 90°, flipped and colour-jittered).
        probability: Fraction of images of a batch that receive an anomaly.
        opacity_range: ``(min, max)`` opacity of the pasted fill.
        soft_edge_sigma: Standard deviation (pixels) of the fade at the inside border of the region;
            ``0`` for hard edges. The fade never leaves the mask, so pixels outside it are untouched.
        match_lighting: Strength in ``[0, 1]`` with which the fill's per-channel mean is moved to the mean
            of the surface it covers, so defects are not separable by colour statistics alone.
        perlin_threshold: Perlin noise level above which a pixel is in the region.

    Example:
        >>> generator = SyntheticAnomalyGenerator(probability=1.0)
        >>> images = torch.rand(4, 3, 64, 64)
        >>> augmented, masks = generator(images)
        >>> augmented.shape, masks.shape
        (torch.Size([4, 3, 64, 64]), torch.Size([4, 1, 64, 64]))
    """

    def __init__(
        self,
        anomaly_source_path: str | Path | None = None,
        probability: float = 0.5,
        opacity_range: tuple[float, float] = (0.5, 1.0),
        soft_edge_sigma: float = 1.0,
        match_lighting: float = 0.0,
        perlin_threshold: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0.0 <= probability <= 1.0:
            msg = f"probability must be in [0, 1], got {probability}."
            raise ValueError(msg)
        low, high = opacity_range
        if not 0.0 < low <= high <= 1.0:
            msg = f"opacity_range must satisfy 0 < min <= max <= 1, got {opacity_range}."
            raise ValueError(msg)
        if soft_edge_sigma < 0:
            msg = f"soft_edge_sigma must be >= 0, got {soft_edge_sigma}."
            raise ValueError(msg)
        if not 0.0 <= match_lighting <= 1.0:
            msg = f"match_lighting must be in [0, 1], got {match_lighting}."
            raise ValueError(msg)
        self.probability = probability
        self.opacity_range = (float(low), float(high))
        self.soft_edge_sigma = soft_edge_sigma
        self.match_lighting = match_lighting
        self.perlin_threshold = perlin_threshold
        self.anomaly_source_path = Path(anomaly_source_path) if anomaly_source_path is not None else None
        self.source_images: list[Path] = []
        if self.anomaly_source_path is not None:
            self.source_images = list_images(self.anomaly_source_path)
            if not self.source_images:
                msg = f"anomaly_source_path '{self.anomaly_source_path}' contains no images ({sorted(IMG_EXTENSIONS)})."
                raise FileNotFoundError(msg)

    def check_disjoint_from(self, test_image_paths: Iterable[str | Path]) -> None:
        """Refuse an anomaly source folder that overlaps the test split (see :func:`check_source_disjoint`)."""
        check_source_disjoint(self.anomaly_source_path, test_image_paths)

    def _read_source(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """One random source image, ``[3, H, W]`` in ``[0, 1]``."""
        path = self.source_images[int(torch.randint(len(self.source_images), (1,)))]
        return tvf.resize(read_image(path).to(device), [height, width], antialias=True)

    @staticmethod
    def _reorient(images: torch.Tensor) -> torch.Tensor:
        """Random multiple-of-90° rotation and horizontal flip of a ``[B, C, H, W]`` batch (square or not)."""
        turns = int(torch.randint(4, (1,)))
        if images.shape[-1] != images.shape[-2]:
            turns = 2 * (turns % 2)  # keep the shape of non-square images
        images = torch.rot90(images, turns, dims=(-2, -1))
        if torch.rand(1) < 0.5:
            images = images.flip(-1)
        return images

    @staticmethod
    def _recolour(images: torch.Tensor) -> torch.Tensor:
        """Random per-image brightness, contrast and per-channel gain of ``[B, C, H, W]`` images."""
        batch, channels = images.shape[:2]
        shape = (batch, 1, 1, 1)
        contrast = torch.empty(shape, device=images.device).uniform_(0.5, 1.5)
        brightness = torch.empty(shape, device=images.device).uniform_(-0.2, 0.2)
        gain = torch.empty((batch, channels, 1, 1), device=images.device).uniform_(0.7, 1.3)
        mean = images.mean(dim=(1, 2, 3), keepdim=True)
        return ((images - mean) * contrast + mean + brightness) * gain

    def fill(self, images: torch.Tensor) -> torch.Tensor:
        """Fill content for every image of the batch, ``[B, C, H, W]`` in ``[0, 1]``."""
        batch, channels, height, width = images.shape
        if self.source_images:
            fill = torch.stack([self._read_source(height, width, images.device) for _ in range(batch)])
            if channels == 1:
                fill = fill.mean(dim=1, keepdim=True)
        else:
            fill = self._reorient(images.roll(shifts=1, dims=0))
        return self._recolour(fill).clamp(0.0, 1.0)

    def alpha(self, masks: torch.Tensor) -> torch.Tensor:
        """Per-pixel opacity ``[B, 1, H, W]``: random opacity per image, faded at the region's inner border."""
        low, high = self.opacity_range
        opacity = torch.empty((masks.shape[0], 1, 1, 1), device=masks.device).uniform_(low, high)
        alpha = masks
        if self.soft_edge_sigma > 0:
            kernel = 2 * math.ceil(3 * self.soft_edge_sigma) + 1
            sigma = (self.soft_edge_sigma, self.soft_edge_sigma)
            alpha = kornia.filters.gaussian_blur2d(masks, (kernel, kernel), sigma) * masks
            # Rescale so the inside of the region reaches full opacity.
            alpha = alpha / alpha.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        return opacity * alpha

    def _match_lighting(self, fill: torch.Tensor, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Move the fill's per-channel mean under the mask towards the images' mean under the mask."""
        if self.match_lighting == 0:
            return fill
        area = masks.sum(dim=(2, 3), keepdim=True).clamp_min(1.0)
        shift = ((images - fill) * masks).sum(dim=(2, 3), keepdim=True) / area
        return (fill + self.match_lighting * shift).clamp(0.0, 1.0)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add anomalies to a random subset of ``images``.

        Args:
            images: ``[B, C, H, W]`` images in ``[0, 1]``.

        Returns:
            Augmented images ``[B, C, H, W]`` and masks ``[B, 1, H, W]`` (0/1). Pixels outside a mask
            are unchanged; images that drew no anomaly have an all-zero mask.
        """
        if images.ndim != 4:
            msg = f"images must be a [B, C, H, W] batch, got shape {tuple(images.shape)}."
            raise ValueError(msg)
        batch, _, height, width = images.shape
        masks = perlin_masks(batch, height, width, self.perlin_threshold, images.device)
        selected = (torch.rand(batch, device=images.device) < self.probability).float().view(-1, 1, 1, 1)
        masks = masks * selected
        fill = self._match_lighting(self.fill(images), images, masks)
        alpha = self.alpha(masks)
        augmented = images * (1 - alpha) + fill * alpha
        return augmented, masks
