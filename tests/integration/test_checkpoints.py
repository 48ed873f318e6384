"""Checkpoints of the plugin models beyond the conformance kit's resume check (``anomalib_surface.testing``):
a non-finite loss keeps the last good checkpoint, and plugin post-processors' settings load with ``weights_only``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from anomalib.callbacks.checkpoint import ModelCheckpoint
from anomalib.data import Batch
from anomalib.models.components import AnomalibModule
from anomalib.post_processing import PostProcessor
from lightning.pytorch.callbacks import Callback

from anomalib_surface.post_processing import BidirectionalIntersection, DoubleThresholdMorphology
from anomalib_surface.testing import ConformanceCase, make_demo_data, plugin_models
from anomalib_surface.testing.case import cpu_engine, demo_datamodule
from anomalib_surface.testing.outputs import assert_same_state

CASES = [ConformanceCase(model_class) for model_class in plugin_models()]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The conformance kit's tiny SurfaceDemo dataset."""
    return make_demo_data(tmp_path_factory.mktemp("surface_demo"))


class PoisonFromEpoch(Callback):
    """Fill every training batch with NaN from epoch ``epoch`` on (a broken image or a diverging run)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: AnomalibModule, batch: Batch, batch_idx: int) -> None:
        del pl_module, batch_idx
        if trainer.current_epoch >= self.epoch:
            batch.image.fill_(float("nan"))


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_nonfinite_loss_stops_training_and_keeps_the_last_good_checkpoint(
    case: ConformanceCase, demo_root: Path, tmp_path: Path,
) -> None:
    """NaN from epoch 1 on stops the run with NonFiniteLossError at the first loss that sees it; epoch 0's
    checkpoint is finite and loads safely."""
    from anomalib_surface.components import NonFiniteLossError
    from anomalib_surface.components.finite_inputs import NonFiniteInputError

    model = case.build_model()
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="{epoch}", save_top_k=-1, save_on_train_epoch_end=True)
    # Two epochs per smoke epoch, so that epoch 1 is always trained.
    engine = cpu_engine(
        ConformanceCase(case.model_class, max_epochs=2 * case.epochs), tmp_path,
        callbacks=[PoisonFromEpoch(1), checkpoints], limit_val_batches=1,
    )
    # The pre-processor's input check (NonFiniteInputError) or the loss check stops it, whichever sees the NaN first.
    with pytest.raises((NonFiniteLossError, NonFiniteInputError), match=r"Non-finite"):
        engine.fit(model, datamodule=demo_datamodule(demo_root))
    # The epoch that raised wrote no checkpoint; epochs before it without a loss (Locc's centres) did.
    saved_epochs = sorted(int(path.stem.removeprefix("epoch=")) for path in (tmp_path / "ckpt").iterdir())
    assert saved_epochs == list(range(engine.trainer.current_epoch)), saved_epochs
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
