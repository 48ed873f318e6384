"""Large, non-square images (640 x 512 camera frames): every plugin model through its pre-processor's Resize,
the fully convolutional ones at full resolution, and Tocoad with anomalib's Tiler.

Each model is trained at a reduced non-square size (one batch per phase) and then predicts 640 x 512 frames,
which its pre-processor resizes to the training size.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch
from anomalib.callbacks import TilerConfigurationCallback
from anomalib.engine import Engine
from anomalib.models.components import AnomalibModule

from anomalib_surface.data import SurfaceDemo
from anomalib_surface.data.surface_demo import make_surface_demo
from anomalib_surface.models.tocoad import Tocoad

FRAME = (512, 640)  # height, width of a 640 x 512 camera frame
TRAIN_SIZE = (64, 128)  # reduced non-square training size, valid for every smoke configuration
DEMO_SETTINGS = {"image_size": 64, "num_train": 4, "num_test_good": 1, "num_test_defect_per_type": 1}
MODELS = {
    ep.name: ep
    for ep in sorted(entry_points(group="anomalib.models"), key=lambda ep: ep.name)
    if ep.value.startswith("anomalib_surface.")
}
# Models whose networks take any input size: they also run at the frame's full resolution.
FULL_RESOLUTION = ["Clgan", "Dmp", "Tocoad"]


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory: pytest.TempPathFactory) -> SurfaceDemo:
    root = make_surface_demo(tmp_path_factory.mktemp("surface_demo"), categories="brick", **DEMO_SETTINGS)
    return SurfaceDemo(root=root, category="brick", train_batch_size=4, eval_batch_size=4, num_workers=0, **DEMO_SETTINGS)


def build_model(model_class: type[AnomalibModule], image_size: tuple[int, int]) -> AnomalibModule:
    """Smoke-test configuration of ``model_class`` whose pre-processor resizes to ``image_size``."""
    arguments = model_class.smoke_test_init_args()
    if "image_size" in arguments:  # Pgcn: its patch grid follows the input size
        arguments["image_size"] = image_size
    return model_class(pre_processor=model_class.configure_pre_processor(image_size=image_size), visualizer=False, **arguments)


def fit(model: AnomalibModule, datamodule: SurfaceDemo, root: Path, **engine_options: object) -> None:
    """One training batch per epoch, one epoch per training phase, no validation."""
    engine = Engine(
        accelerator="cpu", devices=1, max_epochs=max(1, len(type(model).phases)), default_root_dir=root, logger=False,
        enable_progress_bar=False, limit_train_batches=1, limit_val_batches=0, **engine_options,
    )
    engine.fit(model, datamodule=datamodule)


def predict(model: AnomalibModule, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores ``[B]`` and anomaly maps ``[B, 1, h, w]`` of the exportable forward (pre-processing included)."""
    with torch.no_grad():
        batch = model.eval()(images)
    return batch.pred_score, batch.anomaly_map


@pytest.mark.parametrize("name", sorted(MODELS))
def test_trained_at_a_non_square_size_predicts_640x512_frames(name: str, datamodule: SurfaceDemo, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(MODELS[name].load(), TRAIN_SIZE)
    fit(model, datamodule, tmp_path)
    scores, maps = predict(model, torch.rand(2, 3, *FRAME))
    assert scores.shape == (2,)
    assert maps.shape == (2, 1, *TRAIN_SIZE)
    assert torch.isfinite(scores).all() and torch.isfinite(maps).all()


@pytest.mark.parametrize("name", FULL_RESOLUTION)
def test_fully_convolutional_models_predict_at_full_resolution(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(MODELS[name].load(), FRAME)
    if isinstance(model, Tocoad):  # untrained: a random memory bank of the right width
        embedding = model.model.embed(torch.rand(1, 3, 64, 64))
        model.model.memory_bank = torch.randn(32, embedding.shape[1])
    scores, maps = predict(model, torch.rand(1, 3, *FRAME))
    assert maps.shape == (1, 1, *FRAME)
    assert torch.isfinite(scores).all() and torch.isfinite(maps).all()


def test_tocoad_with_anomalibs_tiler(datamodule: SurfaceDemo, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model(Tocoad, TRAIN_SIZE)
    fit(model, datamodule, tmp_path, callbacks=[TilerConfigurationCallback(enable=True, tile_size=64, stride=64)])
    assert model.model.tiler is not None
    # The bank holds the features of whole training images: 4 images x (64/8 x 128/8) patches, 10 % kept.
    assert model.model.memory_bank.shape[0] == round(0.1 * 4 * 8 * 16)

    scores, maps = predict(model, torch.rand(2, 3, *FRAME))
    assert maps.shape == (2, 1, *TRAIN_SIZE)
    assert torch.isfinite(scores).all() and torch.isfinite(maps).all()

    # The tiles' features form the feature map of the whole image, also when the tiles overhang it (96 px);
    # one tile covering the image gives exactly the untiled features, several differ at the seams.
    tiler, images = model.model.tiler, torch.rand(1, 3, 64, 96)
    tiled, single_tile = model.model.embed(images), model.model.embed(images[..., :64])
    model.model.tiler = None
    untiled = model.model.embed(images)
    assert tiled.shape == untiled.shape
    assert not torch.allclose(tiled, untiled)
    torch.testing.assert_close(single_tile, model.model.embed(images[..., :64]))
    assert tiler.tile(images).shape == (2, 3, 64, 64)
