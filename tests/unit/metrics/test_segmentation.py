"""Tests for the pixel segmentation metrics."""

from __future__ import annotations

import pytest
import torch
from anomalib.data import ImageBatch
from anomalib.metrics import Evaluator
from anomalib.models.components import AnomalibModule

from anomalib_surface.metrics import (
    PixelAccuracy,
    PixelF1,
    PixelIoU,
    PixelPrecision,
    PixelRecall,
    evaluator_with_pixel_segmentation,
    pixel_segmentation_metrics,
)


def _batch(pred_mask: list, gt_mask: list) -> ImageBatch:
    pred, gt = torch.tensor(pred_mask, dtype=torch.bool), torch.tensor(gt_mask, dtype=torch.bool)
    return ImageBatch(image=torch.zeros(pred.shape[0], 3, *pred.shape[1:]), pred_mask=pred, gt_mask=gt)


# batch 1: TP=1 FP=1 FN=1 TN=1; batch 2: TP=3 FP=1 FN=0 TN=4 -> dataset: TP=4 FP=2 FN=1 TN=5
BATCH_1 = ([[[1, 1], [0, 0]]], [[[1, 0], [1, 0]]])
BATCH_2 = ([[[1, 1], [1, 1]], [[0, 0], [0, 0]]], [[[1, 1], [1, 0]], [[0, 0], [0, 0]]])
EXPECTED = {
    "pixel_Precision": 4 / 6,  # mean of per-batch precisions would be (1/2 + 3/4) / 2 = 0.625
    "pixel_Recall": 4 / 5,
    "pixel_Accuracy": 9 / 12,
    "pixel_F1": 8 / 11,
    "pixel_IoU": 4 / 7,
}


def test_metrics_aggregate_pixel_counts_over_updates() -> None:
    metrics = pixel_segmentation_metrics()
    for metric in metrics:
        metric.update(_batch(*BATCH_1))
        metric.update(_batch(*BATCH_2))
    computed = {metric.name: metric.compute().item() for metric in metrics}
    assert computed == pytest.approx(EXPECTED)


def test_single_update_hand_computed() -> None:
    metric = PixelIoU()
    metric.update(_batch(*BATCH_1))
    assert metric.compute().item() == pytest.approx(1 / 3)
    metric.reset()
    metric.update(_batch(*BATCH_2))
    assert metric.compute().item() == pytest.approx(3 / 4)


def test_names_fields_and_prefix() -> None:
    assert [metric.name for metric in pixel_segmentation_metrics()] == list(EXPECTED)
    assert [metric.name for metric in pixel_segmentation_metrics(prefix="seg_")] == [
        "seg_Precision",
        "seg_Recall",
        "seg_Accuracy",
        "seg_F1",
        "seg_IoU",
    ]
    assert PixelRecall().fields == ("pred_mask", "gt_mask")
    assert PixelF1(prefix="").name == "F1"


def test_no_predicted_pixel_gives_zero_precision() -> None:
    metric = PixelPrecision()
    metric.update(_batch([[[0, 0], [0, 0]]], [[[1, 0], [0, 0]]]))
    assert metric.compute().item() == 0.0


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")
def test_missing_field_is_skipped_unless_strict() -> None:
    batch = ImageBatch(image=torch.zeros(1, 3, 2, 2), gt_mask=torch.zeros(1, 2, 2, dtype=torch.bool))
    lenient = PixelAccuracy()
    lenient.update(batch)
    assert lenient.compute() is None
    with pytest.raises(ValueError, match="pred_mask"):
        PixelAccuracy(strict=True).update(batch)


def test_usable_in_evaluator() -> None:
    evaluator = Evaluator(test_metrics=pixel_segmentation_metrics())
    assert [metric.name for metric in evaluator.test_metrics] == list(EXPECTED)


def test_evaluator_with_pixel_segmentation_shows_each_figure_once() -> None:
    """anomalib's pixel_F1Score is the pixel F1 of pred_mask vs gt_mask: no pixel_F1 beside it, the rest added."""
    names = [metric.name for metric in evaluator_with_pixel_segmentation().test_metrics]
    assert names == ["image_AUROC", "image_F1Score", "pixel_AUROC", "pixel_F1Score",
                     "pixel_Precision", "pixel_Recall", "pixel_Accuracy", "pixel_IoU"]


def test_evaluator_starts_with_anomalib_default_test_metrics() -> None:
    """Built without anomalib's model package, the defaults still equal AnomalibModule's (type, name, fields)."""

    def describe(metrics: list) -> list[tuple]:
        return [(type(m), m.name, tuple(m.fields), m.strict) for m in metrics]

    defaults = describe(AnomalibModule.configure_evaluator().test_metrics)
    assert describe(evaluator_with_pixel_segmentation().test_metrics)[: len(defaults)] == defaults
