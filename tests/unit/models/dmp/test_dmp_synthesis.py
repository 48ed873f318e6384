"""Realistic anomaly synthesis used by Dmp (anomalib_surface.models.dmp.realistic_anomaly.RealisticAnomalyGenerator)."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from PIL import Image

from anomalib_surface.models.dmp.realistic_anomaly import RealisticAnomalyGenerator
from anomalib_surface.models.dmp import Dmp
from anomalib_surface.models.dmp.synthesis import DraemAnomalyGenerator, build_anomaly_generator
from anomalib_surface.models.dmp.torch_model import ReparamLargeKernelConv


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


def texture_folder(tmp_path: Path) -> Path:
    """A folder with one red texture image."""
    source = tmp_path / "dtd"
    source.mkdir()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(source / "red.png")
    return source


def test_draem_synthesis_pastes_the_source_texture(tmp_path: Path) -> None:
    generator = build_anomaly_generator("draem", texture_folder(tmp_path), probability=1.0, opacity_range=(1.0, 1.0))
    assert isinstance(generator, DraemAnomalyGenerator)
    images = torch.zeros(4, 3, 64, 64)
    augmented, masks = generator(images)
    assert augmented.shape == images.shape and masks.shape == (4, 1, 64, 64)
    assert masks.sum() > 0
    assert torch.equal(augmented * (1 - masks), images * (1 - masks)), "pixels outside the masks are unchanged"
    assert (augmented * masks).sum() > 0
    with pytest.raises(ValueError, match="overlaps the test split"):
        generator.check_disjoint_from([tmp_path / "dtd" / "red.png"])


def test_self_fill_ignores_the_source_folder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    generator = build_anomaly_generator("self_fill", texture_folder(tmp_path))
    assert isinstance(generator, RealisticAnomalyGenerator)
    assert generator.anomaly_source_path is None
    assert "ignored" in caplog.text
    realistic = build_anomaly_generator("realistic", tmp_path / "dtd")
    assert realistic.source_images == [tmp_path / "dtd" / "red.png"]


def test_draem_synthesis_refuses_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="contains no images"):
        Dmp(**Dmp.smoke_test_init_args(), anomaly_synthesis="draem", anomaly_source_path=str(tmp_path))


def test_draem_equivalent_differs_from_dmp_in_kernels_feature_term_and_synthesis(tmp_path: Path) -> None:
    """The DRAEM-equivalent configuration: the small-kernel, no-feature-term, DRAEM-synthesis Dmp."""
    config = yaml.safe_load(Path("configs/model/dmp_draem_equivalent.yaml").read_text())["model"]
    dmp = yaml.safe_load(Path("configs/model/dmp_cpu.yaml").read_text())["model"]
    assert config["class_path"] == dmp["class_path"] == "anomalib_surface.models.Dmp"
    changed = {key for key, value in config["init_args"].items() if dmp["init_args"].get(key) != value}
    assert changed == {"kernel_size", "feature_consistency", "anomaly_synthesis", "anomaly_source_path"}
    args = {**config["init_args"], "anomaly_source_path": str(texture_folder(tmp_path))}
    args.pop("pre_processor")
    model = Dmp(**args)
    assert isinstance(model.augmenter, DraemAnomalyGenerator)
    assert model.loss.feature_consistency is None
    blocks = [block for block in model.model.modules() if isinstance(block, ReparamLargeKernelConv)]
    assert blocks and all(block.kernel_size == 5 and block.small is None for block in blocks)
