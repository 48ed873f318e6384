"""Image sizes each model needs: checked on the pre-processor at construction and on every batch (issue 9)."""

from __future__ import annotations

import anomalib.models
import pytest
import torch
from anomalib.models.components import GaussianBlur2d

from anomalib_surface.components.input_size import InputSizeRequirement, gaussian_blur_min_side, patchgan_min_side
from anomalib_surface.components.synthetic_anomaly import perlin_masks
from anomalib_surface.models.clgan.torch_model import PatchGANDiscriminator


def build(name: str, size: tuple[int, int], **kwargs: object) -> anomalib.models.AnomalibModule:
    """Model ``name`` in its smoke-test configuration with a pre-processor resizing to ``size``."""
    model_class = getattr(anomalib.models, name)
    pre_processor = model_class.configure_pre_processor(image_size=size)
    return model_class(pre_processor=pre_processor, **{**model_class.smoke_test_init_args(), **kwargs})


def test_requirement_rule_check_and_suggestion() -> None:
    requirement = InputSizeRequirement("Net", minimum=24, multiple_of=8, reason="three stride-2 stages")
    assert requirement.rule() == "height and width >= 24 and divisible by 8"
    assert InputSizeRequirement("Net").rule() == "height and width of any size"
    assert requirement.is_met_by((24, 64))
    assert not requirement.is_met_by((24, 60))
    assert not requirement.is_met_by((16, 64))
    assert requirement.closest_allowed((60, 10)) == (64, 24)
    requirement.check((32, 32), "here")
    with pytest.raises(ValueError, match=r"Net needs images with height and width >= 24 and divisible by 8 "
                                         r"\(three stride-2 stages\), got \(60, 60\) from the input batch.*\(64, 64\)"):
        requirement.check_batch(torch.zeros(1, 3, 60, 60))


@pytest.mark.parametrize("sigma", [1.0, 4.0])
def test_gaussian_blur_min_side_is_the_smallest_side_anomalib_blurs(sigma: float) -> None:
    side = gaussian_blur_min_side(sigma)
    blur = GaussianBlur2d(sigma=sigma, channels=1)
    assert blur(torch.rand(1, 1, side, side)).shape == (1, 1, side, side)
    with pytest.raises(RuntimeError, match="Padding size"):
        blur(torch.rand(1, 1, side - 1, side - 1))
    assert gaussian_blur_min_side(0.0) == 1


@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_patchgan_min_side_gives_at_least_one_logit(n_layers: int) -> None:
    discriminator = PatchGANDiscriminator(ndf=4, n_layers=n_layers)
    side = patchgan_min_side(n_layers)
    assert discriminator(torch.rand(1, 3, side, side)).shape[-2:] == (1, 1)
    with pytest.raises((RuntimeError, ValueError)):  # instance norm of a single pixel, or an empty output
        discriminator(torch.rand(1, 3, side - 2**n_layers, side - 2**n_layers))


@pytest.mark.parametrize(
    ("name", "size", "message"),
    [
        ("Clgan", (50, 50), r"Clgan needs images with height and width >= 17 and divisible by 4 .*n_downsampling=2"),
        ("Clgan", (16, 16), r"Clgan needs images with height and width >= 17 and divisible by 4"),
        ("Tocoad", (16, 16), r"Tocoad needs images with height and width >= 17 \(Gaussian smoothing .*sigma=4.0\)"),
        ("Dmp", (3, 3), r"Dmp needs images with height and width >= 4 \(depth=2 halvings"),
        ("Pgcn", (48, 48), r"image_size \(64, 64\) differs from the pre-processor's output size \(48, 48\)"),
    ],
)
def test_construction_refuses_a_pre_processor_size_the_model_cannot_use(name: str, size: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        build(name, size)
    assert "pre-processor" in str(error.value)


def test_clgan_discriminator_depth_raises_the_minimum() -> None:
    with pytest.raises(ValueError, match=r">= 24 and divisible by 4 .*n_layers_d=3"):
        build("Clgan", (20, 20), n_layers_d=3)
    build("Clgan", (24, 24), n_layers_d=3)


@pytest.mark.parametrize(("name", "size"), [("Clgan", (20, 28)), ("Tocoad", (17, 17)), ("Dmp", (4, 4)), ("Locc", (8, 8))])
def test_construction_accepts_the_smallest_allowed_sizes(name: str, size: tuple) -> None:
    assert tuple(build(name, size).input_size) == size


def test_clgan_and_tocoad_check_every_batch() -> None:
    clgan = build("Clgan", (64, 64)).model.eval()
    with pytest.raises(ValueError, match=r"Clgan needs .* got \(50, 64\) from the input batch"):
        clgan(torch.rand(1, 3, 50, 64))
    assert clgan(torch.rand(1, 3, 24, 20)).anomaly_map.shape == (1, 1, 24, 20)
    tocoad = build("Tocoad", (64, 64)).model.eval()
    with pytest.raises(ValueError, match=r"Tocoad needs .* got \(16, 16\) from the input batch"):
        tocoad(torch.rand(1, 3, 16, 16))


def test_dmp_needs_2_to_the_depth_and_scores_the_smallest_size() -> None:
    with pytest.raises(ValueError, match=r"Dmp needs images with height and width >= 8 \(depth=3 .*got \(7, 12\)"):
        build("Dmp", (7, 12), depth=3)
    dmp = build("Dmp", (8, 8), depth=3).model.eval()
    with torch.no_grad():
        assert dmp(torch.rand(2, 3, 8, 12)).anomaly_map.shape == (2, 1, 8, 12)
    with pytest.raises(ValueError, match=r"Dmp needs .* got \(4, 8\) from the input batch"):
        dmp(torch.rand(1, 3, 4, 8))


@pytest.mark.parametrize("size", [(1, 1), (8, 8), (16, 12), (17, 40), (64, 64)])
def test_perlin_masks_for_any_image_size(size: tuple[int, int]) -> None:
    """anomalib's Perlin noise alone fails at 16 px and below (lattice scales up to 32); ours caps the scale."""
    torch.manual_seed(0)
    masks = perlin_masks(16, *size)
    assert masks.shape == (16, 1, *size)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}


def test_locc_refuses_batches_of_another_size_than_its_template() -> None:
    locc = build("Locc", (32, 32)).model.eval()
    locc.imm.set_template(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r"do not match the template \(3, 32, 32\).*same pre-processor image_size"):
        locc(torch.rand(1, 3, 24, 24))
