"""Precise BatchNorm: running statistics as the plain average over a span of training batches."""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["PreciseBatchNorm"]


class PreciseBatchNorm:
    """Recompute the running statistics of a module's BatchNorm layers from the batches that follow.

    The default exponential moving average (momentum 0.1) lags behind fast-changing weights: after a few
    dozen steps it still holds much of its initial ``0 / 1`` statistics and of the early weights, so eval-mode
    outputs can differ completely from train-mode ones. :meth:`start` resets the statistics and sets
    ``momentum=None``, so that PyTorch keeps the cumulative average over the following train-mode forward
    passes; :meth:`stop` restores the original momenta (the statistics are kept).

    Example:
        >>> import torch
        >>> norm = nn.BatchNorm1d(1)
        >>> precise = PreciseBatchNorm(norm)
        >>> precise.start()
        >>> for value in (1.0, 3.0):
        ...     _ = norm(torch.tensor([[value - 1], [value + 1]]))
        >>> precise.stop()
        >>> norm.running_mean, norm.momentum
        (tensor([2.]), 0.1)

    Args:
        module: Module whose BatchNorm layers (itself included) are recalibrated.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._momenta: dict[_BatchNorm, float | None] = {}

    def start(self) -> None:
        """Reset the statistics; from now on they are the average over all train-mode batches."""
        for norm in self.module.modules():
            if isinstance(norm, _BatchNorm) and norm.track_running_stats:
                self._momenta.setdefault(norm, norm.momentum)
                norm.reset_running_stats()
                norm.momentum = None

    def stop(self) -> None:
        """Keep the statistics gathered since :meth:`start` and restore the momenta they replaced."""
        for norm, momentum in self._momenta.items():
            norm.momentum = momentum
        self._momenta.clear()
