"""Training length from the trainer, split into named phases by ratio (as anomalib's Dsr splits its budget).

A multi-phase model declares its phases in training order: a *trained* phase gets a share (a fraction in
``[0, 1]``) of the trained epochs, a *pass* (share ``None``) is exactly one epoch (a pass over the training
images that fits statistics, e.g. a memory bank). The budget is whatever the trainer was given:
``max_epochs``, or ``max_steps`` converted to epochs (``ceil(steps / optimiser steps per epoch)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from lightning.pytorch import Trainer

from .checks import require_number

__all__ = ["LIGHTNING_DEFAULT_EPOCHS", "PhaseSchedule", "epoch_budget"]

LIGHTNING_DEFAULT_EPOCHS = 1000
"""``max_epochs`` Lightning sets when the trainer gets neither ``max_epochs`` nor ``max_steps``."""


def epoch_budget(trainer: Trainer) -> int:
    """Epochs that ``trainer``'s fit will run: ``max_epochs``, or ``max_steps`` in epochs, whichever ends first.

    Call it once the trainer is attached (``configure_optimizers`` or later): a step budget needs the number
    of training batches, which ``trainer.estimated_stepping_batches`` sets up.

    Raises:
        ValueError: If the trainer has no finite budget (``max_epochs=-1`` without ``max_steps``).
    """
    if trainer.max_steps == -1 and trainer.max_epochs is not None and trainer.max_epochs > 0:
        return trainer.max_epochs
    steps = trainer.estimated_stepping_batches  # min(max_steps, steps of max_epochs); inf without a limit
    if not math.isfinite(steps):
        msg = (
            "This model plans its training (phases or learning-rate milestones) as fractions of a finite length: set "
            "the trainer's max_epochs or max_steps (e.g. --trainer.max_epochs 100)."
        )
        raise ValueError(msg)
    steps_per_epoch = max(1, math.ceil(trainer.num_training_batches / trainer.accumulate_grad_batches))
    return max(1, math.ceil(steps / steps_per_epoch))


class PhaseSchedule:
    """Epochs of each named phase for a given epoch budget.

    Trained phases split the budget left after the one-epoch passes by their shares (rounded, each phase with
    a share > 0 getting at least one epoch); the last trained phase takes what rounding leaves.

    Args:
        shares: Phase name -> share of the trained epochs (``>= 0``, summing to 1 over the trained phases),
            or ``None`` for a one-epoch pass; in training order.

    Example:
        >>> schedule = PhaseSchedule({"generator": 2 / 3, "comparator": 1 / 3})
        >>> schedule.epochs(150)
        {'generator': 100, 'comparator': 50}
        >>> PhaseSchedule({"discriminator": 0.5, "fine_tune": 0.5, "memory_bank": None}).epochs(3)
        {'discriminator': 1, 'fine_tune': 1, 'memory_bank': 1}
    """

    def __init__(self, shares: Mapping[str, float | None]) -> None:
        for name, share in shares.items():
            if share is not None:
                require_number(f"share of phase {name!r}", share, 0.0, strict=False)
        trained = [share for share in shares.values() if share is not None]
        if not trained or not math.isclose(sum(trained), 1.0):
            msg = f"The shares of the trained phases must sum to 1, got {dict(shares)}."
            raise ValueError(msg)
        self.shares = dict(shares)

    @property
    def names(self) -> tuple[str, ...]:
        """Phase names in training order."""
        return tuple(self.shares)

    def minimum_epochs(self) -> int:
        """Smallest budget that gives every pass and every phase with a share > 0 at least one epoch."""
        return sum(1 for share in self.shares.values() if share is None or share > 0)

    def epochs(self, budget: int) -> dict[str, int]:
        """Epochs per phase for a budget of ``budget`` epochs.

        A budget below :meth:`minimum_epochs` still gives a usable model: the passes get their epoch first,
        then the trained phases one epoch each in training order while epochs are left; the others get none.
        """
        if budget < self.minimum_epochs():
            left = budget - sum(1 for share in self.shares.values() if share is None)
            plan = {}
            for name, share in self.shares.items():
                plan[name] = 1 if share is None or (share > 0 and left > 0) else 0
                left -= int(share is not None and plan[name])
            return plan
        trained = budget - sum(1 for share in self.shares.values() if share is None)
        needed = [name for name, share in self.shares.items() if share]  # trained phases with a share > 0
        plan, left = {}, trained
        for name, share in self.shares.items():
            if share is None:
                plan[name] = 1
            elif not share:
                plan[name] = 0
            elif name == needed[-1]:
                plan[name] = left
            else:
                later = len(needed) - needed.index(name) - 1  # phases after this one that need an epoch each
                plan[name] = min(max(1, round(share * trained)), left - later)
                left -= plan[name]
        return plan

    def phase_of_epoch(self, epoch: int, budget: int) -> int:
        """Index in :attr:`names` of the phase of zero-based ``epoch`` (the last phase beyond the budget)."""
        end = 0
        for index, epochs in enumerate(self.epochs(budget).values()):
            end += epochs
            if epoch < end:
                return index
        return len(self.shares) - 1
