"""Training plumbing shared by the plugin models: DDP set-up, buffer broadcast, phases, loss logging.

Each model lists :class:`SurfaceModule` *after* ``AnomalibModule`` in its bases
(``class Clgan(AnomalibModule, SurfaceModule)``): anomalib finds models among the direct subclasses of
``AnomalibModule``, and the method resolution order (model, ``AnomalibModule``, ``SurfaceModule``,
``LightningModule``) lets these hooks replace Lightning's empty ones. A model that overrides one of the hooks
below calls ``super()``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch
from lightning.pytorch import LightningModule

from .distributed import allow_unused_parameters, broadcast_buffers
from .phase_schedule import LIGHTNING_DEFAULT_EPOCHS, PhaseSchedule, epoch_budget
from .training_guards import check_finite

__all__ = ["SurfaceModule"]

logger = logging.getLogger(__name__)


class SurfaceModule(LightningModule):
    """Hooks and declarations shared by the anomalib-surface models.

    Class attributes, read by the test harnesses (``anomalib_surface.testing``):
        phases: Phase names in training order; ``()`` for a single-phase model.
        phase_buffer: State-dict name of the buffer holding the index (in :attr:`phases`) of the current phase;
            ``"phase"`` for multi-phase models, ``None`` otherwise.
        training_set_state: State-dict key prefixes computed from the whole training set (equal on every DDP
            rank and to a one-process run).

    A multi-phase model passes its :class:`PhaseSchedule` (built from its ``<phase>_ratio`` options) to
    :meth:`set_phase_schedule` in ``__init__``; the phase then follows the epoch, so a run resumed from a
    checkpoint continues in the right phase.
    """

    phases: ClassVar[tuple[str, ...]] = ()
    phase_buffer: ClassVar[str | None] = None
    training_set_state: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401 - LightningModule's signature
        super().__init__(*args, **kwargs)
        self.phase_schedule: PhaseSchedule | None = None
        self.epochs_planned: int | None = None
        if self.phases:
            self.register_buffer("phase", torch.tensor(0))
            self.phase: torch.Tensor

    def set_phase_schedule(self, schedule: PhaseSchedule) -> None:
        """Use ``schedule`` (its phase names must be :attr:`phases`) to pick the phase of each epoch."""
        if schedule.names != self.phases:
            msg = f"{type(self).__name__}: the schedule's phases {schedule.names} differ from phases {self.phases}."
            raise ValueError(msg)
        self.phase_schedule = schedule

    @property
    def current_phase(self) -> str | None:
        """Name of the current training phase (the last one reached once training is over); ``None`` if single-phase."""
        return self.phases[int(self.phase)] if self.phases else None

    def setup(self, stage: str) -> None:
        """Let DDP accept parameters without gradient in models that train parts separately.

        That is every multi-phase model (each phase trains its own part) and every model with manual
        optimisation (each backward pass reaches one network).
        """
        del stage
        if self.phases or not self.automatic_optimization:
            allow_unused_parameters(self._trainer)

    def on_fit_start(self) -> None:
        """Skip Lightning's sanity validation, as :attr:`trainer_arguments` asks of anomalib's ``Engine``.

        A plain Lightning ``Trainer`` ignores ``trainer_arguments``; the models cannot validate before training
        has started (Locc has no template yet, Tocoad no memory bank).
        """
        self.trainer.num_sanity_val_steps = 0

    def on_train_start(self) -> None:
        """Read the training length from the trainer and log it (with the phase plan of a multi-phase model)."""
        trainer = self.trainer
        name = type(self).__name__
        if trainer.max_steps == -1 and trainer.max_epochs == LIGHTNING_DEFAULT_EPOCHS:
            logger.warning(
                "%s: %d epochs, Lightning's default when the trainer gets neither max_epochs nor max_steps "
                "(set --trainer.max_epochs or Engine(max_epochs=...); configs/model/%s.yaml gives the paper's).",
                name,
                LIGHTNING_DEFAULT_EPOCHS,
                name.lower(),
            )
        if self.phase_schedule is None:
            logger.info("%s: training for max_epochs=%s, max_steps=%s.", name, trainer.max_epochs, trainer.max_steps)
            return
        self.epochs_planned = epoch_budget(trainer)
        plan = self.phase_schedule.epochs(self.epochs_planned)
        logger.info("%s: %d epochs: %s.", name, self.epochs_planned, ", ".join(f"{k} {v}" for k, v in plan.items()))
        if self.epochs_planned < self.phase_schedule.minimum_epochs():
            skipped = [phase for phase, epochs in plan.items() if not epochs and self.phase_schedule.shares[phase]]
            logger.warning(
                "%s: %d epoch(s) are too few for all its phases (it needs %d): %s not trained. Give the trainer "
                "more epochs (max_epochs or max_steps) for a useful model.",
                name,
                self.epochs_planned,
                self.phase_schedule.minimum_epochs(),
                ", ".join(skipped),
            )

    def on_train_epoch_start(self) -> None:
        """Enter the phase of the current epoch (also right after resuming from a checkpoint)."""
        if self.phase_schedule is None:
            return
        index = self.phase_schedule.phase_of_epoch(self.current_epoch, self.epochs_planned)
        if index != int(self.phase) or self.current_epoch == 0:
            logger.info("%s: phase %r from epoch %d.", type(self).__name__, self.phases[index], self.current_epoch)
        self.phase.fill_(index)

    def on_train_epoch_end(self) -> None:
        """Give every DDP rank rank 0's buffers; stop after the last planned epoch of a multi-phase model.

        DDP broadcasts buffers only before forward passes under automatic optimisation, and each rank's last
        batch updates its own copy afterwards; Lightning saves rank 0's. A step budget has no epoch limit, so
        the schedule ends the run itself (its last pass may take no optimiser step).
        """
        broadcast_buffers(self.model)
        if self.epochs_planned is not None and self.current_epoch + 1 >= self.epochs_planned:
            self.trainer.should_stop = True

    def on_validation_start(self) -> None:
        """Validate with rank 0's buffers on every DDP rank (see :meth:`on_train_epoch_end`)."""
        broadcast_buffers(self.model)

    def log_train_losses(self, loss: torch.Tensor, terms: dict[str, torch.Tensor], batch_size: int) -> None:
        """Stop on a non-finite loss, then log ``train_loss`` and each term as ``train_<name>``, per epoch.

        Raises:
            NonFiniteLossError: If ``loss`` or a term is NaN or infinite (names the term and the step).
        """
        check_finite({**terms, "loss": loss}, self.global_step)
        logs = {f"train_{name}": value.detach() for name, value in terms.items()}
        self.log_dict(logs, on_epoch=True, batch_size=batch_size)
        self.log("train_loss", loss.detach(), on_epoch=True, prog_bar=True, batch_size=batch_size)
