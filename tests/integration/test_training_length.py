"""Training length comes from the trainer for every plugin model, with or without anomalib's Engine.

Each model fits on a tiny SurfaceDemo with a plain Lightning ``Trainer`` (Lightning's defaults, no Engine) for
one epoch more than it has phases: it must run exactly that many epochs (no model option overrides the
trainer), go through every phase in order, and log ``train_loss`` per epoch.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
from anomalib.models.components import AnomalibModule
from lightning.pytorch.callbacks import Callback

import anomalib_surface.models
from anomalib_surface.data import SurfaceDemo
from anomalib_surface.data.surface_demo import make_surface_demo

IMAGE_SIZE = 64
DEMO_SETTINGS = {"image_size": IMAGE_SIZE, "num_train": 4, "num_test_good": 1, "num_test_defect_per_type": 1}


class EpochRecorder(Callback):
    """The phase and whether ``train_loss`` was logged for the epoch, at the end of every training epoch."""

    def __init__(self) -> None:
        self.epochs: list[tuple[str | None, bool]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: AnomalibModule) -> None:
        self.epochs.append((pl_module.current_phase, "train_loss_epoch" in trainer.callback_metrics))
        trainer.callback_metrics.pop("train_loss_epoch", None)


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_surface_demo(tmp_path_factory.mktemp("surface_demo"), categories="brick", **DEMO_SETTINGS)


@pytest.mark.parametrize("name", anomalib_surface.models.__all__)
def test_a_plain_lightning_trainer_sets_the_length(name: str, demo_root: Path, tmp_path: Path) -> None:
    model_class = getattr(anomalib_surface.models, name)
    model = model_class(
        pre_processor=model_class.configure_pre_processor(image_size=(IMAGE_SIZE, IMAGE_SIZE)),
        visualizer=False,
        **model_class.smoke_test_init_args(),
    )
    epochs = len(model_class.phases) + 1
    recorder = EpochRecorder()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=epochs, default_root_dir=tmp_path, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[recorder], limit_val_batches=1,
    )
    datamodule = SurfaceDemo(
        root=demo_root, category="brick", train_batch_size=4, eval_batch_size=4, num_workers=0, **DEMO_SETTINGS,
    )
    trainer.fit(model, datamodule=datamodule)

    assert trainer.current_epoch == epochs
    phases = [phase for phase, _ in recorder.epochs]
    if model_class.phases:
        assert sorted(set(phases), key=phases.index) == list(model_class.phases)  # every phase, in order
        assert model.get_buffer(model_class.phase_buffer) == len(model_class.phases) - 1
    passes = {"centres", "memory_bank"}  # one-epoch passes that fit statistics, without a loss
    assert all(logged for phase, logged in recorder.epochs if phase not in passes), recorder.epochs
