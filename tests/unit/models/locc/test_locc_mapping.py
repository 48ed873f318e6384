"""Locc's mapping network ``N_M``: it starts at the centres' reduction and cannot collapse through a bias.

Regression tests: ``N_M`` used to be a randomly initialised 1×1 network with biases while the centres
were the mean of the *randomly projected* ``F_Mixed``, so features and centres started in unrelated
spaces (every distance near 0.5) and eq. 3 could be minimised by a constant output.
"""

from __future__ import annotations

import anomalib.models  # noqa: F401  # publish plugins first so the Locc package is never half-imported
import torch

from anomalib_surface.models.locc.torch_model import AnomalyLocalisationModule


def tiny_alm() -> AnomalyLocalisationModule:
    torch.manual_seed(0)
    return AnomalyLocalisationModule(pre_trained=False, feature_dim=16, hidden_dim=32).eval()


def test_untrained_features_are_the_reduced_mixed_features() -> None:
    """Before training, ``F_M`` is what the centres are the mean of: an image scored against itself is at distance 0."""
    alm = tiny_alm()
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
