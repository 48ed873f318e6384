"""DDP helpers shared by the models: unused parameters, buffer broadcast, row gathering, images counted once."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.strategies import DDPStrategy
from torch import distributed as dist
from torch import nn

__all__ = [
    "UnseenImages",
    "all_gather_rows",
    "allow_unused_parameters",
    "broadcast_buffers",
    "image_keys",
    "sum_over_processes",
]


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


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def sum_over_processes(trainer: Trainer | None, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over the DDP processes of ``trainer``, on ``tensor``'s device.

    Unchanged in one process or without a trainer. The sum runs on the strategy's device (NCCL needs GPU tensors).
    """
    if trainer is None or trainer.world_size == 1:
        return tensor
    return trainer.strategy.reduce(tensor.to(trainer.strategy.root_device), reduce_op="sum").to(tensor.device)


def allow_unused_parameters(trainer: Trainer | None) -> None:
    """Let DDP accept parameters that receive no gradient in a step.

    DDP expects a gradient for every trainable parameter in every step; models whose phases train disjoint
    parts (a generator, then a comparator) would fail from the second step with plain ``strategy="ddp"``.
    Call it from the model's ``setup`` hook: ``DDPStrategy`` passes these arguments to
    ``DistributedDataParallel`` when it wraps the model, after ``setup``. Does nothing without a trainer or
    outside DDP.
    """
    strategy = trainer.strategy if trainer is not None else None
    if isinstance(strategy, DDPStrategy):
        # Lightning has no public setter; this is what strategy="ddp_find_unused_parameters_true" sets.
        strategy._ddp_kwargs["find_unused_parameters"] = True  # noqa: SLF001


def broadcast_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. BatchNorm statistics) into every rank's ``module``, in place.

    DDP does this before each forward under automatic optimisation only; models with manual optimisation
    call it to keep every rank equal to rank 0, whose state Lightning saves in checkpoints. Buffers must
    have the same shape on every rank. Must be called on every rank; does nothing outside DDP.
    """
    if _distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src)


class UnseenImages:
    """Which images of a batch no rank has seen yet in this pass, decided the same way on every rank.

    ``DistributedSampler`` pads uneven shards with repeated images, so statistics summed over all ranks
    (means, counts) would count those images twice. Every rank must call :meth:`mask` in every step (it
    gathers the keys of all ranks); outside DDP it only drops repeats within the process.

    Example:
        >>> unseen = UnseenImages()
        >>> unseen.mask(torch.tensor([5, 3, 5]))
        tensor([ True,  True, False])
        >>> unseen.mask(torch.tensor([3, 7]))
        tensor([False,  True])
    """

    def __init__(self) -> None:
        self._seen: set[int] = set()

    def mask(self, keys: torch.Tensor) -> torch.Tensor:
        """``[B]`` bool: ``True`` for the images of ``[B]`` int64 ``keys`` seen for the first time.

        An image on several ranks in the same step counts on the lowest rank.
        """
        rank = dist.get_rank() if _distributed() else 0
        tagged = all_gather_rows(torch.stack([keys, torch.full_like(keys, rank)], dim=1))
        first = []
        for key in tagged[:, 0].tolist():
            first.append(key not in self._seen)
            self._seen.add(key)
        return torch.tensor(first, device=keys.device)[tagged[:, 1] == rank]
