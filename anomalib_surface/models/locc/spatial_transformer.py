"""Rigid (rotation + shift) warps of image batches, in the convention of :func:`torch.nn.functional.affine_grid`.

A transform is a ``[B, 3]`` tensor of parameters ``(Tx, Ty, θ)``: ``Tx``, ``Ty`` are shifts in
normalised coordinates (``[-1, 1]`` spans the image, so ``Tx = 1`` is half the width) and ``θ`` is an
angle in radians about the image centre. :func:`rigid_matrix` turns them into the ``[B, 2, 3]``
*sampling* matrix ``[A | t]``: the warped image at output position ``p`` takes the input's value at
``A p + t``. The rotation is a rotation in *pixels* (``A = D⁻¹ R(θ) D`` with ``D = diag(W/2, H/2)``),
so non-square images are rotated without shearing. :func:`inverse_rigid_matrix` gives the sampling
matrix of the inverse warp, in closed form (no matrix inversion, so it exports to ONNX).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

__all__ = ["inverse_rigid_matrix", "rigid_matrix", "warp"]


def _rotation_block(angle: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, 2, 2]`` matrix ``D⁻¹ R(angle) D`` of a pixel-space rotation in normalised coordinates."""
    cos, sin = angle.cos(), angle.sin()
    aspect = width / height
    return torch.stack(
        [torch.stack([cos, -sin / aspect], dim=-1), torch.stack([sin * aspect, cos], dim=-1)],
        dim=-2,
    )


def rigid_matrix(params: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sampling matrix ``[B, 2, 3]`` of the rigid transforms ``params`` (``[B, 3]`` = ``Tx, Ty, θ``)."""
    shift, angle = params[:, :2], params[:, 2]
    return torch.cat([_rotation_block(angle, height, width), shift.unsqueeze(-1)], dim=-1)


def inverse_rigid_matrix(params: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Sampling matrix ``[B, 2, 3]`` that undoes :func:`rigid_matrix` ``(params)``: ``[A⁻¹ | -A⁻¹ t]``."""
    shift, angle = params[:, :2], params[:, 2]
    inverse_rotation = _rotation_block(-angle, height, width)
    inverse_shift = -(inverse_rotation @ shift.unsqueeze(-1))
    return torch.cat([inverse_rotation, inverse_shift], dim=-1)


def warp(
    images: torch.Tensor,
    matrix: torch.Tensor,
    padding_mode: str = "zeros",
    mode: str = "bilinear",
) -> torch.Tensor:
    """Warp ``[B, C, H, W]`` images with sampling matrices ``[B, 2, 3]``; same shape out.

    Args:
        images: Images or maps to warp.
        matrix: Sampling matrices from :func:`rigid_matrix` or :func:`inverse_rigid_matrix`.
        padding_mode: Value of positions that sample outside the input: ``"zeros"``, ``"border"``
            or ``"reflection"`` (see :func:`torch.nn.functional.grid_sample`).
        mode: ``"bilinear"`` or ``"nearest"`` interpolation.
    """
    grid = F.affine_grid(matrix.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode=mode, padding_mode=padding_mode, align_corners=False)
