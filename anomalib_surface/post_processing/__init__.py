"""Post-processors usable with any anomalib model (``AnomalibModule(post_processor=...)``)."""

from .bidirectional import BidirectionalIntersection
from .double_threshold import VALIDATION_FACTOR_GRID, DoubleThresholdMorphology

__all__ = ["VALIDATION_FACTOR_GRID", "BidirectionalIntersection", "DoubleThresholdMorphology"]
