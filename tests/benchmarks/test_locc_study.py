"""Locc study: the alignment error against the transforms that MadRto records, checked on real warps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.locc_study import alignment_errors, per_category, pixel_matrix, rto_pixel_matrix
from anomalib_surface.data.rto_variant import RtoTransform
from anomalib_surface.models.locc.spatial_transformer import rigid_matrix, warp

SIZE = 64


def params_of(pixel: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(Tx, Ty, θ)`` of a rigid ``[3, 3]`` pixel sampling matrix (inverse of ``pixel_matrix`` ∘ ``rigid_matrix``)."""
    to_norm = torch.tensor([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]], dtype=torch.float64)
    normalised = to_norm @ pixel @ torch.linalg.inv(to_norm)
    angle = math.atan2(float(normalised[1, 0]) * height / width, float(normalised[0, 0]))
    return torch.tensor([[float(normalised[0, 2]), float(normalised[1, 2]), angle]], dtype=torch.float64)


def test_pixel_matrix_is_the_sampling_of_rigid_params() -> None:
    params = torch.tensor([[0.1, -0.2, 0.3]])
    round_trip = params_of(pixel_matrix(rigid_matrix(params, SIZE, SIZE), SIZE, SIZE)[0], SIZE, SIZE)
    torch.testing.assert_close(round_trip, params.double())


def test_true_alignment_warps_an_rto_image_onto_the_template_and_scores_zero_error() -> None:
    """The alignment that ``alignment_errors`` calls true really maps one RTO image onto another (the template)."""
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    source = ((xx > 20) & (xx < 44) & (yy > 12) & (yy < 30)) | ((xx - 24) ** 2 + (yy - 44) ** 2 < 64)
    source = (source.float() * 255).to(torch.uint8).expand(3, SIZE, SIZE)
    image_t = {"angle": 12.0, "scale": 1.0, "offset": [0.0, 0.0], "shift": [0.05, -0.08]}
    template_t = {"angle": -7.0, "scale": 1.0, "offset": [0.0, 0.0], "shift": [-0.06, 0.02]}
    image, template = (RtoTransform(t["angle"], 1.0, (0.0, 0.0), tuple(t["shift"])).apply(source).float() / 255 for t in (image_t, template_t))

    true = rto_pixel_matrix(image_t, SIZE, SIZE) @ torch.linalg.inv(rto_pixel_matrix(template_t, SIZE, SIZE))
    params = params_of(true, SIZE, SIZE)
    aligned = warp(image[None], rigid_matrix(params.float(), SIZE, SIZE))[0]
    inside = (slice(None), slice(8, -8), slice(8, -8))
    assert (aligned[inside] - template[inside]).abs().mean() < 0.03
    assert (image[inside] - template[inside]).abs().mean() > 0.1  # unaligned, they differ

    rotation, translation = alignment_errors(params, [image_t], template_t, SIZE, SIZE)
    np.testing.assert_allclose(rotation, 0.0, atol=1e-6)
    np.testing.assert_allclose(translation, 0.0, atol=1e-6)
    rotation, _ = alignment_errors(torch.zeros(1, 3), [image_t], template_t, SIZE, SIZE)  # no alignment at all
    assert rotation[0] == pytest.approx(19.0, abs=1e-4)


def test_per_category_table_means_pixel_auroc_over_seeds_with_the_rotation_error() -> None:
    def row(entry: str, data: str, category: str, seed: int, auroc: float, rotation: float | None = None) -> dict:
        return {"data": data, "entry": entry, "category": category, "seed": seed, "status": "ok",
                "raw_metrics": {"pixel_AUROC": auroc}, **({"alignment": {"rotation_deg": rotation}} if rotation else {})}

    rows = [row("Locc +IMM +DGM", "MadRto", "washer", 0, 0.6, 10.0), row("Locc +IMM +DGM", "MadRto", "washer", 1, 0.8, 12.0),
            row("Locc +IMM +DGM", "MadRto", "board", 0, 0.9, 1.0), row("Locc map", "SurfaceDemo", "washer", 0, 0.99)]
    lines = per_category(rows).splitlines()
    assert lines[0] == "| data | model | washer px AUROC (rotation error °) | board px AUROC (rotation error °) |"
    assert lines[2] == "| RTO | Locc +IMM +DGM | 70.0 (11.0) | 90.0 (1.0) |"
    assert lines[3] == "| SurfaceDemo | Locc map | 99.0 | – |"


def test_registration_losses_find_the_rotation_that_an_identity_imm_leaves() -> None:
    from anomalib_surface.models.locc.torch_model import ImageMatchingModule
    from benchmarks.locc_registration import registration_losses

    ys, xs = torch.meshgrid(torch.linspace(-1, 1, SIZE), torch.linspace(-1, 1, SIZE), indexing="ij")
    template = torch.stack([torch.exp(-((xs - 0.4) ** 2 + ys**2) * 6), torch.exp(-(xs**2 + (ys + 0.5) ** 2) * 8), (xs + 1) / 2])
    imm = ImageMatchingModule(channels=(4,))  # zero-initialised output: the identity transform
    imm.set_template(template)
    turned = warp(template[None].repeat(2, 1, 1, 1), rigid_matrix(torch.tensor([[0.0, 0.0, math.radians(12)],
                                                                                 [0.0, 0.0, math.radians(-7)]]), SIZE, SIZE),
                  padding_mode="border")

    losses = registration_losses(imm, turned, max_angle=20)

    assert losses["extra_rotation"].tolist() == [-12.0, 7.0]  # the turn undone: the loss's minimum
    assert np.all(losses["at_minimum"] < 0.05 * losses["after"])
    np.testing.assert_allclose(losses["before"], losses["after"], rtol=1e-5)  # identity IMM: no change


def test_registration_check_finds_the_entry_checkpoints_of_a_study_output(tmp_path) -> None:  # noqa: ANN001
    from benchmarks.locc_registration import checkpoints

    for seed, entry, category in ((0, "Locc +IMM +DGM", "washer"), (1, "Locc +IMM +DGM", "nut"), (0, "Locc -IMM +DGM", "board")):
        path = tmp_path / f"seed{seed}" / "runs" / entry / "MadRto" / category / "Locc" / "v0" / "weights" / "lightning" / "model.ckpt"
        path.parent.mkdir(parents=True)
        path.touch()

    assert [(seed, category) for seed, category, _ in checkpoints(tmp_path, "Locc +IMM +DGM")] == [(0, "washer"), (1, "nut")]
