"""Post-processor options: one check at build and when restored from a checkpoint's settings."""

from __future__ import annotations

import math

import pytest
import torch
from anomalib.data import InferenceBatch

from anomalib_surface.components.checks import OptionError
from anomalib_surface.post_processing import BidirectionalIntersection, DoubleThresholdMorphology

BAD_OPTIONS = [
    (DoubleThresholdMorphology, {"kernel_size": 4}, "kernel_size must be odd, got 4"),
    (DoubleThresholdMorphology, {"kernel_size": 20001}, r"kernel_size must be an integer in \[1, 255\], got 20001"),
    (DoubleThresholdMorphology, {"low_factor": 4.0, "high_factor": 3.0}, "low_factor <= high_factor"),
    (DoubleThresholdMorphology, {"min_area": -5}, r"min_area must be an integer in \[0, 16777216\], got -5"),
    (DoubleThresholdMorphology, {"high_factor": math.nan}, "high_factor must be a finite number"),
    (DoubleThresholdMorphology, {"label_iterations": 2.5}, "label_iterations must be an integer"),
    (DoubleThresholdMorphology, {"kernel_shape": "star"}, "kernel_shape must be one of"),
    (DoubleThresholdMorphology, {"operations": ["erode"]}, "operations must be a list drawn from"),
    (DoubleThresholdMorphology, {"factor_grid": [2.0, math.inf]}, "factor_grid must be a finite number"),
    (DoubleThresholdMorphology, {"threshold_statistics": "global"}, "threshold_statistics must be one of"),
    (DoubleThresholdMorphology, {"image_sensitivity": 2.0}, r"image_sensitivity must be a finite number >= 0.0 and <= 1.0"),
    (DoubleThresholdMorphology, {"enable_thresholding": "no"}, "enable_thresholding must be true or false"),
    (BidirectionalIntersection, {"flip": "diagonal"}, "flip must be one of"),
    (BidirectionalIntersection, {"use_directional": 1}, "use_directional must be true or false"),
    (BidirectionalIntersection, {"pixel_sensitivity": -0.1}, "pixel_sensitivity must be a finite number"),
]
IDS = [f"{cls.__name__}-{next(iter(options))}" for cls, options, _ in BAD_OPTIONS]


@pytest.mark.parametrize(("cls", "options", "message"), BAD_OPTIONS, ids=IDS)
def test_bad_option_is_refused_at_build(cls: type, options: dict, message: str) -> None:
    with pytest.raises(OptionError, match=message) as error:
        cls(**options)
    assert "\n" not in str(error.value)
    assert isinstance(error.value, ValueError)


@pytest.mark.parametrize(("cls", "options", "message"), BAD_OPTIONS, ids=IDS)
def test_bad_option_is_refused_when_restored_from_a_checkpoint(cls: type, options: dict, message: str) -> None:
    post_processor = cls()
    config = {**post_processor.checkpoint_config(), **options}
    with pytest.raises(OptionError, match=message):
        post_processor.load_checkpoint_config(config)


def test_restored_settings_rebuild_the_buffers_they_need() -> None:
    """A default instance given a checkpoint's "normal" statistics and factor grid loads that state dict."""
    trained = DoubleThresholdMorphology(threshold_statistics="normal", factor_grid=[2.0, 3.0], kernel_size=5)
    trained.normal_mean.fill_(0.25)
    trained.normal_std.fill_(0.5)
    trained.calibrated_high_factor.fill_(2.0)
    restored = DoubleThresholdMorphology()
    restored.load_checkpoint_config(trained.checkpoint_config())
    restored.load_state_dict(trained.state_dict())
    assert restored.checkpoint_config() == trained.checkpoint_config()
    maps = torch.rand(2, 32, 32)
    batch = InferenceBatch(pred_score=maps.flatten(1).amax(1), anomaly_map=maps)
    torch.testing.assert_close(restored(batch).pred_mask, trained(batch).pred_mask)

    back = DoubleThresholdMorphology()
    restored.load_checkpoint_config(back.checkpoint_config())
    assert restored.state_dict().keys() == back.state_dict().keys()
