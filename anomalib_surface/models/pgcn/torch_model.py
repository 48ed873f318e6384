"""PyTorch model of PGCN: a Swin-transformer pattern generator and a pseudo-Siamese comparator.

Paper: Huang, Li, Lin, Lian, "Unsupervised Industrial Anomaly Detection via Pattern Generative and
Contrastive Networks", arXiv 2207.09792.

The image is an ``N x N`` grid of patches. :class:`~.generator.PatternGenerator` predicts a patch from the two
patches before it in a row; :class:`~.comparator.PatternComparator` says whether the prediction and the real patch
match (a probability) and where they differ (a mask at a quarter of the patch size).
:class:`PgcnModel` runs both in the two row directions and intersects the results.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from anomalib.data import InferenceBatch
from torch import nn

from anomalib_surface.components.finite_inputs import mark_nonfinite, replace_nonfinite
from anomalib_surface.components.intersection import intersect_predictions

from .anomaly_map import complete_directions, patch_masks_to_map
from .comparator import COMPARATOR_DOWNSAMPLING, PatternComparator
from .generator import PatternGenerator
from .patches import directional_triplets, split_patches

__all__ = ["PgcnModel", "validate_patch_grid", "validate_swin_options"]


def _valid_side(side: int, patch_size: int, window_size: int, num_stages: int) -> bool:
    """Whether a patch side (pixels) gives exact token grids that fit the windows at every stage."""
    unit = math.lcm(patch_size * 2 ** (num_stages - 1), COMPARATOR_DOWNSAMPLING)
    if side % unit:
        return False
    tokens = side // patch_size
    return all(tokens >> s <= window_size or (tokens >> s) % window_size == 0 for s in range(num_stages))


def validate_patch_grid(
    image_size: tuple[int, int],
    grid_size: int,
    patch_size: int,
    window_size: int,
    num_stages: int,
) -> tuple[int, int]:
    """Check that ``image_size / grid_size`` patches suit the Swin stages and the comparator.

    A patch side ``p = image side / N`` is valid when it is a multiple of ``patch_size * 2**(stages - 1)``
    (exact patch merging) and of 4 (the comparator's two pools), and every stage's token grid
    ``p / patch_size / 2**s`` is at most ``window_size`` or a multiple of it (whole windows, no padding).
    With the defaults (``patch_size=1``, ``window_size=7``, four stages) ``p = 56`` (``image_size=224``
    at ``N=4``) is valid; ``p = patch_size * window_size * 2**(stages - 1)`` always is.

    Returns:
        The patch size ``(h, w)`` in pixels.

    Raises:
        ValueError: Naming ``image_size`` and ``N``, the rule and the nearest valid image sizes.
    """
    patch = []
    for side in image_size:
        if side % grid_size == 0 and _valid_side(side // grid_size, patch_size, window_size, num_stages):
            patch.append(side // grid_size)
            continue
        target = max(side // grid_size, 1)
        candidates = [p for p in range(1, 4 * target + 1) if _valid_side(p, patch_size, window_size, num_stages)]
        nearest = sorted(sorted(candidates, key=lambda p: abs(p - target))[:2])
        suggestion = (
            f"Nearest valid image sides for N={grid_size}: {[p * grid_size for p in nearest]}."
            if nearest
            else "Change patch_size, window_size or the number of stages."
        )
        msg = (
            f"image_size {tuple(image_size)} with grid_size N={grid_size} gives patches of side {side / grid_size:g} "
            f"px, which the Swin generator cannot use (patch_size={patch_size}, window_size={window_size}, "
            f"{num_stages} stages): a patch side must be a multiple of patch_size * 2**(stages - 1) and of 4, and "
            f"every stage's token grid (side / patch_size / 2**stage) must be at most window_size or a multiple of "
            f"it. {suggestion}"
        )
        raise ValueError(msg)
    return patch[0], patch[1]


def validate_swin_options(grid_size: int, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int]) -> None:
    """Check the grid and Swin options that :func:`validate_patch_grid` does not cover.

    Raises:
        ValueError: If ``grid_size < 3``, ``depths`` and ``num_heads`` differ in length or hold
            non-positive values, or a stage width ``embed_dim * 2**s`` is not divisible by its heads.
    """
    if grid_size < 3:  # noqa: PLR2004
        msg = f"grid_size must be at least 3 (a patch is predicted from two neighbours), got {grid_size}."
        raise ValueError(msg)
    if not depths or len(depths) != len(num_heads):
        msg = f"depths and num_heads need one entry per stage, got depths={list(depths)}, num_heads={list(num_heads)}."
        raise ValueError(msg)
    if min(depths) < 1 or min(num_heads) < 1 or embed_dim < 1:
        msg = f"embed_dim, depths and num_heads must be positive, got {embed_dim}, {list(depths)}, {list(num_heads)}."
        raise ValueError(msg)
    for stage, heads in enumerate(num_heads):
        if (embed_dim * 2**stage) % heads:
            width = embed_dim * 2**stage
            msg = f"Stage {stage} width embed_dim * 2**{stage} = {width} is not divisible by {heads} heads."
            raise ValueError(msg)


class PgcnModel(nn.Module):
    """PGCN: pattern generation and comparison over an ``N x N`` patch grid, in both row directions.

    Every patch with two preceding neighbours in a direction is predicted by the generator from
    them (real patches as inputs, so each prediction is independent) and compared with the real
    patch. The first two patches of a row going left to right (the last two going right to left)
    take the other direction's result. A patch's anomaly score is the probability that prediction
    and patch do not match; its map is the comparator's difference mask, upsampled to the patch.
    With ``bidirectional=True`` scores and maps are the minimum of the two directions
    (``C_i = LC_i ∩ RC_i``, :func:`~anomalib_surface.components.intersection.intersect_predictions`),
    otherwise the left-to-right ones. The image score is the maximum patch score.

    Args:
        image_size: Input ``(H, W)``; ``H / N`` and ``W / N`` must pass :func:`validate_patch_grid`.
        grid_size: Patches per row and column ``N`` (at least 3).
        patch_size: Pixel squares per Swin token.
        embed_dim: Width ``C`` of the first Swin stage.
        depths: Swin blocks per stage (encoders and decoder).
        num_heads: Attention heads per stage.
        window_size: Swin attention window.
        mlp_ratio: Hidden width of the Swin and head MLPs relative to their input.
        comparator_width: Channels of the comparator's first block.
        comparator_hidden: Units of the comparator's first fully connected layer.
        bidirectional: Intersect both directions in ``forward``.
    """

    def __init__(
        self,
        image_size: tuple[int, int],
        grid_size: int = 4,
        patch_size: int = 1,
        embed_dim: int = 24,
        depths: Sequence[int] = (2, 2, 6, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        comparator_width: int = 16,
        comparator_hidden: int = 128,
        bidirectional: bool = True,
    ) -> None:
        super().__init__()
        validate_swin_options(grid_size, embed_dim, depths, num_heads)
        self.image_size = tuple(image_size)
        self.grid_size = grid_size
        self.patch_hw = validate_patch_grid(self.image_size, grid_size, patch_size, window_size, len(depths))
        self.bidirectional = bidirectional
        self.generator = PatternGenerator(
            self.patch_hw,
            patch_size,
            embed_dim=embed_dim,
            depths=depths,
            num_heads=num_heads,
            window_size=window_size,
            mlp_ratio=mlp_ratio,
        )
        self.comparator = PatternComparator(self.patch_hw, width=comparator_width, hidden=comparator_hidden)

    def forward_directional(self, images: torch.Tensor) -> tuple[InferenceBatch, InferenceBatch]:
        """Left-to-right and right-to-left predictions of ``[B, 3, H, W]`` images in ``[0, 1]``.

        Returns:
            Two :class:`~anomalib.data.InferenceBatch` with per-patch ``pred_score`` ``[B, N, N]``
            (mismatch probabilities) and ``anomaly_map`` ``[B, 1, H, W]``.
        """
        if tuple(images.shape[-2:]) != self.image_size:
            msg = f"PGCN was built for {self.image_size} images, got {tuple(images.shape[-2:])}."
            raise ValueError(msg)
        far, near, target = directional_triplets(split_patches(images, self.grid_size))
        layout = far.shape[:4]
        generated = self.generator(far.flatten(0, 3), near.flatten(0, 3))
        match_logits, mask_logits = self.comparator(generated, target.flatten(0, 3))
        scores = complete_directions(torch.sigmoid(-match_logits).reshape(layout))
        masks = complete_directions(torch.sigmoid(mask_logits).reshape(*layout, *mask_logits.shape[1:]))
        return tuple(
            InferenceBatch(pred_score=score, anomaly_map=patch_masks_to_map(mask, self.patch_hw))
            for score, mask in zip(scores, masks, strict=True)
        )

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Image scores ``[B]`` and anomaly maps ``[B, 1, H, W]`` of ``[B, 3, H, W]`` images in ``[0, 1]``."""
        images, nonfinite = replace_nonfinite(images)
        left, right = self.forward_directional(images)
        if self.bidirectional:
            return mark_nonfinite(intersect_predictions(left, right), nonfinite)
        return mark_nonfinite(InferenceBatch(pred_score=left.pred_score.flatten(1).amax(dim=1), anomaly_map=left.anomaly_map), nonfinite)
