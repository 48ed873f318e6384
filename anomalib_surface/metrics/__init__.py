"""Metrics usable in an anomalib ``Evaluator``."""

from .segmentation import (
    PixelAccuracy,
    PixelF1,
    PixelIoU,
    PixelPrecision,
    PixelRecall,
    evaluator_with_pixel_segmentation,
    pixel_segmentation_metrics,
)

__all__ = [
    "PixelAccuracy",
    "PixelF1",
    "PixelIoU",
    "PixelPrecision",
    "PixelRecall",
    "evaluator_with_pixel_segmentation",
    "pixel_segmentation_metrics",
]
