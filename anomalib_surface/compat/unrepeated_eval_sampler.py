"""Validation and test under DDP see every image exactly once.

Lightning gives validation and test loaders a ``DistributedSampler``, which pads the dataset by repeating
its first images until every process has as many: with 9 validation images on 2 processes, one image is
scored twice. The adaptive thresholds, the normalisation statistics, the double-threshold statistics and
every metric are then computed over the repeated image as if it were two. Lightning already uses an
unrepeated sampler for prediction; this workaround uses it for validation and test too (processes may then
run one batch fewer, which evaluation allows: no gradient synchronisation, metrics and statistics are
synchronised once at the end of the epoch).
"""

from __future__ import annotations

import functools
from typing import Any

__all__ = ["applies", "install"]

EVALUATION_STAGES = ("validate", "test")


def _connector() -> Any:  # noqa: ANN401 - module
    from lightning.pytorch.trainer.connectors import data_connector

    return data_connector


def applies() -> bool:
    """Whether Lightning's validation sampler pads: 3 images on 2 processes give rank 1 two images."""
    from lightning.pytorch.trainer.states import RunningStage
    from torch.utils.data import DataLoader

    connector = _connector()
    if getattr(connector._get_distributed_sampler, "_anomalib_surface_patched", False):  # noqa: SLF001
        return False
    sampler = connector._get_distributed_sampler(  # noqa: SLF001
        DataLoader(range(3)), shuffle=False, overfit_batches=0, mode=RunningStage.VALIDATING, num_replicas=2, rank=1,
    )
    return len(list(sampler)) == 2  # noqa: PLR2004


def install() -> None:
    """Wrap Lightning's ``_get_distributed_sampler`` so validation and test samplers do not repeat images."""
    from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSamplerWrapper
    from lightning.pytorch.trainer.states import RunningStage

    connector = _connector()
    original = connector._get_distributed_sampler  # noqa: SLF001
    if getattr(original, "_anomalib_surface_patched", False):
        return

    @functools.wraps(original)
    def _get_distributed_sampler(dataloader: Any, shuffle: bool, overfit_batches: Any, mode: Any = None, **kwargs: Any) -> Any:  # noqa: ANN401, FBT001
        if mode in (RunningStage.VALIDATING, RunningStage.TESTING) and not shuffle:
            kwargs.setdefault("seed", 0)
            return UnrepeatedDistributedSamplerWrapper(dataloader.sampler, shuffle=False, **kwargs)
        return original(dataloader, shuffle, overfit_batches, mode, **kwargs)

    _get_distributed_sampler._anomalib_surface_patched = True  # type: ignore[attr-defined]
    connector._get_distributed_sampler = _get_distributed_sampler  # noqa: SLF001
