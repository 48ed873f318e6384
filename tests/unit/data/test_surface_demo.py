"""Tests of the SurfaceDemo generator and datamodule: layout, sizes, determinism, split disjointness, paths."""

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from anomalib.data import get_datamodule
from omegaconf import OmegaConf
from PIL import Image

from anomalib_surface.data import SurfaceDemo
from anomalib_surface.data.cached_build import STALE_AFTER_SECONDS
from anomalib_surface.data.surface_categories import category_of
from anomalib_surface.data.surface_demo import (
    CATEGORIES,
    MANIFEST_NAME,
    MASK_THRESHOLD,
    VALIDATION_FOLDER,
    SurfaceDemoSettings,
    generate_surface_samples,
    make_surface_demo,
)

DEFECT_TYPES = category_of("brick").defect_types

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
    assert sorted(path.name for path in brick_root.iterdir()) == ["brick", VALIDATION_FOLDER]
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


@pytest.mark.parametrize("category", list(CATEGORIES))
def test_masks_are_exactly_the_changed_pixels(category: str) -> None:
    """A defect image differs from its clean image exactly inside the mask, by >= MASK_THRESHOLD levels."""
    samples = list(generate_surface_samples(category, SurfaceDemoSettings(**SMALL)))
    assert {sample.label for sample in samples if sample.mask is not None} == set(category_of(category).defect_types)
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
    assert sorted(path.name for path in tmp_path.iterdir()) == ["grass", VALIDATION_FOLDER]
    assert sorted(path.name for path in (tmp_path / VALIDATION_FOLDER).iterdir()) == ["grass"]
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
    # Validation is the generated validation set: normal and defective images, none of them a test image.
    val_paths = list(datamodule.val_data.samples.image_path)
    assert all(f"/{VALIDATION_FOLDER}/brick/" in path for path in val_paths)
    assert set(datamodule.val_data.samples.label_index) == {0, 1}
    test_bytes = {Path(path).read_bytes() for path in datamodule.test_data.samples.image_path}
    train_bytes = {Path(path).read_bytes() for path in datamodule.train_data.samples.image_path}
    assert not {Path(path).read_bytes() for path in val_paths} & (test_bytes | train_bytes)
    assert not test_bytes & train_bytes


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
        ({"category": "bottle"}, "brick, grass, gravel, cloth/woven"),
        ({"category": "coins"}, "leather/pebble"),
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


def test_default_sizes_give_enough_test_images() -> None:
    """At 128 px every category has >= 60 normal and >= 60 defective test images, and a validation set."""
    settings = SurfaceDemoSettings()
    assert settings.image_size == 128
    for category in CATEGORIES:
        counts = {(split, label == "good"): 0 for split in ("train", "test", "val") for label in ("good", "x")}
        for split_set in ("main", "validation"):
            for split, label, count in settings.plan(category, split_set):
                counts[split, label == "good"] += count
        assert counts["test", True] >= 60 and counts["test", False] >= 60, category
        assert counts["val", True] >= 1 and counts["val", False] >= 1, category


def test_kinds_and_layout_that_texture_folder_reads() -> None:
    """Three textures, two materials of three patterns each (material/pattern), three objects; no reserved photos."""
    kinds = {kind: [name for name, category in CATEGORIES.items() if category.kind == kind] for kind in ("texture", "pattern", "object")}
    assert kinds["texture"] == ["brick", "grass", "gravel"]
    materials = {}
    for name in kinds["pattern"]:
        material, pattern = name.split("/")
        materials.setdefault(material, []).append(pattern)
    assert set(materials) == {"cloth", "leather"} and all(len(patterns) >= 3 for patterns in materials.values())
    assert len(kinds["object"]) >= 3
    assert {"missing_piece", "crack", "scratch", "misplaced"} <= set(category_of("board").defect_types)
    assert not {"coins", "moon", "immunohistochemistry"} & set(CATEGORIES)
    with pytest.raises(ValueError, match="reserved"):
        from anomalib_surface.data.surface_categories import photo

        photo("coins")


def test_validation_images_are_other_instances(tmp_path: Path) -> None:
    """The validation set comes from other random streams: no image equals a test or training image."""
    settings = SurfaceDemoSettings(**SMALL)
    for category in ("cloth/plaid", "washer"):
        main = [sample.image.tobytes() for sample in generate_surface_samples(category, settings)]
        val = [sample.image.tobytes() for sample in generate_surface_samples(category, settings, "validation")]
        assert len(val) == len(set(val)) and not set(val) & set(main)


def test_pattern_categories_are_a_texture_folder_collection(tmp_path: Path) -> None:
    """SurfaceDemo's patterns run TextureFolder's cross-pattern protocol (train on one pattern, test on another)."""
    from anomalib_surface.data import TextureFolder

    root = make_surface_demo(tmp_path, categories=["cloth/woven", "cloth/plaid"], **SMALL)
    datamodule = TextureFolder(root=root, material="cloth", pattern="woven", split_mode="cross_pattern",
                               test_pattern="plaid", num_workers=0, seed=0)
    datamodule.setup()
    assert all("/cloth/woven/" in path for path in datamodule.train_data.samples.image_path)
    assert all("/cloth/plaid/" in path for path in datamodule.test_data.samples.image_path)
    assert not set(datamodule.val_data.samples.image_path) & set(datamodule.test_data.samples.image_path)


def test_path_with_spaces_works(tmp_path: Path) -> None:
    root = tmp_path / "my data sets"
    datamodule = SurfaceDemo(root=root, category="nut", num_workers=0, eval_batch_size=4, **SMALL)
    datamodule.setup()
    assert next(iter(datamodule.val_dataloader())).image.shape == (4, 3, 64, 64)


@pytest.mark.parametrize("name", ["données", "数据"])
def test_non_ascii_path_is_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="printable ASCII"):
        SurfaceDemo(root=tmp_path / name, category="brick", **SMALL)
    with pytest.raises(ValueError, match="root=.*printable ASCII"):
        make_surface_demo(tmp_path / name, categories="brick", **SMALL)
    assert not any(tmp_path.iterdir())


def test_interrupted_build_is_cleaned_up_by_the_next_run(tmp_path: Path) -> None:
    """A staging folder left by a killed build is removed on the next build; a recent one (maybe running) is kept."""
    old = tmp_path / ".gravel.tmp-0123"
    recent = tmp_path / ".gravel.tmp-4567"
    for folder in (old, recent):
        (folder / "train" / "good").mkdir(parents=True)
        (folder / "train" / "good" / "000.png").write_bytes(b"partial")
    long_ago = time.time() - STALE_AFTER_SECONDS - 10
    os.utime(old, (long_ago, long_ago))
    make_surface_demo(tmp_path, categories="gravel", **SMALL)
    assert not old.exists() and recent.exists()
    assert sorted(path.name for path in tmp_path.iterdir()) == [".gravel.tmp-4567", "gravel", VALIDATION_FOLDER]
