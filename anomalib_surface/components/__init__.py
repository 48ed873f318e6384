"""Building blocks shared by the anomalib-surface models."""

from .backbone import PretrainedWeightsUnavailableError, create_backbone
from .distributed import (
    UnseenImages,
    all_gather_rows,
    allow_unused_parameters,
    broadcast_buffers,
    image_keys,
    sum_over_processes,
)
from .intersection import intersect_predictions
from .training_guards import NonFiniteLossError, check_finite
from .synthetic_anomaly import SyntheticAnomalyGenerator, list_images, perlin_masks, paths_of_test_split

__all__ = [
    "NonFiniteLossError",
    "PretrainedWeightsUnavailableError",
    "SyntheticAnomalyGenerator",
    "UnseenImages",
    "all_gather_rows",
    "allow_unused_parameters",
    "broadcast_buffers",
    "check_finite",
    "create_backbone",
    "image_keys",
    "intersect_predictions",
    "list_images",
    "paths_of_test_split",
    "perlin_masks",
    "sum_over_processes",
]
