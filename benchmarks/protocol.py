"""Evaluation protocol: threshold-free metrics on raw maps, seeds, and paired differences with confidence intervals.

- Ranking metrics (image AUROC and AP on raw scores; pixel AUROC, AP and AUPRO on raw maps) need no
  threshold, so they are computed on the models' raw outputs, before any normalisation.
- Thresholded metrics (image F1, pixel P/R/ACC/F1/IoU) are only reported with thresholds calibrated on
  a validation set that holds no test image (SurfaceDemo's generated validation set; anomalib's
  ``synthetic`` split for MadRto and TextureFolder).
- Every configuration runs with several seeds. A model is compared with Patchcore on the same backbone
  by the *paired* difference: for each (category, seed) unit the model's metric minus Patchcore's,
  then the mean of those differences with a Student-t confidence interval. Pairing removes the
  between-category variance that dominates unpaired means.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from types import SimpleNamespace

import numpy as np
import torch
from anomalib.metrics import AUPRO
from scipy import stats
from torchmetrics.functional.classification import binary_auroc, binary_average_precision

RAW_METRIC_KEYS = ("image_AUROC", "image_AP", "pixel_AUROC", "pixel_AP", "pixel_AUPRO")
"""Threshold-free metrics computed on raw scores and maps."""


def _unit_range(values: np.ndarray) -> torch.Tensor:
    """``values`` scaled to ``[0, 1]`` (order kept, float64).

    torchmetrics takes predictions outside ``[0, 1]`` for logits and applies a sigmoid, which saturates raw
    scores such as Patchcore's distances (40-60) into ties; a min-max scaling keeps every ranking metric exact.
    """
    tensor = torch.as_tensor(values).double()
    low, high = tensor.min(), tensor.max()
    return (tensor - low) / (high - low) if high > low else torch.zeros_like(tensor)


def raw_map_metrics(scores: np.ndarray, labels: np.ndarray, maps: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    """Threshold-free metrics of raw outputs.

    Args:
        scores (np.ndarray): ``(N,)`` raw image scores (higher = more anomalous).
        labels (np.ndarray): ``(N,)`` bool, ``True`` for defective images.
        maps (np.ndarray): ``(N, H, W)`` raw anomaly maps.
        masks (np.ndarray): ``(N, H, W)`` bool ground-truth masks.

    Returns:
        dict[str, float]: :data:`RAW_METRIC_KEYS` in ``[0, 1]``.
    """
    score_tensor, label_tensor = _unit_range(scores), torch.as_tensor(labels).long()
    map_tensor, mask_tensor = _unit_range(maps), torch.as_tensor(masks).bool()
    aupro = AUPRO(fields=["anomaly_map", "gt_mask"])
    aupro.update(SimpleNamespace(anomaly_map=map_tensor, gt_mask=mask_tensor))
    return {
        "image_AUROC": float(binary_auroc(score_tensor, label_tensor)),
        "image_AP": float(binary_average_precision(score_tensor, label_tensor)),
        "pixel_AUROC": float(binary_auroc(map_tensor.flatten(), mask_tensor.flatten().long())),
        "pixel_AP": float(binary_average_precision(map_tensor.flatten(), mask_tensor.flatten().long())),
        "pixel_AUPRO": float(aupro.compute()),
    }


@dataclasses.dataclass(frozen=True)
class Summary:
    """Mean and sample standard deviation of ``n`` values (``std`` is ``nan`` for one value)."""

    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        """``mean ± std`` in percent."""
        if math.isnan(self.mean):
            return "–"
        return f"{100 * self.mean:.1f}" if self.n < 2 else f"{100 * self.mean:.1f} ± {100 * self.std:.1f}"  # noqa: PLR2004


def summarise(values: Sequence[float]) -> Summary:
    """Mean ± sample standard deviation (``ddof=1``) of finite ``values``."""
    finite = np.asarray([value for value in values if value is not None and np.isfinite(value)], dtype=float)
    if finite.size == 0:
        return Summary(float("nan"), float("nan"), 0)
    return Summary(float(finite.mean()), float(finite.std(ddof=1)) if finite.size > 1 else float("nan"), int(finite.size))


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """Mean paired difference ``model - reference`` with a two-sided Student-t confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        """``+1.2 [−0.3, +2.7]`` in percentage points."""
        if self.n < 2:  # noqa: PLR2004
            return "–" if math.isnan(self.mean) else f"{100 * self.mean:+.1f} (n=1)"
        return f"{100 * self.mean:+.1f} [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"


def paired_difference(
    model: Mapping[tuple, float],
    reference: Mapping[tuple, float],
    confidence: float = 0.95,
) -> PairedDifference:
    """Paired difference over the units (e.g. ``(category, seed)``) that both mappings hold.

    Args:
        model (Mapping[tuple, float]): Metric of the model per unit.
        reference (Mapping[tuple, float]): Metric of the reference (Patchcore) per unit.
        confidence (float): Coverage of the interval. Defaults to ``0.95``.

    Returns:
        PairedDifference: Mean of ``model[u] - reference[u]`` and its t interval
        ``mean ± t_{(1+confidence)/2, n-1} * sd / sqrt(n)`` (``nan`` bounds for fewer than two units).
    """
    units = sorted(set(model) & set(reference))
    differences = np.asarray([model[unit] - reference[unit] for unit in units], dtype=float)
    differences = differences[np.isfinite(differences)]
    n = int(differences.size)
    if n == 0:
        return PairedDifference(float("nan"), float("nan"), float("nan"), 0, confidence)
    mean = float(differences.mean())
    if n < 2:  # noqa: PLR2004
        return PairedDifference(mean, float("nan"), float("nan"), 1, confidence)
    half_width = float(stats.t.ppf((1 + confidence) / 2, n - 1) * differences.std(ddof=1) / math.sqrt(n))
    return PairedDifference(mean, mean - half_width, mean + half_width, n, confidence)


def verdict(difference: PairedDifference, claimed_sign: int = 1) -> str:
    """``reproduced`` when the interval lies on the claimed side of 0, else ``not reproduced``.

    ``not reproduced`` is qualified: ``(opposite)`` when the interval lies on the other side, ``(no
    significant difference)`` when it contains 0. Fewer than two units cannot decide.
    """
    if difference.n < 2 or math.isnan(difference.low):  # noqa: PLR2004
        return "not testable here (fewer than 2 paired runs)"
    signed_low = difference.low if claimed_sign > 0 else -difference.high
    signed_high = difference.high if claimed_sign > 0 else -difference.low
    if signed_low > 0:
        return "reproduced"
    if signed_high < 0:
        return "not reproduced (opposite)"
    return "not reproduced (no significant difference)"
