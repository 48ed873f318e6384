"""Greedy k-center coreset selection for memory banks, as in PatchCore.

PatchCore keeps a subset of the training patch features chosen by greedy k-center (farthest point)
selection, run on a random projection of the features to save time. anomalib's ``KCenterGreedy``
recomputes ``||x - c||`` for every row with a fresh ``[N, D]`` difference tensor at each of the
``k`` steps. Here each step is one matrix-vector product on a projection fixed once per call:
``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2`` with the ``||x||^2`` computed once, and the running
minimum distance updated in place. The loop never reads a value back to Python, so on GPU it
does not synchronise. On the same projected features and start point it selects the same indices
as ``KCenterGreedy`` (see ``benchmarks/tocoad_memory_bank.py``), up to exact floating-point ties.
"""

from __future__ import annotations

import math

import torch

__all__ = ["coreset_size", "greedy_coreset", "greedy_k_center", "random_projection"]


def coreset_size(num_rows: int, sampling_ratio: float) -> int:
    """Number of rows kept from ``num_rows`` rows at ``sampling_ratio`` (at least 1).

    Raises:
        ValueError: If ``sampling_ratio`` is not in ``(0, 1]`` or ``num_rows`` is not positive.
    """
    if not 0.0 < sampling_ratio <= 1.0:
        msg = f"sampling_ratio must be in (0, 1], got {sampling_ratio}."
        raise ValueError(msg)
    if num_rows <= 0:
        msg = f"Cannot select a coreset from an empty embedding ({num_rows} rows)."
        raise ValueError(msg)
    return max(1, int(num_rows * sampling_ratio))


def random_projection(features: torch.Tensor, dim: int, generator: torch.Generator) -> torch.Tensor:
    """Project ``[N, D]`` features to ``[N, dim]`` with a Gaussian Johnson-Lindenstrauss matrix.

    The matrix is drawn on the CPU from ``generator`` (so it is the same on every device and rank)
    and applied on the features' device.
    """
    matrix = torch.randn(features.shape[1], dim, generator=generator) / math.sqrt(dim)
    return features @ matrix.to(device=features.device, dtype=features.dtype)


def greedy_k_center(features: torch.Tensor, count: int, start_index: int = 0) -> torch.Tensor:
    """Greedy k-center selection: repeatedly take the row farthest from all rows taken so far.

    Args:
        features: ``[N, D]`` features (typically already projected).
        count: Number of rows to select, ``1 <= count <= N``.
        start_index: First selected row.

    Returns:
        ``[count]`` int64 indices into ``features`` (distinct), in selection order.
    """
    num_rows = features.shape[0]
    if not 1 <= count <= num_rows:
        msg = f"count must be in [1, {num_rows}] for {num_rows} rows, got {count}."
        raise ValueError(msg)
    features = features.float().contiguous()
    squared_norms = features.pow(2).sum(dim=1)
    min_distances = torch.full_like(squared_norms, float("inf"))
    distances = torch.empty_like(squared_norms)
    selected = torch.empty(count, dtype=torch.long, device=features.device)
    index = torch.tensor([start_index], device=features.device)
    selected[0] = index
    for step in range(1, count):
        center = features.index_select(0, index)[0]
        torch.addmv(squared_norms, features, center, alpha=-2.0, out=distances)
        distances += squared_norms.index_select(0, index)
        torch.minimum(min_distances, distances, out=min_distances)
        # Selected rows get -inf, so they are never taken twice (even among duplicate rows).
        min_distances.index_fill_(0, index, float("-inf"))
        index = min_distances.argmax().view(1)
        selected[step] = index
    return selected


def greedy_coreset(
    embedding: torch.Tensor,
    sampling_ratio: float,
    projection_dim: int | None = 128,
    seed: int = 0,
) -> torch.Tensor:
    """Indices of a greedy k-center coreset of ``embedding``, reproducible for a given ``seed``.

    Args:
        embedding: ``[N, D]`` features.
        sampling_ratio: Fraction of rows to keep, in ``(0, 1]``.
        projection_dim: Dimension of the random projection the selection runs on (128 as in the
            original PatchCore); ``None`` or ``>= D`` selects on the raw features.
        seed: Seed of the projection and of the random first row. The result depends only on
            ``embedding`` and ``seed``, not on the global RNG, so every DDP rank selects the same rows.

    Returns:
        ``[coreset_size(N, sampling_ratio)]`` int64 indices into ``embedding`` on its device.
    """
    if embedding.ndim != 2:
        msg = f"embedding must be a [N, D] matrix, got shape {tuple(embedding.shape)}."
        raise ValueError(msg)
    if projection_dim is not None and projection_dim <= 0:
        msg = f"projection_dim must be a positive integer or None, got {projection_dim}."
        raise ValueError(msg)
    count = coreset_size(embedding.shape[0], sampling_ratio)
    generator = torch.Generator().manual_seed(seed)
    features = embedding
    if projection_dim is not None and projection_dim < embedding.shape[1]:
        features = random_projection(embedding.float(), projection_dim, generator)
    start_index = int(torch.randint(embedding.shape[0], (1,), generator=generator))
    return greedy_k_center(features, count, start_index)
