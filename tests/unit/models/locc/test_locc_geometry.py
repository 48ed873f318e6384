"""Locc's spatial transformer: identity start, learning to undo a known warp, and the inverse warp."""

from __future__ import annotations

import anomalib.models  # noqa: F401  # publish plugins first so the Locc package is never half-imported
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from anomalib_surface.models.locc.anomaly_map import AnomalyMapGenerator
from anomalib_surface.models.locc.spatial_transformer import inverse_rigid_matrix, rigid_matrix, warp
from anomalib_surface.models.locc.torch_model import ImageMatchingModule

SIZE = 32
KNOWN = torch.tensor([[0.10, -0.08, 0.30], [-0.10, 0.05, -0.25], [0.05, 0.10, 0.15], [0.00, -0.10, -0.10]])


def synthetic_image(height: int = SIZE, width: int = SIZE) -> torch.Tensor:
    """Smooth, asymmetric ``[1, 3, H, W]`` test image of Gaussian blobs."""
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")

    def blob(y: float, x: float, sigma: float) -> torch.Tensor:
        return torch.exp(-((rows - y) ** 2 + (cols - x) ** 2) / (2 * sigma**2))

    channels = [blob(-0.3, -0.2, 0.25) + 0.6 * blob(0.35, 0.3, 0.15), blob(0.2, -0.4, 0.2), 0.8 * blob(-0.1, 0.4, 0.3)]
    return torch.stack(channels)[None]


def disk_mask(height: int, width: int, radius: float = 0.35) -> torch.Tensor:
    rows, cols = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    return ((rows - 0.1) ** 2 + (cols + 0.15) ** 2 < radius**2).float()[None, None]


def iou(first: torch.Tensor, second: torch.Tensor) -> float:
    first, second = first > 0.5, second > 0.5
    return float((first & second).sum() / (first | second).sum())


@pytest.mark.parametrize("size", [(32, 32), (24, 40)])
def test_inverse_matrix_undoes_the_transform(size: tuple[int, int]) -> None:
    """Composing the sampling matrices of a transform and its inverse gives the identity (also non-square)."""
    height, width = size
    forward, inverse = rigid_matrix(KNOWN, height, width), inverse_rigid_matrix(KNOWN, height, width)
    bottom = torch.tensor([0.0, 0.0, 1.0]).expand(len(KNOWN), 1, 3)
    composed = torch.cat([forward, bottom], 1) @ torch.cat([inverse, bottom], 1)
    torch.testing.assert_close(composed[:, :2], torch.eye(3)[:2].expand(len(KNOWN), 2, 3), atol=1e-6, rtol=0)


def test_rotation_is_rigid_in_pixels_for_non_square_images() -> None:
    """A quarter turn of a 20x40 image maps a horizontal pixel step to a vertical one of equal length."""
    height, width = 20, 40
    matrix = rigid_matrix(torch.tensor([[0.0, 0.0, torch.pi / 2]]), height, width)[0, :, :2]
    step_x = torch.tensor([2.0 / width, 0.0])  # one pixel to the right in normalised coordinates
    moved = matrix @ step_x
    in_pixels = moved * torch.tensor([width / 2, height / 2])
    torch.testing.assert_close(in_pixels, torch.tensor([0.0, 1.0]), atol=1e-6, rtol=0)


def test_image_matching_starts_at_identity() -> None:
    imm = ImageMatchingModule(channels=(8, 16))
    images = torch.rand(3, 3, SIZE, SIZE)
    imm.set_template(images[0])
    aligned, params = imm(images)
    assert torch.equal(params, torch.zeros(3, 3))
    torch.testing.assert_close(aligned, images, atol=1e-5, rtol=0)


def test_image_matching_learns_to_undo_a_known_rotation_and_shift() -> None:
    """Trained on copies of the template warped by known transforms, the IMM recovers those transforms."""
    torch.manual_seed(0)
    template = synthetic_image()
    templates = template.expand(len(KNOWN), -1, -1, -1)
    inputs = warp(templates, inverse_rigid_matrix(KNOWN, SIZE, SIZE), padding_mode="border")
    imm = ImageMatchingModule(channels=(8, 16, 16))
    imm.set_template(template[0])
    optimizer = torch.optim.Adam(imm.parameters(), lr=3e-3)
    initial = F.mse_loss(inputs, template.expand_as(inputs))
    for _ in range(100):
        aligned, params = imm(inputs)
        loss = F.mse_loss(aligned, template.expand_as(aligned))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss < 0.02 * initial
    torch.testing.assert_close(params.detach(), KNOWN, atol=0.02, rtol=0)


def test_image_matching_refuses_images_of_another_size() -> None:
    imm = ImageMatchingModule(channels=(8,))
    with pytest.raises(RuntimeError, match="no template"):
        imm(torch.rand(1, 3, 16, 16))
    imm.set_template(torch.rand(3, 16, 16))
    with pytest.raises(ValueError, match="image_size"):
        imm(torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_inverse_warp_maps_a_mask_back_onto_the_original(size: tuple[int, int]) -> None:
    """A mask seen on the aligned image comes back onto the input image (IoU near 1)."""
    height, width = size
    original = disk_mask(height, width).expand(len(KNOWN), -1, -1, -1)
    on_aligned = warp(original, rigid_matrix(KNOWN, height, width))
    back = AnomalyMapGenerator()(on_aligned, (height, width), KNOWN)
    assert back.shape == original.shape
    assert min(iou(back[i], original[i]) for i in range(len(KNOWN))) > 0.95


def test_anomaly_map_extends_the_nearest_score_where_the_aligned_image_does_not_reach() -> None:
    """Shifting by half the width leaves the input's left quarter outside I_M: it takes I_M's edge scores."""
    distance = torch.full((1, 1, 8, 8), 0.5)
    distance[..., 0] = 2.0  # I_M's left column, whose scores the uncovered input pixels continue
    anomaly_map = AnomalyMapGenerator()(distance, (32, 32), torch.tensor([[0.5, 0.0, 0.0]]))
    torch.testing.assert_close(anomaly_map[..., :8], torch.full_like(anomaly_map[..., :8], 2.0))
    torch.testing.assert_close(anomaly_map[..., 14:], torch.full_like(anomaly_map[..., 14:], 0.5))
    unaligned = AnomalyMapGenerator()(torch.full((1, 1, 8, 8), 0.5), (32, 32))
    torch.testing.assert_close(unaligned, torch.full((1, 1, 32, 32), 0.5))
