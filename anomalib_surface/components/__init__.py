"""Building blocks shared by the anomalib-surface models."""

from .backbone import PretrainedWeightsUnavailableError, create_backbone
from .batch_norm import PreciseBatchNorm
from .coreset import greedy_coreset, greedy_k_center
from .distributed import UnseenImages, allow_unused_parameters, broadcast_buffers, sum_over_processes
from .memory_bank import PatchFeatureStore, all_gather_rows, image_keys
from .nearest_neighbor import NearestNeighborSearch, torch_nearest_neighbors
from .realistic_anomaly import RealisticAnomalyGenerator
from .training_guards import NonFiniteLossError, check_finite
from .synthetic_anomaly import SyntheticAnomalyGenerator, list_images, perlin_masks, paths_of_test_split

__all__ = [
    "NearestNeighborSearch",
    "NonFiniteLossError",
    "PatchFeatureStore",
    "PreciseBatchNorm",
    "PretrainedWeightsUnavailableError",
    "RealisticAnomalyGenerator",
    "SyntheticAnomalyGenerator",
    "UnseenImages",
    "all_gather_rows",
    "allow_unused_parameters",
    "broadcast_buffers",
    "check_finite",
    "create_backbone",
    "greedy_coreset",
    "greedy_k_center",
    "image_keys",
    "list_images",
    "paths_of_test_split",
    "perlin_masks",
    "sum_over_processes",
    "torch_nearest_neighbors",
]
