"""Checkpoints: a run resumed from the checkpoint after its first epoch (written as on a GPU, loaded on the CPU)
ends in exactly the state of the uninterrupted run, in the same phases, and the final checkpoint is plain data.

Both runs see the same batches in the same order and reseed every training step from its position, so any
state missing from the checkpoint (optimiser moments, schedulers, phase buffers, templates, running
statistics) shows up as a difference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import lightning as L
import torch
from anomalib.callbacks.checkpoint import ModelCheckpoint
from anomalib.data import Batch
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from anomalib_surface.data import SurfaceDemo

from .case import ConformanceCase, cpu_engine, demo_datamodule
from .outputs import assert_same_state


class OrderedSurfaceDemo(SurfaceDemo):
    """SurfaceDemo whose training batches come in file order, so that two runs see the same batches."""

    def train_dataloader(self) -> DataLoader:
        """The training loader of SurfaceDemo without shuffling."""
        loader = super().train_dataloader()
        return DataLoader(loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn, num_workers=0)


class ReseedAndRecord(Callback):
    """Reseed every training step from its (epoch, batch) position and record where each epoch starts.

    ``starts`` holds ``(epoch, global_step, phase)`` at the first batch of every epoch; ``phase`` is the value
    of the model's phase buffer (``None`` for single-phase models).
    """

    def __init__(self, phase_buffer: str | None) -> None:
        self.phase_buffer = phase_buffer
        self.starts: list[tuple[int, int, int | None]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: AnomalibModule, batch: Batch, batch_idx: int) -> None:
        """Reseed; at an epoch's first batch, record its epoch, global step and phase."""
        del batch
        seed_everything(1000 * trainer.current_epoch + batch_idx, verbose=False)
        if batch_idx == 0:
            phase = pl_module.get_buffer(self.phase_buffer) if self.phase_buffer else None
            self.starts.append((trainer.current_epoch, trainer.global_step, None if phase is None else int(phase)))


@contextlib.contextmanager
def storages_tagged_as_cuda() -> Iterator[None]:
    """Make ``torch.save`` write every storage with the location ``cuda:0``, as on a GPU machine.

    The storage location is the only device-dependent part of a checkpoint file; loading such a file
    without ``map_location`` on a machine without CUDA fails.
    """
    original = torch.serialization.location_tag
    torch.serialization.location_tag = lambda storage: "cuda:0"
    try:
        yield
    finally:
        torch.serialization.location_tag = original


def fit_recorded(
    case: ConformanceCase, data_root: Path, root: Path, ckpt_path: Path | None = None,
) -> tuple[AnomalibModule, Engine, ReseedAndRecord]:
    """Fit the case (from scratch or resumed from ``ckpt_path``) on a budget of two epochs per smoke epoch,
    checkpointing after every epoch in ``root / "ckpt"``."""
    seed_everything(0, verbose=False)
    model = case.build_model()
    recorder = ReseedAndRecord(case.spec.phase_buffer)
    checkpoints = ModelCheckpoint(dirpath=root / "ckpt", filename="{epoch}", save_top_k=-1, save_on_train_epoch_end=True)
    # Two epochs per smoke epoch: with the budget split over the phases, the first checkpoint is mid-phase.
    budget = replace(case, max_epochs=2 * case.epochs)
    engine = cpu_engine(budget, root, callbacks=[recorder, checkpoints], limit_val_batches=1)
    engine.fit(model, datamodule=demo_datamodule(data_root, OrderedSurfaceDemo), ckpt_path=ckpt_path)
    return model, engine, recorder


def check_resume(case: ConformanceCase, data_root: Path, workdir: Path) -> None:
    """Resume from the checkpoint after epoch 0 equals the uninterrupted run; ``weights_only`` final checkpoint."""
    uninterrupted, engine, full_run = fit_recorded(case, data_root, workdir / "full")
    max_epochs = engine.trainer.max_epochs
    assert [epoch for epoch, _, _ in full_run.starts] == list(range(max_epochs)), f"{case.name}: {full_run.starts}"
    if case.spec.phase_buffer is not None:
        phases = [phase for _, _, phase in full_run.starts]
        assert phases == sorted(phases), f"{case.name}: phases out of order: {phases}"
        assert len(set(phases)) == len(case.spec.phases), (
            f"{case.name}: {len(set(phases))} distinct values of {case.spec.phase_buffer} in {max_epochs} epochs "
            f"for phases {case.spec.phases}"
        )

    first_epoch = workdir / "full" / "ckpt" / "epoch=0.ckpt"
    checkpoint = torch.load(first_epoch, map_location="cpu", weights_only=True)
    if max_epochs > 1:
        assert checkpoint["global_step"] == full_run.starts[1][1]
    if case.spec.phase_buffer is not None:
        assert int(checkpoint["state_dict"][case.spec.phase_buffer]) == full_run.starts[0][2]

    # A checkpoint written on a GPU: resuming it on a CPU-only machine maps it to the CPU.
    gpu_checkpoint = workdir / "gpu" / "epoch=0.ckpt"
    gpu_checkpoint.parent.mkdir(parents=True)
    with storages_tagged_as_cuda():
        torch.save(checkpoint, gpu_checkpoint)
    resumed, resumed_engine, resumed_run = fit_recorded(case, data_root, workdir / "resumed", ckpt_path=gpu_checkpoint)
    assert resumed_run.starts == full_run.starts[1:], f"{case.name}: resumed {resumed_run.starts}, full {full_run.starts}"
    assert resumed_engine.trainer.global_step == engine.trainer.global_step
    assert resumed.device.type == "cpu"
    assert_same_state(resumed.state_dict(), uninterrupted.state_dict(), f"{case.name} resumed vs uninterrupted")

    # An epoch without optimiser step (e.g. building a memory bank) is not saved by ModelCheckpoint: save the end.
    last = workdir / "final.ckpt"
    engine.trainer.save_checkpoint(last)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(last)
    assert unsafe == [], f"{case.name}: the checkpoint needs weights_only=False for {unsafe}"
    weights = torch.load(last, map_location="cpu", weights_only=True)
    reloaded = case.model_class.load_from_checkpoint(last, map_location="cpu")
    assert_same_state(reloaded.state_dict(), weights["state_dict"], f"{case.name} reloaded vs file")
    assert_same_state(reloaded.state_dict(), uninterrupted.state_dict(), f"{case.name} reloaded vs trained")
