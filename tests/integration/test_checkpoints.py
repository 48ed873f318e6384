"""Checkpoints of every plugin model: resume in the middle of a training phase, ``weights_only`` loads,
and checkpoints written on a GPU loaded on a CPU-only machine.

Each model trains a few epochs per phase on a tiny SurfaceDemo, saving a checkpoint after every epoch.
A second run resumes from the checkpoint after the first epoch (the middle of the first phase) and
must go through the same remaining phases, epochs and optimiser steps and end in exactly the same
state as the uninterrupted run. Both runs see the same batches in the same order and reseed every
training step, so any state missing from the checkpoint (optimiser moments, schedulers, phase
buffers, templates, running statistics) shows up as a difference.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from anomalib.callbacks.checkpoint import ModelCheckpoint
from anomalib.data import Batch
from anomalib.post_processing import PostProcessor
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader

from anomalib_surface.data import SurfaceDemo
from anomalib_surface.data.surface_demo import make_surface_demo
from anomalib_surface.post_processing import BidirectionalIntersection, DoubleThresholdMorphology

IMAGE_SIZE = 64
DEMO_SETTINGS = {"image_size": IMAGE_SIZE, "num_train": 8, "num_test_good": 2, "num_test_defect_per_type": 1}
MODELS = {
    ep.name: ep
    for ep in sorted(entry_points(group="anomalib.models"), key=lambda ep: ep.name)
    if ep.value.startswith("anomalib_surface.")
}
# Two epochs in every trained phase, so that the checkpoint after epoch 0 is in the middle of one: the trainer's
# epochs (one pass epoch counts one) and the phase ratios that split them.
MAX_EPOCHS = {"Clgan": 3, "Dmp": 3, "Locc": 5, "Pgcn": 4, "Tocoad": 5}
PHASE_RATIOS: dict[str, dict[str, float]] = {
    "Locc": {"alignment_ratio": 0.5},  # alignment x2, centres, localisation x2
    "Pgcn": {"generator_ratio": 0.5},  # generator x2, comparator x2
    "Tocoad": {"discriminator_ratio": 0.5},  # stage 1 x2, stage 2 x2, memory bank
}
EXPECTED_PHASES = {"Locc": [0, 0, 1, 2, 2], "Pgcn": [0, 0, 1, 1], "Tocoad": [0, 0, 1, 1, 2]}


class OrderedSurfaceDemo(SurfaceDemo):
    """SurfaceDemo whose training batches come in file order, so that two runs see the same batches."""

    def train_dataloader(self) -> DataLoader:
        """The training loader of SurfaceDemo without shuffling."""
        loader = super().train_dataloader()
        return DataLoader(loader.dataset, batch_size=loader.batch_size, collate_fn=loader.collate_fn, num_workers=0)


class ReseedAndRecord(Callback):
    """Reseed every training step from its (epoch, batch) position and record where each epoch starts.

    ``starts`` holds ``(epoch, global_step, phase)`` at the first batch of every epoch; ``phase`` is the
    model's phase buffer (``None`` for single-phase models).
    """

    def __init__(self, phase_buffer: str | None) -> None:
        self.phase_buffer = phase_buffer
        self.starts: list[tuple[int, int, int | None]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: AnomalibModule, batch: Batch, batch_idx: int) -> None:
        del batch
        seed_everything(1000 * trainer.current_epoch + batch_idx, verbose=False)
        if batch_idx == 0:
            phase = pl_module.get_buffer(self.phase_buffer) if self.phase_buffer else None
            self.starts.append((trainer.current_epoch, trainer.global_step, None if phase is None else int(phase)))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SurfaceDemo dataset: 8 training images of 64 px, 2 good + 1 per defect type for test."""
    return make_surface_demo(tmp_path_factory.mktemp("surface_demo"), categories="brick", **DEMO_SETTINGS)


def build_model(name: str) -> AnomalibModule:
    """Model ``name`` in its smoke-test configuration with :data:`PHASE_RATIOS`, at ``IMAGE_SIZE``."""
    model_class = MODELS[name].load()
    pre_processor = model_class.configure_pre_processor(image_size=(IMAGE_SIZE, IMAGE_SIZE))
    arguments = {**model_class.smoke_test_init_args(), **PHASE_RATIOS.get(name, {})}
    return model_class(pre_processor=pre_processor, visualizer=False, **arguments)


def fit(name: str, demo_root: Path, root: Path, ckpt_path: Path | None = None) -> tuple[AnomalibModule, Engine, ReseedAndRecord]:
    """Fit model ``name`` (from scratch or resumed from ``ckpt_path``), checkpointing after every epoch."""
    seed_everything(0, verbose=False)
    model = build_model(name)
    recorder = ReseedAndRecord(model.phase_buffer)
    checkpoints = ModelCheckpoint(dirpath=root / "ckpt", filename="{epoch}", save_top_k=-1, save_on_train_epoch_end=True)
    datamodule = OrderedSurfaceDemo(
        root=demo_root, category="brick", train_batch_size=4, eval_batch_size=8, num_workers=0, **DEMO_SETTINGS,
    )
    engine = Engine(
        accelerator="cpu", devices=1, max_epochs=MAX_EPOCHS[name], default_root_dir=root, logger=False,
        enable_progress_bar=False, limit_val_batches=1, callbacks=[recorder, checkpoints],
    )
    engine.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    return model, engine, recorder


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


def assert_same_state(actual: dict[str, Any], expected: dict[str, Any]) -> None:
    """Same keys and bit-identical tensors."""
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value, rtol=0, atol=0, msg=lambda message, key=key: f"{key}: {message}")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_resume_mid_phase_matches_an_uninterrupted_run(name: str, demo_root: Path, tmp_path: Path) -> None:
    uninterrupted, engine, full_run = fit(name, demo_root, tmp_path / "full")
    max_epochs = engine.trainer.max_epochs
    assert [epoch for epoch, _, _ in full_run.starts] == list(range(max_epochs))
    if name in EXPECTED_PHASES:
        assert [phase for _, _, phase in full_run.starts] == EXPECTED_PHASES[name]

    mid_phase = tmp_path / "full" / "ckpt" / "epoch=0.ckpt"
    checkpoint = torch.load(mid_phase, map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == full_run.starts[1][1]
    if uninterrupted.phase_buffer:
        assert int(checkpoint["state_dict"][uninterrupted.phase_buffer]) == full_run.starts[0][2]

    # A checkpoint written on a GPU: resuming it on this CPU-only machine maps it to the CPU.
    gpu_checkpoint = tmp_path / "gpu" / "epoch=0.ckpt"
    gpu_checkpoint.parent.mkdir()
    with storages_tagged_as_cuda():
        torch.save(checkpoint, gpu_checkpoint)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(gpu_checkpoint, weights_only=True)

    resumed, resumed_engine, resumed_run = fit(name, demo_root, tmp_path / "resumed", ckpt_path=gpu_checkpoint)
    assert resumed_run.starts == full_run.starts[1:]  # same epochs, global steps and phases from epoch 1 on
    assert resumed_engine.trainer.global_step == engine.trainer.global_step
    assert resumed.device.type == "cpu"
    assert_same_state(resumed.state_dict(), uninterrupted.state_dict())

    # Tocoad's memory-bank epoch takes no optimiser step, so anomalib's ModelCheckpoint does not save it per epoch.
    last = tmp_path / "final.ckpt"
    engine.trainer.save_checkpoint(last)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(last) == []  # plain data only: loads anywhere
    weights = torch.load(last, map_location="cpu", weights_only=True)
    reloaded = type(uninterrupted).load_from_checkpoint(last, map_location="cpu")
    assert_same_state(reloaded.state_dict(), weights["state_dict"])
    assert_same_state(reloaded.state_dict(), uninterrupted.state_dict())


class PoisonFromEpoch(Callback):
    """Fill every training batch with NaN from epoch ``epoch`` on (a broken image or a diverging run)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: AnomalibModule, batch: Batch, batch_idx: int) -> None:
        del pl_module, batch_idx
        if trainer.current_epoch >= self.epoch:
            batch.image.fill_(float("nan"))


@pytest.mark.parametrize("name", MODELS)
def test_nonfinite_loss_stops_training_and_keeps_the_last_good_checkpoint(name: str, demo_root: Path, tmp_path: Path) -> None:
    """NaN in epoch 1 stops the run with NonFiniteLossError; epoch 0's checkpoint is finite and loads safely."""
    from anomalib_surface.components import NonFiniteLossError

    seed_everything(0, verbose=False)
    model = build_model(name)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, save_on_train_epoch_end=True)
    datamodule = SurfaceDemo(root=demo_root, category="brick", train_batch_size=4, eval_batch_size=8, num_workers=0, **DEMO_SETTINGS)
    engine = Engine(
        accelerator="cpu", devices=1, max_epochs=MAX_EPOCHS[name], default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, limit_val_batches=1, callbacks=[PoisonFromEpoch(1), checkpoints],
    )
    with pytest.raises(NonFiniteLossError, match=r"Non-finite loss at training step \d+: .*=nan"):
        engine.fit(model, datamodule=datamodule)
    assert sorted(path.name for path in (tmp_path / "ckpt").iterdir()) == ["epoch=0.ckpt"]
    saved = torch.load(tmp_path / "ckpt" / "epoch=0.ckpt", map_location="cpu", weights_only=True)
    assert saved["epoch"] == 0
    # Network weights only: the post-processor's statistics stay NaN until a validation (Tocoad validates from stage 3).
    weights = {key: value for key, value in saved["state_dict"].items() if key.startswith("model.") and value.is_floating_point()}
    assert weights
    assert not [key for key, value in weights.items() if not torch.isfinite(value).all()]
    reloaded = type(model).load_from_checkpoint(tmp_path / "ckpt" / "epoch=0.ckpt", map_location="cpu")
    reloaded_state = reloaded.state_dict()
    assert_same_state({key: reloaded_state[key] for key in weights}, weights)


@pytest.mark.parametrize(
    "post_processor",
    [
        DoubleThresholdMorphology(low_factor=1.5, kernel_shape="cross", operations=["close"], min_area=4, label_mode="score"),
        BidirectionalIntersection(flip="vertical", use_directional=False, image_sensitivity=0.3),
    ],
    ids=lambda post_processor: type(post_processor).__name__,
)
def test_post_processor_settings_load_with_weights_only(post_processor: PostProcessor, tmp_path: Path) -> None:
    """What a model's checkpoint stores of a plugin post-processor (on any anomalib model) is plain data."""
    post_processor.image_min.fill_(-1.0)
    path = tmp_path / "post_processor.ckpt"
    torch.save({"config": post_processor.checkpoint_config(), "state_dict": post_processor.state_dict()}, path)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == []
    saved = torch.load(path, map_location="cpu", weights_only=True)
    restored = type(post_processor)()
    restored.load_checkpoint_config(saved["config"])
    restored.load_state_dict(saved["state_dict"])
    assert restored.checkpoint_config() == post_processor.checkpoint_config()
    assert float(restored.image_min) == -1.0
