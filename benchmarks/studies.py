"""Post-processing studies on the raw anomaly maps kept by the runner.

- :func:`thresholding_study`: anomalib's default pixel thresholding (the F1-adaptive threshold
  calibrated on validation, applied to the raw map) against :class:`DoubleThresholdMorphology`
  on the *same* maps, pixel P/R/ACC/F1/IoU and AUPRO-free.
- :func:`factor_sweep`: the CLGAN paper's threshold-factor sweep (``k`` from 2.0 to 3.0).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from anomalib_surface.post_processing import DoubleThresholdMorphology

SEGMENTATION_KEYS = ("precision", "recall", "accuracy", "F1", "IoU")


def segmentation_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pixel precision, recall, accuracy, F1 and IoU summed over all pixels of all images."""
    predicted, truth = predicted.astype(bool), truth.astype(bool)
    tp = float(np.sum(predicted & truth))
    fp = float(np.sum(predicted & ~truth))
    fn = float(np.sum(~predicted & truth))
    tn = float(np.sum(~predicted & ~truth))

    def ratio(numerator: float, denominator: float) -> float:
        return numerator / denominator if denominator else 0.0

    return {
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "accuracy": ratio(tp + tn, tp + tn + fp + fn),
        "F1": ratio(2 * tp, 2 * tp + fp + fn),
        "IoU": ratio(tp, tp + fp + fn),
    }


def double_threshold_masks(raw_maps: np.ndarray, low_factor: float, high_factor: float, **options: object) -> np.ndarray:
    """Masks ``[N, H, W]`` of :class:`DoubleThresholdMorphology` on raw maps ``[N, H, W]``."""
    post_processor = DoubleThresholdMorphology(low_factor=low_factor, high_factor=high_factor, **options)
    return post_processor.compute_mask(torch.from_numpy(raw_maps)).numpy()


def thresholding_study(arrays_by_entry: dict[str, dict[str, np.ndarray]], **options: object) -> list[dict[str, object]]:
    """Default anomalib thresholding vs DoubleThresholdMorphology (defaults or ``options``) per entry."""
    rows = []
    for entry, arrays in arrays_by_entry.items():
        truth = arrays["gt_masks"]
        default = arrays["raw_maps"] > float(arrays["pixel_threshold"])
        dtm_options = {"low_factor": 2.0, "high_factor": 3.0, **options}
        rows.append({"entry": entry, "method": "anomalib default (F1-adaptive)", **segmentation_scores(default, truth)})
        masks = double_threshold_masks(arrays["raw_maps"], **dtm_options)
        rows.append({"entry": entry, "method": "DoubleThresholdMorphology", **segmentation_scores(masks, truth)})
    return rows


def factor_sweep(
    arrays_by_entry: dict[str, dict[str, np.ndarray]],
    factors: Iterable[float] = (2.0, 2.25, 2.5, 2.75, 3.0),
    band: float = 0.5,
    **options: object,
) -> list[dict[str, object]]:
    """Pixel scores for high threshold factor ``k`` in ``factors`` (low factor ``k - band``)."""
    rows = []
    for entry, arrays in arrays_by_entry.items():
        for factor in factors:
            masks = double_threshold_masks(arrays["raw_maps"], max(factor - band, 0.0), factor, **options)
            rows.append({"entry": entry, "k": factor, **segmentation_scores(masks, arrays["gt_masks"])})
    return rows


def markdown(rows: list[dict[str, object]], columns: tuple[str, ...]) -> str:
    """Rows as a Markdown table; scores in %."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{100 * row[key]:.1f}" if key in SEGMENTATION_KEYS else str(row[key]) for key in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
