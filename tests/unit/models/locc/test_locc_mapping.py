"""Locc's mapping network ``N_M``: from scratch (the paper) or at the centres' reduction; no bias to collapse through.

Regression tests: ``N_M`` used to be a randomly initialised 1×1 network with biases while the centres
were the mean of the *randomly projected* ``F_Mixed``, so features and centres started in unrelated
spaces (every distance near 0.5) and eq. 3 could be minimised by a constant output.
"""

from __future__ import annotations

import anomalib.models  # noqa: F401  # publish plugins first so the Locc package is never half-imported
import pytest
import torch

from anomalib_surface.models.locc.torch_model import AnomalyLocalisationModule


def tiny_alm(mapping_start: str = "scratch") -> AnomalyLocalisationModule:
    torch.manual_seed(0)
    return AnomalyLocalisationModule(pre_trained=False, feature_dim=16, hidden_dim=32, mapping_start=mapping_start).eval()


def test_residual_start_features_are_the_reduced_mixed_features() -> None:
    """Residual start: before training, ``F_M`` is what the centres are the mean of (an image against itself: 0)."""
    alm = tiny_alm("residual")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        features = alm(images)
        reduced = alm.reduce(alm.mixed_features(images))
        torch.testing.assert_close(features, reduced)
        alm.set_centres(reduced[0])
        distance = alm.distance(features)
    torch.testing.assert_close(distance[0], torch.zeros_like(distance[0]), atol=1e-5, rtol=0)
    assert distance[1].mean() > 1e-3  # another image is not at its centre


def test_mapping_network_has_no_bias_to_collapse_onto_the_centres() -> None:
    """With any weights, zero features give a zero residual: ``N_M`` cannot output a constant."""
    alm = tiny_alm()
    with torch.no_grad():
        for parameter in alm.mapper.parameters():
            parameter.normal_()
        channels = alm.mapper[0].in_channels
        assert torch.count_nonzero(alm.mapper(torch.zeros(1, channels, 4, 4))) == 0


def test_scratch_start_is_the_mapping_network_alone() -> None:
    """From scratch (the default, as in the paper) ``F_M = N_M(F_Mixed)``, randomly initialised: no projection added."""
    alm = tiny_alm()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        mixed = alm.mixed_features(images)
        torch.testing.assert_close(alm(images), alm.mapper(mixed))
    assert torch.count_nonzero(alm.mapper[-1].weight) > 0


def test_unknown_mapping_start_is_refused() -> None:
    with pytest.raises(ValueError, match="mapping_start must be one of"):
        AnomalyLocalisationModule(pre_trained=False, feature_dim=16, hidden_dim=32, mapping_start="zero")
