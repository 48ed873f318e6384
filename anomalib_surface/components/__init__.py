"""Building blocks shared by the anomalib-surface models."""

from .backbone import PretrainedWeightsUnavailableError, create_backbone
from .realistic_anomaly import RealisticAnomalyGenerator
from .training_guards import NonFiniteLossError, check_finite
from .synthetic_anomaly import SyntheticAnomalyGenerator, list_images, perlin_masks

__all__ = [
    "NonFiniteLossError",
    "PretrainedWeightsUnavailableError",
    "RealisticAnomalyGenerator",
    "SyntheticAnomalyGenerator",
    "check_finite",
    "create_backbone",
    "list_images",
    "perlin_masks",
]
