"""Post-processors usable with any anomalib model (``AnomalibModule(post_processor=...)``)."""

from .double_threshold import DoubleThresholdMorphology

__all__ = ["DoubleThresholdMorphology"]
