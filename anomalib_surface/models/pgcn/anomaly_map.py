"""Directional patch results of PGCN assembled into full grids and image-resolution anomaly maps.

Left to right, the first two patches of every scanned sequence have no two preceding neighbours;
right to left, the last two. Those patches take the other direction's result
(:func:`complete_directions`), so each direction covers the whole grid, and the intersection of the two
directions acts on every other patch: columns ``2 .. N-3`` when each row is scanned on its own (none
at ``N = 4``), all patches but the first two and the last two of the grid in raster order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from .patches import merge_patches

__all__ = ["complete_directions", "patch_masks_to_map"]


def complete_directions(directional: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Complete left-to-right and right-to-left results to full ``N``-column grids.

    Args:
        directional: ``[2, B, R, L - 2, ...]`` per-patch results as ordered by
            :func:`~anomalib_surface.models.pgcn.patches.directional_triplets` (left-to-right
            targets are positions ``2 .. L-1``, right-to-left targets positions ``0 .. L-3``).

    Returns:
        Left-to-right and right-to-left results ``[B, R, L, ...]``; positions a direction cannot
        predict come from the other direction.
    """
    left_to_right, right_to_left = directional[0], directional[1]
    left = torch.cat([right_to_left[:, :, :2], left_to_right], dim=2)
    right = torch.cat([right_to_left, left_to_right[:, :, -2:]], dim=2)
    return left, right


def patch_masks_to_map(masks: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """Upsample per-patch masks to the patch size and tile them into an image-resolution map.

    Args:
        masks: ``[B, N, N, 1, h', w']`` per-patch difference masks (e.g. at a quarter of the patch size).
        patch_size: Patch ``(h, w)`` in pixels.

    Returns:
        ``[B, 1, N * h, N * w]`` anomaly map; each patch is upsampled bilinearly on its own, so no value
        leaks across patch borders.
    """
    batch, rows, cols = masks.shape[:3]
    upsampled = F.interpolate(masks.flatten(0, 2), size=patch_size, mode="bilinear", align_corners=False)
    return merge_patches(upsampled.reshape(batch, rows, cols, 1, *patch_size))
