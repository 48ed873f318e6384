"""Intersect two predictions of the same images: what both call anomalous stays anomalous.

Shared by :class:`~anomalib_surface.models.pgcn.torch_model.PgcnModel` (its two row directions) and the
:class:`~anomalib_surface.post_processing.bidirectional.BidirectionalIntersection` post-processor.
"""

from __future__ import annotations

import torch
from anomalib.data import InferenceBatch

__all__ = ["intersect_predictions"]


def _squeezed_shape(values: torch.Tensor) -> list[int]:
    """Shape without its singleton dimensions."""
    return [size for size in values.shape if size != 1]


def _intersect(first: torch.Tensor | None, second: torch.Tensor | None) -> torch.Tensor | None:
    """Elementwise minimum of maps/scores, AND of boolean masks/labels; ``None`` unless both exist."""
    if first is None or second is None:
        return None
    if first.shape != second.shape:
        if _squeezed_shape(first) != _squeezed_shape(second):
            msg = f"Cannot intersect predictions of different shapes {tuple(first.shape)} and {tuple(second.shape)}."
            raise ValueError(msg)
        second = second.reshape(first.shape)  # e.g. [B, 1, H, W] maps against a batch's validated [B, H, W]
    if first.dtype == torch.bool:
        return first & second.bool()
    return torch.minimum(first, second)


def intersect_predictions(first: InferenceBatch, second: InferenceBatch) -> InferenceBatch:
    """Intersect two predictions of the same images: what is anomalous in both stays anomalous.

    Args:
        first: Prediction with ``anomaly_map`` ``[B, ...]`` and ``pred_score`` ``[B]`` or per region
            ``[B, ...]``; ``pred_mask``/``pred_label`` optional.
        second: Prediction of the same shapes.

    Returns:
        ``anomaly_map`` = elementwise minimum, ``pred_score`` = elementwise minimum reduced to ``[B]`` by
        the maximum over regions, ``pred_mask``/``pred_label`` = logical AND. Fields missing from
        either input are ``None``.
    """
    pred_score = _intersect(first.pred_score, second.pred_score)
    if pred_score is not None and pred_score.ndim > 1:
        pred_score = pred_score.flatten(1).amax(dim=1)
    return InferenceBatch(
        pred_score=pred_score,
        pred_label=_intersect(first.pred_label, second.pred_label),
        anomaly_map=_intersect(first.anomaly_map, second.anomaly_map),
        pred_mask=_intersect(first.pred_mask, second.pred_mask),
    )
