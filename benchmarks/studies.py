"""Post-processing studies on the raw anomaly maps kept by the runner.

- :func:`thresholding_study`: anomalib's default pixel thresholding (one F1-adaptive threshold on the raw
  maps) against :class:`DoubleThresholdMorphology` (per-image thresholds, no calibration) on the *same*
  maps, pixel P/R/ACC/F1/IoU. SurfaceDemo validates on its test images, so the threshold the model
  calibrated is optimistic; the study therefore also calibrates it on one half of the images and applies
  it to the other (2-fold), as a held-out validation set would. The same held-out protocol calibrates
  ``DoubleThresholdMorphology(threshold_statistics="normal", factor_grid=...)``: its validation callbacks
  see one half (defect-free pixel statistics, factor by pixel F1) and it segments the other.
- :func:`factor_sweep`: the CLGAN paper's threshold-factor sweep (``k`` from 2.0 to 3.0).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import SimpleNamespace

import numpy as np
import torch
from anomalib.metrics import F1AdaptiveThreshold

from anomalib_surface.post_processing import VALIDATION_FACTOR_GRID, DoubleThresholdMorphology

SEGMENTATION_KEYS = ("precision", "recall", "accuracy", "F1", "IoU")
# DoubleThresholdMorphology calibrated on validation maps: defect-free statistics, high factor by pixel F1.
VALIDATED_OPTIONS = {"threshold_statistics": "normal", "factor_grid": VALIDATION_FACTOR_GRID}


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


def f1_adaptive_threshold(raw_maps: np.ndarray, gt_masks: np.ndarray) -> float:
    """anomalib's pixel F1-adaptive threshold of raw maps ``[N, H, W]`` against masks ``[N, H, W]``."""
    metric = F1AdaptiveThreshold(fields=["anomaly_map", "gt_mask"])
    metric.update(SimpleNamespace(anomaly_map=torch.from_numpy(raw_maps), gt_mask=torch.from_numpy(gt_masks)))
    return float(metric.compute())


def held_out_masks(arrays: dict[str, np.ndarray], segment: Callable[[dict, np.ndarray], np.ndarray]) -> np.ndarray:
    """Masks ``[N, H, W]``, ``segment(calibration_arrays, evaluated_maps)`` calibrated on the other half (2-fold)."""
    masks = np.zeros_like(arrays["gt_masks"], dtype=bool)
    folds = (np.arange(len(masks)) % 2 == 0, np.arange(len(masks)) % 2 == 1)
    for evaluated, calibration in (folds, folds[::-1]):
        calibration_arrays = {key: arrays[key][calibration] for key in ("raw_maps", "gt_masks", "labels", "scores")}
        masks[evaluated] = segment(calibration_arrays, arrays["raw_maps"][evaluated])
    return masks


def held_out_threshold_masks(arrays: dict[str, np.ndarray]) -> np.ndarray:
    """Masks from F1-adaptive thresholds calibrated on the other half of the images (even/odd 2-fold)."""
    return held_out_masks(
        arrays,
        lambda calibration, maps: maps > f1_adaptive_threshold(calibration["raw_maps"], calibration["gt_masks"]),
    )


def validated_double_threshold_masks(arrays: dict[str, np.ndarray], **options: object) -> np.ndarray:
    """Held-out masks of :class:`DoubleThresholdMorphology` whose validation callbacks see the other half."""

    def segment(calibration: dict[str, np.ndarray], maps: np.ndarray) -> np.ndarray:
        post_processor = DoubleThresholdMorphology(**options)
        batch = SimpleNamespace(
            pred_score=torch.from_numpy(calibration["scores"]),
            gt_label=torch.from_numpy(calibration["labels"]),
            anomaly_map=torch.from_numpy(calibration["raw_maps"]),
            gt_mask=torch.from_numpy(calibration["gt_masks"]),
        )
        post_processor.on_validation_batch_end(None, None, batch)
        post_processor.on_validation_epoch_end(None, None)
        return post_processor.compute_mask(torch.from_numpy(maps)).numpy()

    return held_out_masks(arrays, segment)


def thresholding_study(arrays_by_entry: dict[str, dict[str, np.ndarray]], **options: object) -> list[dict[str, object]]:
    """anomalib's F1-adaptive thresholding (as calibrated, and held out) vs DoubleThresholdMorphology per entry."""
    rows = []
    dtm_options = {"low_factor": 2.0, "high_factor": 3.0, **options}
    for entry, arrays in arrays_by_entry.items():
        raw_maps, truth = arrays["raw_maps"], arrays["gt_masks"]
        double_threshold = double_threshold_masks(raw_maps, **dtm_options)
        # label_mode="score": masks of images whose (normalised) image score is below the image threshold are emptied.
        labelled_anomalous = (arrays["scores"] > 0.5)[:, None, None]
        methods = {
            "F1-adaptive, calibrated on the evaluated images": raw_maps > float(arrays["pixel_threshold"]),
            "F1-adaptive, held out (2-fold)": held_out_threshold_masks(arrays),
            "DoubleThresholdMorphology": double_threshold,
            "DoubleThresholdMorphology, label_mode=score": double_threshold & labelled_anomalous,
            "DoubleThresholdMorphology, normal statistics + factor_grid, held out (2-fold)": (
                validated_double_threshold_masks(arrays, **dtm_options, **VALIDATED_OPTIONS)
            ),
        }
        rows.extend({"entry": entry, "method": method, **segmentation_scores(masks, truth)} for method, masks in methods.items())
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
