"""Tests of the SurfaceDemo generator and datamodule."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import get_datamodule
from omegaconf import OmegaConf
from PIL import Image

from anomalib_surface.data import SurfaceDemo
from anomalib_surface.data.surface_demo import (
    CATEGORIES,
    DEFECT_TYPES,
    MANIFEST_NAME,
    MASK_THRESHOLD,
    SurfaceDemoSettings,
    generate_surface_samples,
    make_surface_demo,
)

CONFIG = Path(__file__).parents[3] / "configs" / "data" / "surface_demo.yaml"
SMALL = {"image_size": 64, "num_train": 6, "num_test_good": 3, "num_test_defect_per_type": 2}


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _tree(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def brick_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_surface_demo(tmp_path_factory.mktemp("surface_demo"), categories="brick", **SMALL)


def test_layout(brick_root: Path) -> None:
    """MVTec AD layout with the requested counts, RGB images, binary masks named after their images."""
    category = brick_root / "brick"
    assert sorted(path.name for path in brick_root.iterdir()) == ["brick"]
    assert len(list((category / "train" / "good").glob("*.png"))) == SMALL["num_train"]
    assert len(list((category / "test" / "good").glob("*.png"))) == SMALL["num_test_good"]
    assert sorted(path.name for path in (category / "test").iterdir()) == sorted([*DEFECT_TYPES, "good"])
    assert sorted(path.name for path in (category / "ground_truth").iterdir()) == sorted(DEFECT_TYPES)
    for defect in DEFECT_TYPES:
        images = sorted((category / "test" / defect).glob("*.png"))
        masks = sorted((category / "ground_truth" / defect).glob("*.png"))
        assert len(images) == SMALL["num_test_defect_per_type"]
        assert [f"{image.stem}_mask.png" for image in images] == [mask.name for mask in masks]
        for image, mask in zip(images, masks, strict=True):
            assert _read(image).shape == (64, 64, 3)
            assert _read(image).dtype == np.uint8
            mask_values = np.unique(_read(mask))
            assert mask_values.tolist() == [0, 255], f"{mask} must hold 0 and 255 only, and some defect"
    manifest = json.loads((category / MANIFEST_NAME).read_text())
    assert manifest == SurfaceDemoSettings(**SMALL).manifest("brick")


def test_saved_files_match_generated_samples(brick_root: Path) -> None:
    """The files hold exactly the generated images and masks."""
    for sample in generate_surface_samples("brick", SurfaceDemoSettings(**SMALL)):
        folder = brick_root / "brick" / sample.split / sample.label
        np.testing.assert_array_equal(_read(folder / f"{sample.name}.png"), sample.image)
        if sample.mask is not None:
            mask_path = brick_root / "brick" / "ground_truth" / sample.label / f"{sample.name}_mask.png"
            np.testing.assert_array_equal(_read(mask_path) > 0, sample.mask)


@pytest.mark.parametrize("category", CATEGORIES)
def test_masks_are_exactly_the_changed_pixels(category: str) -> None:
    """A defect image differs from its clean crop exactly inside the mask, by >= MASK_THRESHOLD levels."""
    samples = list(generate_surface_samples(category, SurfaceDemoSettings(**SMALL)))
    assert {sample.label for sample in samples if sample.mask is not None} == set(DEFECT_TYPES)
    for sample in samples:
        change = np.abs(sample.image.astype(int) - sample.clean.astype(int)).max(axis=-1)
        if sample.mask is None:
            assert sample.label == "good"
            assert not change.any()
            continue
        assert sample.mask.sum() >= 4, f"{sample.label}/{sample.name} has no visible defect"
        np.testing.assert_array_equal(change > 0, sample.mask)
        assert (change[sample.mask] >= MASK_THRESHOLD).all()


def test_low_contrast_defects_are_subtle() -> None:
    """Low-contrast defects change intensities by a few grey levels only, unlike the other kinds."""
    samples = generate_surface_samples("gravel", SurfaceDemoSettings(**SMALL))
    for sample in samples:
        if sample.mask is None:
            continue
        peak = np.abs(sample.image.astype(int) - sample.clean.astype(int)).max()
        assert (peak <= 12) == (sample.label == "low_contrast"), f"{sample.label}/{sample.name}: peak change {peak}"


def test_build_is_deterministic_and_reused(tmp_path: Path, brick_root: Path) -> None:
    """Same settings give byte-identical files; a second call reuses the folder; another seed differs."""
    again = make_surface_demo(tmp_path / "again", categories=["brick"], **SMALL)
    assert _tree(again) == _tree(brick_root)
    first_image = again / "brick" / "train" / "good" / "000.png"
    modified = first_image.stat().st_mtime_ns
    make_surface_demo(again, categories="brick", **SMALL)
    assert first_image.stat().st_mtime_ns == modified
    other = make_surface_demo(tmp_path / "other", categories="brick", generation_seed=1, **SMALL)
    assert first_image.read_bytes() != (other / "brick" / "train" / "good" / "000.png").read_bytes()


def test_other_settings_replace_generated_folder_atomically(tmp_path: Path) -> None:
    """A folder generated with other settings is rebuilt in place, leaving no temporary folders."""
    make_surface_demo(tmp_path, categories="grass", **SMALL)
    make_surface_demo(tmp_path, categories="grass", **{**SMALL, "num_train": 2})
    assert sorted(path.name for path in tmp_path.iterdir()) == ["grass"]
    assert len(list((tmp_path / "grass" / "train" / "good").iterdir())) == 2
    assert json.loads((tmp_path / "grass" / MANIFEST_NAME).read_text())["num_train"] == 2


def test_foreign_folder_is_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / "gravel").mkdir()
    with pytest.raises(FileExistsError, match=MANIFEST_NAME):
        make_surface_demo(tmp_path, categories="gravel", **SMALL)


def test_datamodule_batches(brick_root: Path) -> None:
    """setup() gives train batches of normal images and test batches whose masks mark the defect images."""
    datamodule = SurfaceDemo(
        root=brick_root,
        category="brick",
        train_batch_size=4,
        eval_batch_size=5,
        num_workers=0,
        **SMALL,
    )
    datamodule.setup()
    train_batch = next(iter(datamodule.train_dataloader()))
    assert train_batch.image.shape == (4, 3, 64, 64)
    assert not train_batch.gt_label.any()
    test_batches = list(datamodule.test_dataloader())
    num_defects = len(DEFECT_TYPES) * SMALL["num_test_defect_per_type"]
    assert sum(len(batch.image) for batch in test_batches) == SMALL["num_test_good"] + num_defects
    for batch in test_batches:
        assert batch.image.shape[1:] == (3, 64, 64)
        assert batch.gt_mask.shape == (len(batch.image), 64, 64)
        has_defect = torch.tensor(["/test/good/" not in path for path in batch.image_path])
        torch.testing.assert_close(batch.gt_label.bool(), has_defect)
        torch.testing.assert_close(batch.gt_mask.flatten(1).any(dim=1), has_defect)
    assert len(datamodule.val_data) == len(datamodule.test_data)


def test_datamodule_generates_on_setup(tmp_path: Path) -> None:
    datamodule = SurfaceDemo(root=tmp_path, category="gravel", num_workers=0, **SMALL)
    datamodule.setup()
    assert len(datamodule.train_data) == SMALL["num_train"]
    assert (tmp_path / "gravel" / MANIFEST_NAME).is_file()


def test_default_root_depends_on_settings() -> None:
    """The default cache folder is per settings, so that datasets of different sizes never collide."""
    small, large = SurfaceDemo(image_size=64), SurfaceDemo(image_size=96)
    assert small.root != large.root
    assert small.root == SurfaceDemo(image_size=(64, 64), category="grass").root
    assert small.root.parent.name == "surface_demo"


def test_config_instantiates_datamodule() -> None:
    """configs/data/surface_demo.yaml works with anomalib's get_datamodule (which makes image_size a pair)."""
    datamodule = get_datamodule(OmegaConf.load(CONFIG))
    assert isinstance(datamodule, SurfaceDemo)
    assert datamodule.category == "brick"
    assert datamodule.settings == SurfaceDemoSettings()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"category": "bottle"}, "brick, grass, gravel"),
        ({"image_size": 16}, "image_size must be an integer >= 32"),
        ({"image_size": (64, 32)}, "square"),
        ({"image_size": 64.0}, "image_size"),
        ({"num_train": 0}, "num_train must be an integer >= 1"),
        ({"num_test_good": 0}, "num_test_good"),
        ({"num_test_defect_per_type": True}, "num_test_defect_per_type"),
        ({"generation_seed": -1}, "generation_seed must be an integer >= 0"),
    ],
)
def test_datamodule_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SurfaceDemo(**kwargs)


@pytest.mark.parametrize(("categories", "message"), [(["brick", "wood"], "'wood'"), ([], "at least one")])
def test_make_surface_demo_rejects_bad_categories(tmp_path: Path, categories: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_surface_demo(tmp_path, categories=categories, **SMALL)
    assert not any(tmp_path.iterdir())
