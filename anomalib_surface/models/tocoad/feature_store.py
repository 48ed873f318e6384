"""Collect the patch features of all training images for Tocoad's memory bank, the same on every DDP rank.

Under DDP each rank sees only its shard of the training set (and ``DistributedSampler`` pads uneven
shards with repeated images). anomalib's memory-bank models build their bank from the local shard
only, so on ``N`` devices each keeps ``1/N`` of the data. :class:`PatchFeatureStore` instead
gathers the per-image features of all ranks (padding uneven sizes for ``all_gather``), drops
images seen twice, and orders the images by a key derived from their path, so that every rank
- and a single-process run over the same data - ends with the same ``[rows, C]`` matrix, ready for
a seeded coreset selection.
"""

from __future__ import annotations

import torch

from anomalib_surface.components.distributed import all_gather_rows

__all__ = ["PatchFeatureStore"]


class PatchFeatureStore:
    """Per-image patch features collected over an epoch, merged across ranks by :meth:`merge`.

    Example:
        >>> store = PatchFeatureStore()
        >>> store.add(torch.randn(2, 16, 8), torch.tensor([5, 3]))
        >>> store.add(torch.randn(1, 16, 8), torch.tensor([5]))  # the same image again
        >>> store.merge().shape  # 2 distinct images x 16 patches
        torch.Size([32, 8])
    """

    def __init__(self) -> None:
        self._features: list[torch.Tensor] = []
        self._keys: list[torch.Tensor] = []

    def __len__(self) -> int:
        """Number of images added since the last :meth:`merge`."""
        return sum(len(keys) for keys in self._keys)

    def add(self, features: torch.Tensor, keys: torch.Tensor) -> None:
        """Add ``[B, P, C]`` patch features of ``B`` images with their ``[B]`` int64 keys."""
        if features.ndim != 3 or keys.shape != features.shape[:1]:
            msg = f"features must be [B, P, C] with keys [B], got {tuple(features.shape)} and {tuple(keys.shape)}."
            raise ValueError(msg)
        self._features.append(features.detach())
        self._keys.append(keys.to(features.device))

    def merge(self) -> torch.Tensor:
        """All ranks' features as ``[images * P, C]`` rows, one copy per key, images sorted by key; empties the store.

        Must be called on every rank (it is a collective operation under DDP).
        """
        features = all_gather_rows(torch.cat(self._features))
        keys = all_gather_rows(torch.cat(self._keys))
        self._features.clear()
        self._keys.clear()
        keys, order = torch.sort(keys, stable=True)
        first = torch.ones_like(keys, dtype=torch.bool)
        first[1:] = keys[1:] != keys[:-1]
        return features[order[first]].flatten(0, 1)
