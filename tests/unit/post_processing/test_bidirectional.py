"""BidirectionalIntersection: the intersection logic, the flip pass for any model, directional models."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from anomalib.data import ImageBatch, InferenceBatch
from torch import nn

from anomalib_surface.components.intersection import intersect_predictions
from anomalib_surface.post_processing.bidirectional import BidirectionalIntersection

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STRIP = 8
ANOMALY = 4


def _strip(patches: list[int]) -> torch.Tensor:
    """A 1-D strip of ``STRIP`` patches, 1 at ``patches``: ``[1, STRIP]``."""
    strip = torch.zeros(1, STRIP)
    strip[0, patches] = 1.0
    return strip


def test_intersection_removes_the_spreading_on_a_strip() -> None:
    """Anomaly at patch 4 spreads to 5-6 left to right and to 2-3 right to left; only 4 survives."""
    left = _strip([ANOMALY, 5, 6])
    right = _strip([2, 3, ANOMALY])
    left_batch, right_batch = (
        InferenceBatch(pred_score=strip, anomaly_map=strip.view(1, 1, 1, STRIP), pred_mask=strip.view(1, 1, STRIP) > 0)
        for strip in (left, right)
    )
    result = intersect_predictions(left_batch, right_batch)
    assert result.anomaly_map.flatten().nonzero().flatten().tolist() == [ANOMALY]
    assert result.pred_mask.flatten().nonzero().flatten().tolist() == [ANOMALY]
    assert result.pred_mask.dtype == torch.bool
    assert result.pred_score.tolist() == [1.0]  # per-patch scores: min per patch, then max over patches


def test_intersection_of_image_scores_and_labels() -> None:
    first = InferenceBatch(pred_score=torch.tensor([0.9, 0.2]), pred_label=torch.tensor([True, False]))
    second = InferenceBatch(pred_score=torch.tensor([0.3, 0.8]), pred_label=torch.tensor([True, True]))
    result = intersect_predictions(first, second)
    assert torch.allclose(result.pred_score, torch.tensor([0.3, 0.2]))
    assert result.pred_label.tolist() == [True, False]
    assert result.anomaly_map is None
    with pytest.raises(ValueError, match="different shapes"):
        intersect_predictions(first, InferenceBatch(pred_score=torch.zeros(3)))


class RightwardSpread(nn.Module):
    """A one-directional 'model': the anomaly map is the running maximum of the image along the width,

    so an anomaly spreads to every pixel on its right, like a left-to-right inference."""

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        anomaly_map = images[:, :1].cummax(dim=-1).values
        return InferenceBatch(pred_score=anomaly_map.flatten(1).amax(1), anomaly_map=anomaly_map)


def _batch_with_first_pass(model: nn.Module, images: torch.Tensor) -> ImageBatch:
    batch = ImageBatch(image=images)
    return batch.update(**model(images)._asdict())


def test_flip_pass_intersects_any_model() -> None:
    images = torch.zeros(2, 3, 4, STRIP)
    images[0, :, 1, ANOMALY] = 1.0
    model = RightwardSpread()
    batch = _batch_with_first_pass(model, images)
    assert batch.anomaly_map[0, 1].nonzero().flatten().tolist() == list(range(ANOMALY, STRIP))  # spread

    post_processor = BidirectionalIntersection(enable_normalization=False, enable_thresholding=False)
    post_processor.on_test_batch_end(None, SimpleNamespace(model=model), batch, None, 0)

    expected = torch.zeros(2, 4, STRIP)  # ImageBatch keeps maps as [B, H, W]
    expected[0, 1, ANOMALY] = 1.0
    assert torch.equal(batch.anomaly_map, expected)
    assert batch.pred_score.tolist() == [1.0, 0.0]


def test_vertical_flip_and_options() -> None:
    images = torch.zeros(1, 3, STRIP, 4)
    images[0, :, ANOMALY, 2] = 1.0
    model = RightwardSpread()
    second = BidirectionalIntersection(flip="vertical").second_pass(model, images)
    # Spread along the width is unchanged by a vertical flip, so the intersection keeps the spread.
    assert torch.equal(second.anomaly_map, model(images).anomaly_map)
    with pytest.raises(ValueError, match="flip must be one of"):
        BidirectionalIntersection(flip="diagonal")
    assert {"flip", "use_directional"} <= set(BidirectionalIntersection(flip="vertical").checkpoint_config())


class TwoWayStrip(nn.Module):
    """A directional model over a strip of patches with hand-made spreading in each direction."""

    def __init__(self, bidirectional: bool) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        self.calls = 0

    def forward_directional(self, images: torch.Tensor) -> tuple[InferenceBatch, InferenceBatch]:
        self.calls += 1
        batch = images.shape[0]
        left, right = _strip([ANOMALY, 5, 6]).expand(batch, -1), _strip([2, 3, ANOMALY]).expand(batch, -1)
        return (
            InferenceBatch(pred_score=left, anomaly_map=left.reshape(batch, 1, 1, STRIP)),
            InferenceBatch(pred_score=right, anomaly_map=right.reshape(batch, 1, 1, STRIP)),
        )

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        left, right = self.forward_directional(images)
        if self.bidirectional:
            return intersect_predictions(left, right)
        return left._replace(pred_score=left.pred_score.amax(1))


@pytest.mark.parametrize("bidirectional", [False, True])
def test_directional_models_use_their_own_directions(bidirectional: bool) -> None:
    model = TwoWayStrip(bidirectional)
    batch = _batch_with_first_pass(model, torch.zeros(2, 3, 1, STRIP))
    post_processor = BidirectionalIntersection(enable_normalization=False, enable_thresholding=False)
    post_processor.on_predict_batch_end(None, SimpleNamespace(model=model), batch, None, 0)
    assert batch.anomaly_map[0].flatten().nonzero().flatten().tolist() == [ANOMALY]
    assert model.calls == (1 if bidirectional else 2)  # already intersected: no second computation


def test_validation_statistics_see_the_intersected_maps() -> None:
    images = torch.zeros(2, 3, 4, STRIP)
    images[0, :, 1, ANOMALY] = 1.0
    model = RightwardSpread()
    batch = _batch_with_first_pass(model, images)
    batch.gt_label = torch.tensor([1, 0])
    post_processor = BidirectionalIntersection()
    post_processor.on_validation_batch_end(None, SimpleNamespace(model=model), batch, None, 0)
    post_processor.on_validation_epoch_end(None, None)
    assert post_processor.pixel_max.item() == 1.0
    assert batch.anomaly_map.sum().item() == 1.0


def test_with_a_builtin_anomalib_model(tmp_path: Path) -> None:
    """Padim (anomalib) with the flip pass: predictions are the intersection of both passes."""
    from anomalib.engine import Engine
    from anomalib.models import Padim

    from anomalib_surface.data import SurfaceDemo

    datamodule = SurfaceDemo(
        root=tmp_path / "demo",
        category="brick",
        image_size=64,
        num_train=4,
        num_test_good=2,
        num_test_defect_per_type=1,
        train_batch_size=4,
        eval_batch_size=8,
        num_workers=0,
    )
    post_processor = BidirectionalIntersection(enable_normalization=False, enable_thresholding=False)
    model = Padim(
        backbone="resnet18",
        pre_trained=False,
        layers=["layer1"],
        n_features=16,
        pre_processor=Padim.configure_pre_processor(image_size=(64, 64)),
        post_processor=post_processor,
        evaluator=False,
        visualizer=False,
    )
    engine = Engine(accelerator="cpu", devices=1, default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    engine.fit(model, datamodule=datamodule)
    (batch,) = engine.predict(model, datamodule=datamodule)  # 7 test images, one batch

    model.eval()
    with torch.no_grad():
        first = model.model(batch.image)
        second = model.model(batch.image.flip(-1))
    expected_map = torch.minimum(first.anomaly_map, second.anomaly_map.flip(-1)).squeeze(1)
    assert not torch.equal(expected_map, first.anomaly_map.squeeze(1))
    assert torch.allclose(batch.anomaly_map, expected_map)
    assert torch.allclose(batch.pred_score, torch.minimum(first.pred_score, second.pred_score).flatten())


def test_configurable_from_yaml(tmp_path: Path) -> None:
    from anomalib.models.components import AnomalibModule

    config = tmp_path / "padim.yaml"
    config.write_text(
        """
model:
  class_path: Padim
  init_args:
    backbone: resnet18
    pre_trained: false
    layers: [layer1]
    n_features: 16
    post_processor:
      class_path: anomalib_surface.post_processing.bidirectional.BidirectionalIntersection
      init_args:
        flip: vertical
        pixel_sensitivity: 0.4
""",
    )
    model = AnomalibModule.from_config(config)
    assert isinstance(model.post_processor, BidirectionalIntersection)
    assert (model.post_processor.flip, model.post_processor.pixel_sensitivity) == ("vertical", 0.4)
