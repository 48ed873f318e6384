"""The conformance kit (``anomalib_surface.testing``) on every plugin model published in ``anomalib.models``
and on two of anomalib's built-in models, trained offline from scratch or from the installed Lite0 weights."""

from __future__ import annotations


import pytest
from anomalib.models import Padim, Stfpm

from anomalib_surface.testing import ConformanceCase, ModelConformance, plugin_models

PLUGIN_CASES = [ConformanceCase(model_class) for model_class in plugin_models()]
BUILT_IN_CASES = [
    ConformanceCase(Padim, {"backbone": "resnet18", "pre_trained": False, "layers": ["layer1", "layer2"], "n_features": 16}),
    # Layers down to the last stage: timm's EfficientNetFeatures runs every block, and blocks after the last layer
    # read get no gradient, so under DDP (find_unused_parameters=False) their buckets are never all-reduced and
    # the ranks' students silently drift apart (an error only from the second step).
    ConformanceCase(Stfpm, {"backbone": "tf_efficientnet_lite0", "layers": ("blocks.1", "blocks.2", "blocks.6")}),
]
CASES = PLUGIN_CASES + BUILT_IN_CASES


def test_every_plugin_model_is_covered() -> None:
    assert [case.name for case in PLUGIN_CASES] == ["Clgan", "Dmp", "Locc", "Pgcn", "Tocoad"]


def test_single_device_pin_is_read_from_one_built_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """anomalib's Padim pins one device, the plugin models do not; the kit builds each model once to ask."""
    from anomalib_surface.models.tocoad import Tocoad

    padim, tocoad = ConformanceCase(Padim, BUILT_IN_CASES[0].init_args), ConformanceCase(Tocoad)  # fresh: nothing cached
    builds = []
    original = ConformanceCase.build_model
    monkeypatch.setattr(ConformanceCase, "build_model", lambda self, *a, **k: builds.append(self.name) or original(self, *a, **k))
    assert [padim.single_device_only(), padim.single_device_only(), tocoad.single_device_only()] == [True, True, False]
    assert builds == ["Padim", "Tocoad"]


class TestConformance(ModelConformance):
    @pytest.fixture(params=CASES, ids=lambda case: case.name)
    def case(self, request: pytest.FixtureRequest) -> ConformanceCase:
        return request.param

    @pytest.fixture(scope="class")
    def ddp_cases(self) -> list[ConformanceCase]:
        return CASES
