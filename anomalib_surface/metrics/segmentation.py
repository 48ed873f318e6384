"""Pixel-level segmentation metrics of ``pred_mask`` against ``gt_mask`` for anomalib ``Evaluator`` s.

Each metric is a torchmetrics binary metric wrapped with :class:`~anomalib.metrics.AnomalibMetric`, so it
updates from a batch and is computed over the whole dataset: true/false positives/negatives are summed
over every pixel of every update and the ratio is taken once at the end (micro average), not averaged
over images. A ratio with a zero denominator (e.g. precision with no predicted pixel) is 0.

Example:
    >>> from anomalib.metrics import Evaluator
    >>> from anomalib_surface.metrics import pixel_segmentation_metrics
    >>> evaluator = Evaluator(test_metrics=pixel_segmentation_metrics())
    >>> [metric.name for metric in evaluator.test_metrics]
    ['pixel_Precision', 'pixel_Recall', 'pixel_Accuracy', 'pixel_F1', 'pixel_IoU']
"""

from __future__ import annotations

from collections.abc import Sequence

from anomalib.metrics import AUROC, AnomalibMetric, Evaluator, F1Score
from torchmetrics import Metric
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryF1Score,
    BinaryJaccardIndex,
    BinaryPrecision,
    BinaryRecall,
)

__all__ = [
    "PixelAccuracy",
    "PixelF1",
    "PixelIoU",
    "PixelPrecision",
    "PixelRecall",
    "pixel_segmentation_metrics",
]


class _PixelMetric(AnomalibMetric, Metric):
    """Mixin: reads ``("pred_mask", "gt_mask")`` by default and is named ``prefix + metric_name``.

    Args:
        fields (Sequence[str] | None): Batch fields ``(prediction, target)``. Defaults to
            ``("pred_mask", "gt_mask")``.
        prefix (str): Prefix of the logged name. Defaults to ``"pixel_"``.
        strict (bool): Raise when a batch lacks a field; ``False`` skips such batches (and computes ``None``
            without any update), like anomalib's default pixel metrics. Defaults to ``False``.
        **kwargs: Passed to the torchmetrics metric (e.g. ``ignore_index``).
    """

    default_fields = ("pred_mask", "gt_mask")
    metric_name: str

    def __init__(
        self,
        fields: Sequence[str] | None = None,
        prefix: str = "pixel_",
        strict: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(fields=fields, prefix=prefix, strict=strict, **kwargs)
        self.name = prefix + self.metric_name


class PixelPrecision(_PixelMetric, BinaryPrecision):  # type: ignore[misc]
    """Pixel precision TP / (TP + FP) over the dataset; logged as ``pixel_Precision``."""

    metric_name = "Precision"


class PixelRecall(_PixelMetric, BinaryRecall):  # type: ignore[misc]
    """Pixel recall TP / (TP + FN) over the dataset; logged as ``pixel_Recall``."""

    metric_name = "Recall"


class PixelAccuracy(_PixelMetric, BinaryAccuracy):  # type: ignore[misc]
    """Pixel accuracy (TP + TN) / all pixels over the dataset; logged as ``pixel_Accuracy``."""

    metric_name = "Accuracy"


class PixelF1(_PixelMetric, BinaryF1Score):  # type: ignore[misc]
    """Pixel F1 2 TP / (2 TP + FP + FN) over the dataset; logged as ``pixel_F1``."""

    metric_name = "F1"


class PixelIoU(_PixelMetric, BinaryJaccardIndex):  # type: ignore[misc]
    """Pixel IoU (Jaccard) TP / (TP + FP + FN) of the anomalous class over the dataset; logged as ``pixel_IoU``."""

    metric_name = "IoU"


def pixel_segmentation_metrics(prefix: str = "pixel_", **kwargs) -> list[AnomalibMetric]:
    """Create precision, recall, accuracy, F1 and IoU of ``pred_mask`` vs ``gt_mask`` for an ``Evaluator``.

    Args:
        prefix (str): Prefix of the metric names. Defaults to ``"pixel_"``.
        **kwargs: Passed to every metric (``fields``, ``strict``, ``ignore_index``...).

    Returns:
        list[AnomalibMetric]: The five metrics, in that order.
    """
    return [
        metric_cls(prefix=prefix, **kwargs)
        for metric_cls in (PixelPrecision, PixelRecall, PixelAccuracy, PixelF1, PixelIoU)
    ]


def default_test_metrics() -> list[AnomalibMetric]:
    """The test metrics of anomalib's default evaluator (``AnomalibModule.configure_evaluator``): AUROC and F1.

    Built here from :mod:`anomalib.metrics` so that metrics do not depend on anomalib's model package.
    """
    return [
        AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
        F1Score(fields=["pred_label", "gt_label"], prefix="image_"),
        AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False),
        F1Score(fields=["pred_mask", "gt_mask"], prefix="pixel_", strict=False),
    ]


def _same_figure(metric: AnomalibMetric, other: AnomalibMetric) -> bool:
    """Whether both compute the same torchmetrics classification metric on the same batch fields."""

    def computation(candidate: AnomalibMetric) -> type | None:
        return next((cls for cls in type(candidate).__mro__ if cls.__module__.startswith("torchmetrics.classification")), None)

    return computation(metric) is not None and computation(metric) is computation(other) and (
        list(metric.fields) == list(other.fields)
    )


def evaluator_with_pixel_segmentation() -> Evaluator:
    """anomalib's default evaluator (image/pixel AUROC and F1) plus the :func:`pixel_segmentation_metrics` it lacks.

    anomalib's ``pixel_F1Score`` already is the F1 of ``pred_mask`` vs ``gt_mask`` summed over all pixels, so
    ``pixel_F1`` is not added beside it: the metrics table shows each figure once.
    """
    defaults = default_test_metrics()
    added = [
        metric for metric in pixel_segmentation_metrics() if not any(_same_figure(metric, other) for other in defaults)
    ]
    return Evaluator(test_metrics=[*defaults, *added])
