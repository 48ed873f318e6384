"""Fit the training batch to the machine's memory before training starts.

A default configuration (the datamodule's batch of 32 at the model's paper image size) can need more memory than
a small machine has: activations kept for the backward pass grow with the batch. Before the first training
batch is loaded, a model measures what autograd keeps for one image of its heaviest training step
(:func:`bytes_saved_for_backward`) and, where the batch would not fit in the memory left on its device, lowers
the datamodule's training batch size (with a warning naming the option); when not even one image fits it
stops with :class:`MemoryBudgetError` naming the options that reduce the cost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule

logger = logging.getLogger(__name__)

GIB = 2**30
# Share of the free memory a training batch may take: the backward pass holds activation gradients beside the
# saved activations, and the data loaders, the optimiser and other processes need the rest.
BUDGET_FRACTION = 0.5
# Peak memory of an image's training step per byte autograd saves for it: the backward pass allocates gradients of
# the activations beside them.
BACKWARD_FACTOR = 2


class MemoryBudgetError(RuntimeError):
    """Training one image needs more memory than the device has free."""


def available_memory_bytes(device: torch.device) -> int:
    """Free memory of ``device``: the CUDA device's free memory, or the host's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def bytes_saved_for_backward(forward: Callable[[], Any]) -> int:
    """Bytes of the distinct tensor storages autograd saves for the backward pass while ``forward()`` runs."""
    storages: dict[tuple[str, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[(str(tensor.device), storage.data_ptr())] = storage.nbytes()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    return sum(storages.values())


def fitting_batch_size(
    batch_size: int, sample_bytes: int, budget_bytes: float, model_name: str, image_size: Sequence[int], options: Sequence[str],
) -> int:
    """The largest batch size up to ``batch_size`` whose training step (:data:`BACKWARD_FACTOR` times the saved
    activations ``sample_bytes`` per image) fits ``budget_bytes``.

    Raises:
        MemoryBudgetError: If one image of ``sample_bytes`` does not fit; the message names ``options``.
    """
    if sample_bytes <= 0:
        return batch_size
    fits = int(budget_bytes // (BACKWARD_FACTOR * sample_bytes))
    if fits < 1:
        size = "x".join(str(side) for side in image_size)
        msg = (
            f"{model_name} needs about {BACKWARD_FACTOR * sample_bytes / GIB:.1f} GiB to train on one {size} image, but "
            f"only {budget_bytes / GIB:.1f} GiB can be used for a batch ({BUDGET_FRACTION:.0%} of the free memory). "
            f"Lower the image size (the pre-processor's resize), --data.train_batch_size or {', '.join(options)}."
        )
        raise MemoryBudgetError(msg)
    return min(batch_size, fits)


def fit_train_batch_to_memory(
    module: LightningModule, probes: Sequence[Callable[[torch.Tensor], Any]], options: Sequence[str],
) -> None:
    """Lower the datamodule's ``train_batch_size`` to what fits the device (call from ``on_fit_start``).

    Each probe runs the forward part of one kind of training step (one per phase) on ``images``
    ``[1, 3, H, W]`` (``H, W`` = ``module.input_size``) without stepping an optimiser; the most memory-hungry one
    decides. The probes run on random
    images with the random number generators forked and every buffer restored afterwards, so training is
    the same as without it. Processes of one machine (DDP) share its memory.
    """
    trainer = module.trainer
    datamodule = getattr(trainer, "datamodule", None)
    batch_size = getattr(datamodule, "train_batch_size", None)
    image_size = module.input_size
    if batch_size is None or image_size is None:
        return
    buffers = [buffer.clone() for buffer in module.buffers()]
    was_training = module.training
    module.train()
    with torch.random.fork_rng(devices=[module.device] if module.device.type == "cuda" else []):
        images = torch.rand(1, 3, *image_size, device=module.device)
        sample_bytes = max(bytes_saved_for_backward(lambda probe=probe: probe(images)) for probe in probes)
    module.train(was_training)
    with torch.no_grad():
        for buffer, saved in zip(module.buffers(), buffers, strict=True):
            buffer.copy_(saved)
    processes_per_machine = max(1, trainer.num_devices if module.device.type == "cpu" else 1)
    budget = BUDGET_FRACTION * available_memory_bytes(module.device) / processes_per_machine
    name = type(module).__name__
    fitting = fitting_batch_size(batch_size, sample_bytes, budget, name, image_size, options)
    if fitting < batch_size:
        logger.warning(
            "%s: a training batch of %d images of %s px needs about %.1f GiB, more than the %.1f GiB "
            "this machine can give it; training with batches of %d instead. Set --data.train_batch_size to choose, "
            "or lower %s.",
            name, batch_size, "x".join(map(str, image_size)), BACKWARD_FACTOR * batch_size * sample_bytes / GIB, budget / GIB,
            fitting,
            ", ".join(options),
        )
        datamodule.train_batch_size = fitting
