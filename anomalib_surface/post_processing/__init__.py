"""Post-processors usable with any anomalib model (``AnomalibModule(post_processor=...)``)."""

from .bidirectional import BidirectionalIntersection, intersect_predictions
from .double_threshold import DoubleThresholdMorphology

__all__ = ["BidirectionalIntersection", "DoubleThresholdMorphology", "intersect_predictions"]
