"""Anomaly synthesis modes of Dmp (``anomaly_synthesis`` option), for the paper's synthesis ablation.

- ``"realistic"`` (default, the paper's first contribution): :class:`~.realistic_anomaly.RealisticAnomalyGenerator`,
  filled from ``anomaly_source_path`` (or, unset, from the training batch), with geometry changes of the fill and
  lighting matched to the surrounding surface (``match_lighting``).
- ``"draem"``: DRAEM's synthesis, anomalib's :class:`~anomalib.data.utils.generators.perlin.PerlinAnomalyGenerator`
  (Perlin masks, a texture of ``anomaly_source_path`` through DRAEM's random augmentations, opacity drawn from
  ``opacity_range``); without a folder it fills with Perlin noise patterns, as anomalib's generator does.
  ``soft_edge_sigma`` and ``match_lighting`` do not apply.
- ``"self_fill"``: the realistic generator filled from the training batch (another image, re-oriented and
  re-coloured) even when ``anomaly_source_path`` is set, so that the fill source is the only change.

Every generator maps ``[B, C, H, W]`` images in ``[0, 1]`` to augmented images ``[B, C, H, W]`` and masks
``[B, 1, H, W]`` and refuses a source folder that overlaps the test split (``check_disjoint_from``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
from torch import nn

from anomalib_surface.components.synthetic_anomaly import check_source_disjoint, list_images

from .realistic_anomaly import RealisticAnomalyGenerator

__all__ = ["ANOMALY_SYNTHESES", "DraemAnomalyGenerator", "build_anomaly_generator"]

logger = logging.getLogger(__name__)

ANOMALY_SYNTHESES = ("realistic", "draem", "self_fill")


class DraemAnomalyGenerator(PerlinAnomalyGenerator):
    """anomalib's DRAEM synthesis with a checked source folder and the test-split check of Dmp's generators.

    Args:
        anomaly_source_path: Folder of texture images (DTD in DRAEM); ``None``: Perlin noise patterns.
        probability: Fraction of images that receive an anomaly.
        opacity_range: ``(min, max)`` opacity (DRAEM's ``beta``) of the pasted texture.
    """

    def __init__(
        self,
        anomaly_source_path: str | Path | None = None,
        probability: float = 0.5,
        opacity_range: tuple[float, float] = (0.2, 1.0),
    ) -> None:
        if anomaly_source_path is not None and not list_images(anomaly_source_path):
            msg = f"anomaly_source_path '{anomaly_source_path}' contains no images."
            raise FileNotFoundError(msg)
        super().__init__(anomaly_source_path, probability=probability, blend_factor=tuple(opacity_range))
        self.anomaly_source_path = anomaly_source_path

    def check_disjoint_from(self, test_image_paths: Iterable[str | Path]) -> None:
        """Refuse a source folder that overlaps the test split."""
        check_source_disjoint(self.anomaly_source_path, test_image_paths)


def build_anomaly_generator(
    mode: str,
    anomaly_source_path: str | Path | None = None,
    probability: float = 0.5,
    opacity_range: tuple[float, float] = (0.2, 1.0),
    soft_edge_sigma: float = 1.0,
    match_lighting: float = 0.5,
) -> nn.Module:
    """The anomaly generator of synthesis ``mode`` (one of :data:`ANOMALY_SYNTHESES`)."""
    if mode not in ANOMALY_SYNTHESES:
        msg = f"anomaly_synthesis must be one of {ANOMALY_SYNTHESES}, got '{mode}'."
        raise ValueError(msg)
    if mode == "draem":
        return DraemAnomalyGenerator(anomaly_source_path, probability, opacity_range)
    if mode == "self_fill" and anomaly_source_path is not None:
        logger.warning("anomaly_source_path is ignored because anomaly_synthesis='self_fill' fills from the training images.")
        anomaly_source_path = None
    return RealisticAnomalyGenerator(
        anomaly_source_path=anomaly_source_path,
        probability=probability,
        opacity_range=opacity_range,
        soft_edge_sigma=soft_edge_sigma,
        match_lighting=match_lighting,
    )
