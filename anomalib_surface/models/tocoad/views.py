"""SimSiam views of stage 2 and the alignment of their patch features.

Each view is a random geometric transform of the image (shift, zoom, flips; colour changes only on request). For
patch-level SimSiam the projections of one view are warped into the frame of the other with the two transforms'
matrices, so that patch ``i`` of one view is compared with the same place of the surface in the other.
"""

from __future__ import annotations

import kornia.augmentation as K  # noqa: N812
import torch
from kornia.geometry.transform import warp_perspective

__all__ = ["align_features", "view_augmentation"]


def view_augmentation(colour: bool) -> K.AugmentationSequential:
    """Random views of ``[B, 3, H, W]`` images in ``[0, 1]``; its ``transform_matrix`` (``[B, 3, 3]``) maps pixels.

    Geometric: shift ±10 %, zoom 1-1.5x (reflection padding), horizontal and vertical flips. ``colour`` adds
    SimSiam's colour jitter (0.4/0.4/0.4/0.1, p = 0.8) and grayscale (p = 0.2); off by default, since they teach F to
    ignore the colour and brightness changes that stained or low-contrast defects consist of.
    """
    geometric = [
        K.RandomAffine(degrees=0.0, translate=(0.1, 0.1), scale=(1.0, 1.5), padding_mode="reflection", p=1.0),
        K.RandomHorizontalFlip(),
        K.RandomVerticalFlip(),
    ]
    photometric = [K.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8), K.RandomGrayscale(p=0.2)]
    return K.AugmentationSequential(*geometric, *(photometric if colour else []))


def _pixel_to_grid(image_size: tuple[int, int], grid_size: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """``[3, 3]`` map from image pixel coordinates to feature-grid coordinates (cell centres at integers)."""
    scale_y, scale_x = (grid / image for grid, image in zip(grid_size, image_size, strict=True))
    return like.new_tensor([
        [scale_x, 0.0, (scale_x - 1) / 2],
        [0.0, scale_y, (scale_y - 1) / 2],
        [0.0, 0.0, 1.0],
    ])


def align_features(
    features: torch.Tensor,
    source_to_target: torch.Tensor,
    image_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp ``[B, D, h, w]`` features of one view into the frame of another.

    Args:
        features: Patch features (or projections) in the source view's frame.
        source_to_target: ``[B, 3, 3]`` map from the source view's pixel coordinates to the target view's.
        image_size: ``(H, W)`` of the views.

    Returns:
        The warped features ``[B, D, h, w]`` (bilinear) and a ``[B, 1, h, w]`` 0/1 mask of the target patches
        that the source view sees entirely.
    """
    grid_size = features.shape[-2:]
    to_grid = _pixel_to_grid(image_size, grid_size, source_to_target)
    matrix = to_grid @ source_to_target @ torch.linalg.inv(to_grid)
    warped = warp_perspective(features, matrix, dsize=grid_size, align_corners=True)
    ones = features.new_ones(features.shape[0], 1, *grid_size)
    valid = (warp_perspective(ones, matrix, dsize=grid_size, align_corners=True) > 0.999).to(features.dtype)  # noqa: PLR2004
    return warped, valid
