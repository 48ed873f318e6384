"""MadRto: deterministic RTO variants, aligned masks, manifests, layout errors, and the datamodule."""

from __future__ import annotations

import json
from pathlib import Path

import anomalib.data  # noqa: F401  # publish plugins first so our data package is never half-imported
import pytest
import torch
from torchvision import io

from anomalib_surface.data.mad_rto import MadRto
from anomalib_surface.data.rto_variant import MANIFEST_NAME, RtoSettings, RtoTransform, make_mad_rto
from anomalib_surface.data.surface_demo import make_surface_demo

HEIGHT, WIDTH = 40, 48
BACKGROUND, DEFECT = 100, 250


def _save(path: Path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_png(image, str(path))


def _textured(seed: int) -> torch.Tensor:
    """``[3, H, W]`` uint8 smooth random texture around the background level."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(3, HEIGHT // 8, WIDTH // 8, generator=generator)
    noise = torch.nn.functional.interpolate(noise[None], size=(HEIGHT, WIDTH), mode="bilinear")[0]
    return (BACKGROUND - 20 + 40 * noise).to(torch.uint8)


def make_source(root: Path, category: str = "widget") -> Path:
    """Tiny MVTec-layout category: 3 train, 1 good test, 2 'dent' tests whose defect is a bright box."""
    category_dir = root / category
    for index in range(3):
        _save(category_dir / "train" / "good" / f"{index:03d}.png", _textured(index))
    _save(category_dir / "test" / "good" / "000.png", _textured(10))
    for index, (top, left) in enumerate([(6, 8), (18, 26)]):
        image, mask = _textured(20 + index), torch.zeros(1, HEIGHT, WIDTH, dtype=torch.uint8)
        image[:, top : top + 12, left : left + 14] = DEFECT
        mask[:, top : top + 12, left : left + 14] = 255
        _save(category_dir / "test" / "dent" / f"{index:03d}.png", image)
        _save(category_dir / "ground_truth" / "dent" / f"{index:03d}_mask.png", mask)
    return root


def read(path: Path) -> torch.Tensor:
    return io.decode_image(str(path))


def test_manifest_records_every_transform(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    rto_root = make_mad_rto(source, "widget", tmp_path / "rto", max_angle=20, crop_scale=0.7, seed=3)
    manifest = json.loads((rto_root / "widget" / MANIFEST_NAME).read_text())
    assert manifest["settings"] == {"max_angle": 20, "crop_scale": 0.7, "padding_mode": "reflection", "seed": 3, "max_shift": 0.1}
    assert manifest["source"] == str((source / "widget").resolve())
    assert set(manifest["files"]) == {
        "train/good/000.png", "train/good/001.png", "train/good/002.png",
        "test/good/000.png", "test/dent/000.png", "test/dent/001.png",
    }  # fmt: skip
    record = manifest["files"]["test/dent/001.png"]
    assert record["mask"] == "ground_truth/dent/001_mask.png"
    expected = RtoTransform.draw("test/dent/001.png", RtoSettings(20, 0.7, "reflection", 3))
    assert record["transform"] == expected.to_json()
    for target, record in manifest["files"].items():
        assert (rto_root / "widget" / target).is_file()
        assert abs(record["transform"]["angle"]) <= 20 and 0.7 <= record["transform"]["scale"] <= 1
        assert read(rto_root / "widget" / target).shape == (3, HEIGHT, WIDTH)


def test_variants_are_deterministic_per_file(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    first = make_mad_rto(source, "widget", tmp_path / "a", seed=5) / "widget"
    second = make_mad_rto(source, "widget", tmp_path / "b", seed=5) / "widget"
    other_seed = make_mad_rto(source, "widget", tmp_path / "c", seed=6) / "widget"
    files = sorted(path.relative_to(first) for path in first.rglob("*.png"))
    assert len(files) == 8  # 6 images + 2 masks
    assert all((first / name).read_bytes() == (second / name).read_bytes() for name in files)
    assert any((first / name).read_bytes() != (other_seed / name).read_bytes() for name in files)
    # A file's transform depends only on the seed and its own path, not on the other files.
    settings = RtoSettings(seed=5)
    assert RtoTransform.draw("train/good/000.png", settings) == RtoTransform.draw("train/good/000.png", settings)
    assert RtoTransform.draw("train/good/000.png", settings) != RtoTransform.draw("train/good/001.png", settings)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflection"])
def test_masks_stay_aligned_with_images(tmp_path: Path, padding_mode: str) -> None:
    source = make_source(tmp_path / "src")
    rto_root = make_mad_rto(source, "widget", tmp_path / "rto", max_angle=40, crop_scale=0.7, padding_mode=padding_mode)
    category_dir = rto_root / "widget"
    for index in range(2):
        image = read(category_dir / "test" / "dent" / f"{index:03d}.png")
        mask = read(category_dir / "ground_truth" / "dent" / f"{index:03d}_mask.png")[0] > 127
        bright = image.float().mean(0) > (BACKGROUND + DEFECT) / 2
        assert mask.any()
        assert float((bright & mask).sum() / (bright | mask).sum()) > 0.85
        assert set(read(category_dir / "ground_truth" / "dent" / f"{index:03d}_mask.png").unique().tolist()) <= {0, 255}


def test_no_rotation_and_no_crop_is_the_identity(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    category_dir = make_mad_rto(source, "widget", tmp_path / "rto", max_angle=0, crop_scale=1.0, max_shift=0.0) / "widget"
    for name in ("train/good/000.png", "test/dent/001.png", "ground_truth/dent/001_mask.png"):
        assert torch.equal(read(category_dir / name), read(source / "widget" / name))


def test_quarter_turn_rotates_counter_clockwise() -> None:
    image = torch.arange(16, dtype=torch.uint8).view(1, 4, 4) * 10
    rotated = RtoTransform(angle=90.0, scale=1.0, offset=(0.0, 0.0)).apply(image, mode="nearest")
    assert torch.equal(rotated, torch.rot90(image, 1, dims=(1, 2)))


def test_translation_moves_the_image_by_its_fraction_of_the_side() -> None:
    image = torch.arange(25, dtype=torch.uint8).view(1, 5, 5) + 1
    moved = RtoTransform(angle=0.0, scale=1.0, offset=(0.0, 0.0), shift=(0.25, 0.0)).apply(image, mode="nearest")
    assert torch.equal(moved[:, :, 1:], image[:, :, :-1]) and not moved[:, :, 0].any()


def test_default_variant_is_rigid_rotation_and_translation(tmp_path: Path) -> None:
    """Zoom is off by default (scale 1); rotation and translation stay within the stated ranges."""
    source = make_source(tmp_path / "src")
    manifest = json.loads((make_mad_rto(source, "widget", tmp_path / "rto") / "widget" / MANIFEST_NAME).read_text())
    transforms = [record["transform"] for record in manifest["files"].values()]
    assert all(transform["scale"] == 1.0 for transform in transforms)
    assert all(abs(transform["angle"]) <= 15 and max(map(abs, transform["shift"])) <= 0.1 for transform in transforms)
    assert any(abs(transform["shift"][0]) > 0.01 for transform in transforms)


def test_existing_variant_is_reused_and_rebuilt_when_the_source_changes(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    category_dir = make_mad_rto(source, "widget", tmp_path / "rto") / "widget"
    built = (category_dir / MANIFEST_NAME).stat().st_mtime_ns
    make_mad_rto(source, "widget", tmp_path / "rto")
    assert (category_dir / MANIFEST_NAME).stat().st_mtime_ns == built
    _save(source / "widget" / "train" / "good" / "003.png", _textured(3))
    make_mad_rto(source, "widget", tmp_path / "rto")
    assert (category_dir / "train" / "good" / "003.png").is_file()
    assert "train/good/003.png" in json.loads((category_dir / MANIFEST_NAME).read_text())["files"]


def test_layout_errors_are_clear(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    with pytest.raises(FileNotFoundError, match=r"categories found in .*\['widget'\]"):
        make_mad_rto(source, "gadget", tmp_path / "rto")
    (source / "widget" / "ground_truth" / "dent" / "001_mask.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"No ground-truth mask for defect image .*001\.png"):
        make_mad_rto(source, "widget", tmp_path / "rto")
    (tmp_path / "bare" / "thing" / "test").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="missing folder 'train/good/'"):
        make_mad_rto(tmp_path / "bare", "thing", tmp_path / "rto")
    (tmp_path / "bare" / "thing" / "train" / "good").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        make_mad_rto(tmp_path / "bare", "thing", tmp_path / "rto")


def test_foreign_cache_folder_and_bad_settings_are_refused(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    (tmp_path / "rto" / "widget").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=MANIFEST_NAME):
        make_mad_rto(source, "widget", tmp_path / "rto")
    with pytest.raises(ValueError, match="max_angle"):
        RtoSettings(max_angle=-1)
    with pytest.raises(ValueError, match="crop_scale"):
        RtoSettings(crop_scale=0)
    with pytest.raises(ValueError, match="padding_mode"):
        RtoSettings(padding_mode="wrap")
    with pytest.raises(ValueError, match="max_shift"):
        RtoSettings(max_shift=0.6)


def test_missing_non_mvtec_category_is_an_error_not_a_download(tmp_path: Path) -> None:
    source = make_source(tmp_path / "src")
    datamodule = MadRto(root=source, category="gadget", cache_root=tmp_path / "rto", num_workers=0)
    with pytest.raises(FileNotFoundError, match="gadget"):
        datamodule.prepare_data()
    assert not (tmp_path / "src" / "gadget").exists()


def test_datamodule_turns_surface_demo_into_an_rto_variant(tmp_path: Path) -> None:
    root = make_surface_demo(
        tmp_path / "demo",
        "gravel",
        image_size=32,
        num_train=4,
        num_test_good=1,
        num_test_defect_per_type=1,
    )
    datamodule = MadRto(
        root=root,
        category="gravel",
        cache_root=tmp_path / "rto",
        max_angle=30,
        train_batch_size=4,
        eval_batch_size=6,
        num_workers=0,
        seed=0,
    )
    datamodule.setup()
    # Default validation: anomalib's synthetic mode on held-out training images, never a test image.
    assert len(datamodule.train_data) + len(datamodule.val_data) == 4 and len(datamodule.test_data) == 6
    assert not set(datamodule.val_data.samples.image_path) & set(datamodule.test_data.samples.image_path)
    assert set(datamodule.val_data.samples.label_index) == {0, 1}
    assert all(str(tmp_path / "rto") in path for path in datamodule.test_data.samples.image_path)
    batch = next(iter(datamodule.test_dataloader()))
    assert batch.image.shape == (6, 3, 32, 32) and batch.gt_mask.shape == (6, 32, 32)
    assert int(batch.gt_label.sum()) == 5 and bool(batch.gt_mask.flatten(1).any(1).sum() == 5)


def test_paths_with_spaces_work_and_non_ascii_cache_is_refused_before_writing(tmp_path: Path) -> None:
    source = make_source(tmp_path / "source data")
    datamodule = MadRto(root=source, category="widget", cache_root=tmp_path / "rto cache", num_workers=0, seed=0)
    datamodule.setup()
    assert len(datamodule.test_data) == 3
    with pytest.raises(ValueError, match="cache_root=.*printable ASCII"):
        MadRto(root=source, category="widget", cache_root=tmp_path / "caché")
    with pytest.raises(ValueError, match="cache_root=.*printable ASCII"):
        make_mad_rto(source, "widget", tmp_path / "缓存")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["rto cache", "source data"]
