"""Compare what two implementations of one model (trained module, export, reloaded checkpoint) predict."""

from __future__ import annotations

import numpy as np
import torch
from anomalib.models.components import AnomalibModule

# Scores and maps are min-max normalised into [0, 1] by the post-processor, which divides raw differences by
# the range seen in validation: for a model trained for a few steps that range can be tiny, so the normalised
# tolerance is widened to RAW_SCORE_ATOL divided by that range where this is larger.
SCORE_TOLERANCE = {"rtol": 1e-3, "atol": 2e-3}
RAW_SCORE_ATOL = 1e-6
NORMALISATION_RANGES = {"pred_score": ("image_min", "image_max"), "anomaly_map": ("pixel_min", "pixel_max")}
# Boolean outputs and the normalised values they threshold (at 0.5).
DECISIONS = {"pred_label": "pred_score", "pred_mask": "anomaly_map"}


def eval_outputs(model: torch.nn.Module, images: torch.Tensor) -> dict[str, np.ndarray]:
    """Score, anomaly map, mask and label of ``model``'s exportable forward on ``images`` ``[B, C, H, W]``."""
    with torch.no_grad():
        batch = model.eval()(images)
    return {key: value.detach().cpu().float().numpy() for key, value in batch._asdict().items() if value is not None}


def post_processor_statistics(model: AnomalibModule) -> dict[str, float]:
    """The normalisation range buffers of ``model``'s post-processor (NaN where it has none)."""
    names = [name for pair in NORMALISATION_RANGES.values() for name in pair]
    return {name: float(getattr(model.post_processor, name, np.nan)) for name in names}


def normalised_tolerances(
    statistics: dict[str, float], base: dict[str, float] = SCORE_TOLERANCE,
) -> dict[str, dict[str, float]]:
    """Per output, ``base`` widened to :data:`RAW_SCORE_ATOL` over the post-processor's normalisation range."""
    tolerances = {}
    for key, (low, high) in NORMALISATION_RANGES.items():
        value_range = float(statistics.get(high, np.nan)) - float(statistics.get(low, np.nan))
        atol = base["atol"]
        if np.isfinite(value_range) and value_range > 0:
            atol = max(atol, RAW_SCORE_ATOL / value_range)
        tolerances[key] = {**base, "atol": atol}
    return tolerances


def assert_same_outputs(
    actual: dict[str, np.ndarray],
    expected: dict[str, np.ndarray],
    origin: str,
    tolerance: dict[str, float] = SCORE_TOLERANCE,
    per_key: dict[str, dict[str, float]] | None = None,
) -> None:
    """Scores and maps agree within ``tolerance`` (or ``per_key[key]``); labels and masks agree exactly, except
    where the normalised score or map value is within that key's ``atol`` of the threshold 0.5 (a tie)."""
    assert actual.keys() == expected.keys(), f"{origin}: outputs {sorted(actual)} instead of {sorted(expected)}"
    per_key = per_key or {}
    for key, value in expected.items():
        if key in DECISIONS:
            decided_by = DECISIONS[key]
            distance_to_threshold = np.abs(expected[decided_by].reshape(value.shape) - 0.5)
            decided = distance_to_threshold > per_key.get(decided_by, tolerance)["atol"]
            np.testing.assert_array_equal(actual[key][decided], value[decided], err_msg=f"{origin}: {key}")
        else:
            np.testing.assert_allclose(actual[key], value, err_msg=f"{origin}: {key}", **per_key.get(key, tolerance))


def assert_same_state(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], origin: str = "state") -> None:
    """Same keys and bit-identical tensors."""
    assert actual.keys() == expected.keys(), f"{origin}: keys differ: {sorted(actual.keys() ^ expected.keys())}"
    for key, value in expected.items():
        torch.testing.assert_close(
            actual[key], value, rtol=0, atol=0, equal_nan=True, msg=lambda message, key=key: f"{origin} {key}: {message}",
        )
