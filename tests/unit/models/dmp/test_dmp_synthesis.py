"""Realistic anomaly synthesis used by Dmp (anomalib_surface.models.dmp.realistic_anomaly.RealisticAnomalyGenerator)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from anomalib_surface.models.dmp.realistic_anomaly import RealisticAnomalyGenerator
from anomalib_surface.models.dmp import Dmp


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def constant_fill(value: float):  # noqa: ANN201
    """A replacement for ``generator.fill`` that returns a constant image."""
    return lambda images: torch.full_like(images, value)


def test_masks_match_changed_pixels() -> None:
    generator = RealisticAnomalyGenerator(probability=1.0, match_lighting=1.0, perlin_threshold=0.3)
    images = torch.rand(4, 3, 64, 64)
    augmented, masks = generator(images)
    changed = (augmented != images).any(dim=1, keepdim=True)
    inside = masks.bool()
    assert inside.any(dim=(1, 2, 3)).all(), "every image should receive a defect with probability 1"
    assert not changed[~inside].any(), "pixels outside the mask must be untouched"
    assert changed[inside].float().mean() > 0.99, "pixels inside the mask must change"


def test_probability_zero_leaves_images_untouched() -> None:
    generator = RealisticAnomalyGenerator(probability=0.0)
    images = torch.rand(3, 3, 32, 32)
    augmented, masks = generator(images)
    assert torch.equal(augmented, images)
    assert masks.sum() == 0


@pytest.mark.parametrize("soft_edge_sigma", [0.0, 2.0])
def test_opacity_range_is_respected(soft_edge_sigma: float) -> None:
    low, high = 0.3, 0.6
    generator = RealisticAnomalyGenerator(
        probability=1.0,
        opacity_range=(low, high),
        soft_edge_sigma=soft_edge_sigma,
        match_lighting=0.0,
        perlin_threshold=0.3,
    )
    generator.fill = constant_fill(1.0)
    images = torch.zeros(8, 3, 64, 64)
    augmented, masks = generator(images)  # black image + white fill: the result is the opacity itself
    for alpha, mask in zip(augmented[:, 0], masks[:, 0], strict=True):
        inside = alpha[mask.bool()]
        assert inside.min() > 0
        assert low - 1e-6 <= inside.max() <= high + 1e-6
        if soft_edge_sigma == 0:
            assert torch.allclose(inside, inside.max().expand_as(inside)), "hard edges: one opacity per image"


def test_lighting_follows_the_surrounding_surface() -> None:
    """A flat fill pasted on a brightness ramp takes on the ramp's local brightness."""
    ramp = torch.linspace(0.1, 0.9, 64).expand(2, 3, 64, 64).clone()
    errors = {}
    for strength in (0.0, 1.0):
        torch.manual_seed(1)
        generator = RealisticAnomalyGenerator(
            probability=1.0,
            opacity_range=(1.0, 1.0),
            soft_edge_sigma=0.0,
            match_lighting=strength,
            perlin_threshold=0.3,
        )
        generator.fill = constant_fill(0.5)
        augmented, masks = generator(ramp)
        inside = masks.expand_as(ramp).bool()
        errors[strength] = (augmented - ramp)[inside].abs().mean()
    assert errors[1.0] < 0.25 * errors[0.0]


def test_fill_from_source_folder(tmp_path: Path) -> None:
    source = tmp_path / "dtd"
    source.mkdir()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(source / "red.png")
    generator = RealisticAnomalyGenerator(anomaly_source_path=source, probability=1.0, match_lighting=0.0)
    fill = generator.fill(torch.zeros(2, 3, 32, 32))
    assert fill.shape == (2, 3, 32, 32)
    assert (fill[:, 0] > fill[:, 1]).float().mean() > 0.9, "a red source gives a reddish fill"


def test_refuses_source_overlapping_test_split(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    (dataset / "test" / "good").mkdir(parents=True)
    test_image = dataset / "test" / "good" / "000.png"
    Image.new("RGB", (8, 8)).save(test_image)
    overlapping = RealisticAnomalyGenerator(anomaly_source_path=dataset)
    with pytest.raises(ValueError, match="overlaps the test split"):
        overlapping.check_disjoint_from([test_image])

    separate = tmp_path / "dtd"
    separate.mkdir()
    Image.new("RGB", (8, 8)).save(separate / "texture.png")
    RealisticAnomalyGenerator(anomaly_source_path=separate).check_disjoint_from([test_image])


def test_dmp_refuses_source_overlapping_test_split_at_fit_start(tmp_path: Path) -> None:
    test_dir = tmp_path / "test" / "broken"
    test_dir.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(test_dir / "000.png")
    model = Dmp(**Dmp.smoke_test_init_args(), anomaly_source_path=str(tmp_path))
    test_data = SimpleNamespace(samples=SimpleNamespace(image_path=[str(test_dir / "000.png")]))
    model.trainer = SimpleNamespace(datamodule=SimpleNamespace(test_data=test_data))
    with pytest.raises(ValueError, match="overlaps the test split"):
        model.on_fit_start()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lighting_sigma": 0.0}, "lighting_sigma"),
        ({"scale_range": (2.0, 1.0)}, "scale_range"),
        ({"rotation": 270.0}, "rotation"),
        ({"opacity_range": (0.0, 1.0)}, "opacity_range"),
    ],
)
def test_invalid_options(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RealisticAnomalyGenerator(**kwargs)
