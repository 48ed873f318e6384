"""Collect the patch features of all training images for a memory bank, the same on every DDP rank.

Under DDP each rank sees only its shard of the training set (and ``DistributedSampler`` pads uneven
shards with repeated images). anomalib's memory-bank models build their bank from the local shard
only, so on ``N`` devices each keeps ``1/N`` of the data. :class:`PatchFeatureStore` instead
gathers the per-image features of all ranks (padding uneven sizes for ``all_gather``), drops
images seen twice, and orders the images by a key derived from their path, so that every rank
- and a single-process run over the same data - ends with the same ``[rows, C]`` matrix, ready for
a seeded coreset selection.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from torch import distributed as dist

__all__ = ["PatchFeatureStore", "all_gather_rows", "image_keys"]


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` of every rank along dim 0 (sizes may differ), in rank order.

    Outside an initialised process group (or with one process) ``tensor`` is returned as is.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    world_size = dist.get_world_size()
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.empty_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    max_size = int(torch.stack(sizes).max())
    padded = tensor.new_zeros((max_size, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(gathered, padded)
    return torch.cat([rows[: int(rank_size)] for rows, rank_size in zip(gathered, sizes, strict=True)])


def _key(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big", signed=True)


def image_keys(images: torch.Tensor, paths: Sequence[str] | None = None) -> torch.Tensor:
    """One int64 key per image: a hash of its path, or of its pixels when ``paths`` is ``None``.

    Args:
        images: ``[B, C, H, W]`` batch (only read when ``paths`` is ``None``).
        paths: Image file paths of the batch.

    Returns:
        ``[B]`` int64 keys on the images' device.
    """
    if paths is not None:
        if len(paths) != images.shape[0]:
            msg = f"Got {len(paths)} image paths for a batch of {images.shape[0]} images."
            raise ValueError(msg)
        keys = [_key(str(path).encode()) for path in paths]
    else:
        keys = [_key(image.detach().cpu().numpy().tobytes()) for image in images]
    return torch.tensor(keys, dtype=torch.long, device=images.device)


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
