"""Locc's local-centre loss (eq. 3 / eq. 5) and defect generation module on hand-made tensors."""

from __future__ import annotations

import anomalib.models  # noqa: F401  # publish plugins first so the Locc package is never half-imported
import pytest
import torch

from anomalib_surface.models.locc.defect_generation import DefectGenerator, rectangle_masks
from anomalib_surface.models.locc.loss import LocalCentreLoss, defect_positions, half_cosine_distance

# Two positions (1x2 grid) in 2-D feature space: centres e_x at the left, e_y at the right.
CENTRES = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # [D=2, h=1, w=2]


def features(*vectors: tuple[float, float]) -> torch.Tensor:
    """``[1, 2, 1, len(vectors)]`` features from one 2-D vector per position."""
    return torch.tensor(vectors).T.reshape(1, 2, 1, len(vectors))


def test_half_cosine_distance_per_position() -> None:
    # equal direction -> 0; orthogonal -> 0.5; opposite -> 1; length does not matter
    distance = half_cosine_distance(features((3.0, 0.0), (1.0, 0.0)), CENTRES)
    torch.testing.assert_close(distance, torch.tensor([[[0.0, 0.5]]]))
    distance = half_cosine_distance(features((-1.0, 0.0), (0.0, 5.0)), CENTRES)
    torch.testing.assert_close(distance, torch.tensor([[[1.0, 0.0]]]))


def test_loss_without_defects_is_eq_3() -> None:
    """Mean over positions of 0.5 * cosine distance: (0 + 0.5) / 2."""
    loss = LocalCentreLoss()(features((1.0, 0.0), (1.0, 0.0)), CENTRES)
    torch.testing.assert_close(loss, torch.tensor(0.25))


def test_loss_on_defect_positions_is_eq_5() -> None:
    """A defect position costs max(0, delta - d): 0.1 when on its centre, 0 when far enough."""
    pair = features((1.0, 0.0), (1.0, 0.0))  # distances 0 and 0.5
    left_defect = torch.tensor([[[[1.0, 0.0]]]])
    right_defect = torch.tensor([[[[0.0, 1.0]]]])
    loss = LocalCentreLoss(margin=0.1)
    torch.testing.assert_close(loss(pair, CENTRES, left_defect), torch.tensor((0.1 + 0.5) / 2))
    torch.testing.assert_close(loss(pair, CENTRES, right_defect), torch.tensor((0.0 + 0.0) / 2))
    torch.testing.assert_close(LocalCentreLoss(margin=0.8)(pair, CENTRES, right_defect), torch.tensor((0.0 + 0.3) / 2))


def test_loss_with_one_global_centre_broadcasts() -> None:
    centre = torch.tensor([1.0, 0.0]).view(2, 1, 1)
    loss = LocalCentreLoss()(features((1.0, 0.0), (0.0, 1.0)), centre)
    torch.testing.assert_close(loss, torch.tensor(0.25))


def test_pixel_masks_are_pooled_to_positions_by_majority() -> None:
    masks = torch.zeros(1, 1, 4, 4)
    masks[..., :, :2] = 1.0  # left half fully defect
    masks[..., 0, 2] = 1.0  # a quarter of the top-right cell
    torch.testing.assert_close(defect_positions(masks, (2, 2)), torch.tensor([[[1.0, 0.0], [1.0, 0.0]]]))


def test_margin_is_validated() -> None:
    with pytest.raises(ValueError, match="margin"):
        LocalCentreLoss(margin=0.0)


@pytest.mark.parametrize("mask_shape", ["perlin", "rectangle"])
def test_defect_generator_changes_images_only_inside_the_masks(mask_shape: str) -> None:
    torch.manual_seed(0)
    images = torch.rand(6, 3, 32, 32)
    augmented, masks = DefectGenerator(probability=1.0, mask_shape=mask_shape)(images)
    assert augmented.shape == images.shape
    assert masks.shape == (6, 1, 32, 32)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert bool(masks.flatten(1).any(1).all())
    torch.testing.assert_close(augmented * (1 - masks), images * (1 - masks))
    assert augmented.min() >= 0 and augmented.max() <= 1
    assert (augmented - images).abs().sum() > 0


def test_defect_generator_probability_zero_leaves_images_untouched() -> None:
    images = torch.rand(4, 3, 32, 32)
    augmented, masks = DefectGenerator(probability=0.0)(images)
    assert not masks.any()
    torch.testing.assert_close(augmented, images)


def test_defect_generator_rejects_unknown_shapes() -> None:
    with pytest.raises(ValueError, match="mask_shape"):
        DefectGenerator(mask_shape="circle")


def test_rectangle_masks_are_rectangles_inside_the_image() -> None:
    torch.manual_seed(1)
    masks = rectangle_masks(5, 40, 30, side_range=(0.2, 0.5))
    for mask in masks[:, 0].bool():
        rows, cols = mask.any(1), mask.any(0)
        assert int(mask.sum()) == int(rows.sum()) * int(cols.sum())  # a filled box
        assert 0.2 * 40 - 1 <= rows.sum() <= 0.5 * 40 + 1
        assert 0.2 * 30 - 1 <= cols.sum() <= 0.5 * 30 + 1


def test_default_defects_are_large_enough_for_the_push_term() -> None:
    """Default regions (rectangles, sides 15-40 % of the image) cover several feature positions (stride 4), so that
    eq. 5 has defect positions to push in every copy; ``every_image`` puts one in every image."""
    torch.manual_seed(0)
    images = torch.rand(64, 3, 64, 64)
    _, masks = DefectGenerator(probability=0.0)(images, every_image=True)
    coverage = masks.flatten(1).mean(1)
    assert bool((coverage >= 0.15**2 * 0.8).all()) and bool((coverage <= 0.4**2 * 1.2).all())
    positions = defect_positions(masks, (16, 16)).flatten(1).sum(1)
    assert bool((positions >= 4).all())


def test_foreign_defects_come_from_the_source_folder(tmp_path) -> None:
    """``anomaly_source_path`` (e.g. a folder of photos, the paper's VOC stand-in) fills the foreign defects."""
    from PIL import Image

    Image.new("RGB", (40, 40), (255, 0, 0)).save(tmp_path / "red.png")
    torch.manual_seed(0)
    generator = DefectGenerator(str(tmp_path), probability=1.0)
    images = torch.zeros(32, 3, 32, 32)
    augmented, masks = generator(images)
    inside = augmented.permute(1, 0, 2, 3)[:, masks[:, 0].bool()]
    assert bool((inside[0] > inside[1] + 0.2).any())  # some regions are (blended) red photo content
