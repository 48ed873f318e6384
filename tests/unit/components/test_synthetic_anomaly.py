"""Shared synthetic anomaly generator: masks, fills, opacity, and the test-data guard."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_surface.components import SyntheticAnomalyGenerator, perlin_masks


def changed(augmented: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """``[B, 1, H, W]`` pixels where any channel changed."""
    return (augmented - images).abs().amax(dim=1, keepdim=True) > 0


def test_perlin_masks_are_binary_and_non_empty() -> None:
    torch.manual_seed(0)
    masks = perlin_masks(6, 48, 40)
    assert masks.shape == (6, 1, 48, 40)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks.flatten(1).sum(1) > 0).all()


@pytest.mark.parametrize("soft_edge_sigma", [0.0, 1.5])
def test_changes_stay_inside_the_masks(soft_edge_sigma: float) -> None:
    torch.manual_seed(1)
    images = torch.rand(8, 3, 64, 64)
    augmented, masks = SyntheticAnomalyGenerator(probability=1.0, soft_edge_sigma=soft_edge_sigma)(images)
    assert augmented.shape == images.shape and masks.shape == (8, 1, 64, 64)
    assert not changed(augmented, images)[masks == 0].any()
    # Inside the masks nearly every pixel changes (fills are re-coloured other images).
    assert changed(augmented, images)[masks == 1].float().mean() > 0.95


def test_probability_selects_images() -> None:
    torch.manual_seed(2)
    images = torch.rand(64, 1, 32, 32)
    _, masks = SyntheticAnomalyGenerator(probability=0.25)(images)
    anomalous = (masks.flatten(1).sum(1) > 0).float().mean()
    assert 0.05 < anomalous < 0.5
    _, none = SyntheticAnomalyGenerator(probability=0.0)(images)
    assert none.sum() == 0


def test_opacity_range_is_respected() -> None:
    torch.manual_seed(3)
    generator = SyntheticAnomalyGenerator(probability=1.0, opacity_range=(0.3, 0.6), soft_edge_sigma=0.0)
    alpha = generator.alpha(perlin_masks(16, 32, 32))
    peak = alpha.flatten(1).amax(1)
    assert ((peak >= 0.3) & (peak <= 0.6)).all()


def test_lighting_match_moves_fill_towards_the_surface() -> None:
    torch.manual_seed(4)
    images = torch.full((4, 3, 32, 32), 0.8)
    masks = perlin_masks(4, 32, 32)
    fill = torch.full_like(images, 0.2)
    matched = SyntheticAnomalyGenerator(match_lighting=1.0)._match_lighting(fill, images, masks)
    assert torch.allclose(matched[masks.expand_as(matched) == 1], torch.tensor(0.8))


def write_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        path = folder / f"{index}.png"
        Image.fromarray(np.full((20, 30, 3), 40 * index, dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_fills_from_a_source_folder(tmp_path: Path) -> None:
    write_images(tmp_path / "dtd" / "banded", 3)
    torch.manual_seed(5)
    generator = SyntheticAnomalyGenerator(tmp_path / "dtd", probability=1.0, soft_edge_sigma=0.0)
    assert len(generator.source_images) == 3
    images = torch.ones(2, 3, 24, 24)
    augmented, masks = generator(images)
    assert not changed(augmented, images)[masks == 0].any()
    assert changed(augmented, images)[masks == 1].any()


def test_refuses_source_folder_that_overlaps_the_test_split(tmp_path: Path) -> None:
    test_images = write_images(tmp_path / "dataset" / "test" / "crack", 2)
    generator = SyntheticAnomalyGenerator(tmp_path / "dataset" / "test")
    with pytest.raises(ValueError, match="overlaps the test split"):
        generator.check_disjoint_from(test_images)
    separate = SyntheticAnomalyGenerator(tmp_path / "dataset" / "test" / "crack")
    with pytest.raises(ValueError, match="never be drawn from test data"):
        separate.check_disjoint_from(test_images)
    write_images(tmp_path / "dtd", 1)
    SyntheticAnomalyGenerator(tmp_path / "dtd").check_disjoint_from(test_images)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"probability": 1.5}, "probability"),
        ({"opacity_range": (0.8, 0.2)}, "opacity_range"),
        ({"soft_edge_sigma": -1}, "soft_edge_sigma"),
        ({"match_lighting": 2}, "match_lighting"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SyntheticAnomalyGenerator(**kwargs)


def test_missing_or_empty_source_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        SyntheticAnomalyGenerator(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="contains no images"):
        SyntheticAnomalyGenerator(tmp_path / "empty")


def test_images_must_be_a_batch() -> None:
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        SyntheticAnomalyGenerator()(torch.rand(3, 8, 8))
