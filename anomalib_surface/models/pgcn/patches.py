"""Patch grids and patch triplets: how PGCN cuts images into the pieces its networks see.

An image ``[B, C, H, W]`` is an ``N x N`` grid of ``h x w`` patches (``h = H / N``, ``w = W / N``).
The pattern generator predicts a patch from the two patches before it along a row: left to right,
patch ``(r, c)`` from ``(r, c - 2)`` ("far") and ``(r, c - 1)`` ("near"); right to left, from
``(r, c + 2)`` and ``(r, c + 1)``. Right-to-left triplets are *mirrored* (every patch flipped
horizontally, :func:`mirror`): a mirrored right-to-left strip is a left-to-right strip of the mirrored
image, so the generator always predicts rightwards and never has to guess the direction.

With ``scan="raster"`` the grid is read as one sequence of ``N * N`` patches in raster order (row
after row), as in the paper's Fig. 4, which numbers the patches 1 to 36: every patch but the first two
and the last two then has a prediction in both directions.
"""

from __future__ import annotations

import torch

__all__ = [
    "SCAN_ORDERS",
    "check_scan_order",
    "directional_triplets",
    "merge_patches",
    "mirror",
    "sample_triplets",
    "scan_sequence",
    "split_patches",
]

SCAN_ORDERS = ("row", "raster")
"""How a grid is read: each row on its own, or all rows as one raster-order sequence."""


def split_patches(images: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Cut ``[B, C, H, W]`` images into a ``[B, N, N, C, H / N, W / N]`` grid (row, column) of patches."""
    batch, channels, height, width = images.shape
    if height % grid_size or width % grid_size:
        msg = f"Image size {height}x{width} is not divisible by grid_size N={grid_size}."
        raise ValueError(msg)
    patch_h, patch_w = height // grid_size, width // grid_size
    grid = images.reshape(batch, channels, grid_size, patch_h, grid_size, patch_w)
    return grid.permute(0, 2, 4, 1, 3, 5)


def merge_patches(patches: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`split_patches`: ``[B, N, N, C, h, w]`` grid -> ``[B, C, N * h, N * w]`` images."""
    batch, rows, cols, channels, patch_h, patch_w = patches.shape
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, rows * patch_h, cols * patch_w)


def mirror(patches: torch.Tensor) -> torch.Tensor:
    """Flip ``[..., h, w]`` patches horizontally (its own inverse)."""
    return patches.flip(-1)


def check_scan_order(scan: str) -> None:
    """Raise a ``ValueError`` naming ``scan`` unless it is one of :data:`SCAN_ORDERS`."""
    if scan not in SCAN_ORDERS:
        msg = f"scan must be one of {SCAN_ORDERS}, got {scan!r}."
        raise ValueError(msg)


def scan_sequence(grid: torch.Tensor, scan: str) -> torch.Tensor:
    """The rows of patch sequences that :func:`directional_triplets` reads.

    Args:
        grid: Patch grid ``[B, N, N, ...]``.
        scan: ``"row"``: every grid row is a sequence (``[B, N, N, ...]`` unchanged); ``"raster"``: the
            whole grid is one sequence in raster order (``[B, 1, N * N, ...]``).
    """
    check_scan_order(scan)
    return grid if scan == "row" else grid.flatten(1, 2).unsqueeze(1)


def directional_triplets(sequences: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All ``(far, near, target)`` patch triplets of rows of patch sequences, left-to-right first.

    Args:
        sequences: ``[B, R, L, C, h, w]`` rows of ``L >= 3`` patches (a grid, or :func:`scan_sequence`).

    Returns:
        ``far``, ``near`` and ``target``, each ``[2, B, R, L - 2, C, h, w]``: index 0 holds the
        left-to-right triplets with targets at positions ``2 .. L-1``, index 1 the right-to-left
        triplets with targets at positions ``0 .. L-3``, mirrored (:func:`mirror`).
    """
    first, middle, last = sequences[:, :, :-2], sequences[:, :, 1:-1], sequences[:, :, 2:]
    far = torch.stack([first, mirror(last)])
    near = torch.stack([middle, mirror(middle)])
    target = torch.stack([last, mirror(first)])
    return far, near, target


def sample_triplets(images: torch.Tensor, patch_size: tuple[int, int], count: int) -> torch.Tensor:
    """Random horizontal strips of three adjacent patches, each read left to right or right to left.

    Strips start at any pixel (not only on the grid), so training sees every alignment of the
    pattern; each strip is mirrored (read right to left, every patch flipped, as in
    :func:`directional_triplets`) with probability 1/2, so the generator learns the pattern's mirror image too.

    Args:
        images: ``[B, C, H, W]`` images (any channels, e.g. image, augmented image and mask stacked).
        patch_size: Patch ``(h, w)``; needs ``h <= H`` and ``3 * w <= W``.
        count: Strips per image.

    Returns:
        ``[B * count, 3, C, h, w]``: far, near and target patch of every strip, in reading order.
    """
    batch, channels, height, width = images.shape
    patch_h, patch_w = patch_size
    if patch_h > height or 3 * patch_w > width:
        msg = f"Three {patch_h}x{patch_w} patches side by side do not fit in {height}x{width} images."
        raise ValueError(msg)
    num = batch * count
    device = images.device
    owner = torch.arange(batch, device=device).repeat_interleave(count)
    top = torch.randint(0, height - patch_h + 1, (num,), device=device)
    left = torch.randint(0, width - 3 * patch_w + 1, (num,), device=device)
    rows = top[:, None] + torch.arange(patch_h, device=device)
    cols = left[:, None] + torch.arange(3 * patch_w, device=device)
    strips = images.permute(0, 2, 3, 1)[owner[:, None, None], rows[:, :, None], cols[:, None, :]]
    strips = strips.reshape(num, patch_h, 3, patch_w, channels).permute(0, 2, 4, 1, 3)
    reverse = torch.rand(num, device=device) < 0.5  # noqa: PLR2004
    return torch.where(reverse[:, None, None, None, None], mirror(strips.flip(1)), strips)
