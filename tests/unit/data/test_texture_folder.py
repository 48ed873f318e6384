"""TextureFolder: split modes, resizing and tiling, and the errors for broken collections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_surface.data.texture_folder import TextureFolder, TextureFolderDataset, tile_starts

HEIGHT, WIDTH = 24, 32


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _image(seed: int, size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _mask(rows: slice, cols: slice, size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    mask = np.zeros(size, dtype=np.uint8)
    mask[rows, cols] = 255
    return mask


def make_pattern(root: Path, material: str, pattern: str, num_train: int = 3, test_good: bool = True) -> Path:
    """A pattern folder: ``num_train`` training images, 1 good and 2 defective test images with masks."""
    pattern_dir = root / material / pattern
    for index in range(num_train):
        _save(pattern_dir / "train" / "good" / f"{index:03d}.png", _image(index))
    if test_good:
        _save(pattern_dir / "test" / "good" / "000.png", _image(100))
    _save(pattern_dir / "test" / "hole" / "000.png", _image(200))
    _save(pattern_dir / "ground_truth" / "hole" / "000_mask.png", _mask(slice(0, 4), slice(0, 4)))
    _save(pattern_dir / "test" / "stain" / "001.jpg", _image(201))
    _save(pattern_dir / "ground_truth" / "stain" / "001.png", _mask(slice(20, 24), slice(28, 32)))
    return pattern_dir


@pytest.fixture
def collection(tmp_path: Path) -> Path:
    """``leather`` with patterns ``a`` (3 train) and ``b`` (2 train, no test/good)."""
    make_pattern(tmp_path, "leather", "a", num_train=3)
    make_pattern(tmp_path, "leather", "b", num_train=2, test_good=False)
    return tmp_path


def _setup(root: Path, **kwargs) -> TextureFolder:  # noqa: ANN003
    """Set up with no validation split unless asked, so that the training counts are the collection's."""
    kwargs.setdefault("val_split_mode", "none")
    datamodule = TextureFolder(root=root, material="leather", eval_batch_size=8, num_workers=0, **kwargs)
    datamodule.setup()
    return datamodule


def _patterns_and_labels(dataset: TextureFolderDataset) -> list[tuple[str, str, int]]:
    samples = dataset.samples
    return sorted(zip(samples.pattern, samples.label, samples.label_index, strict=True))


def test_pattern_mode_uses_one_pattern(collection: Path) -> None:
    datamodule = _setup(collection, pattern="a")
    assert set(datamodule.train_data.samples.pattern) == {"a"}
    assert len(datamodule.train_data) == 3
    assert _patterns_and_labels(datamodule.test_data) == [("a", "good", 0), ("a", "hole", 1), ("a", "stain", 1)]
    assert datamodule.category == "leather/a"
    batch = next(iter(datamodule.test_dataloader()))
    assert batch.image.shape == (3, 3, HEIGHT, WIDTH)
    assert batch.gt_mask.shape == (3, HEIGHT, WIDTH)
    masks = {Path(path).parent.name: mask for path, mask in zip(batch.image_path, batch.gt_mask, strict=True)}
    assert not masks["good"].any()
    assert masks["hole"][:4, :4].all()
    assert masks["stain"][20:, 28:].all()
    assert [int(mask.sum()) for mask in (masks["hole"], masks["stain"])] == [16, 16]
    assert batch.gt_label.tolist() == [int(Path(path).parent.name != "good") for path in batch.image_path]


def test_pattern_without_test_good_gets_normal_test_images_from_training(collection: Path) -> None:
    datamodule = _setup(collection, pattern="b", test_split_ratio=0.5, seed=0)
    assert datamodule.train_data.task == datamodule.test_data.task == "segmentation"
    test = datamodule.test_data.samples
    assert (test.split == "train").sum() == 1  # half of b's two training images, moved by anomalib
    assert len(datamodule.train_data) == 1
    batch = next(iter(datamodule.test_dataloader()))
    assert batch.gt_mask.shape == (len(test), HEIGHT, WIDTH)
    assert sorted(batch.gt_label.tolist()) == [0, 1, 1]


def test_material_mode_pools_all_patterns(collection: Path) -> None:
    datamodule = _setup(collection, split_mode="material")
    assert sorted(datamodule.train_data.samples.pattern) == ["a", "a", "a", "b", "b"]
    assert set(datamodule.test_data.samples.pattern) == {"a", "b"}
    assert datamodule.category == "leather"


def test_cross_pattern_trains_on_one_pattern_and_tests_on_another(collection: Path) -> None:
    datamodule = _setup(collection, split_mode="cross_pattern", pattern="a", test_pattern="b")
    assert set(datamodule.train_data.samples.pattern) == {"a"}
    test = datamodule.test_data.samples
    assert set(test.pattern) == {"b"}
    # b has no test/good: its (untrained-on) training images are the normal test images.
    assert sorted(Path(path).parent.parent.name for path in test[test.label == "good"].image_path) == ["train", "train"]
    assert int(test.label_index.sum()) == 2
    assert datamodule.category == "leather/a_to_b"


def test_resize_and_tiles(collection: Path) -> None:
    datamodule = _setup(collection, pattern="a", image_size=(12, 16), tile_size=8)
    assert len(datamodule.train_data) == 3 * 2 * 2  # 12x16 -> tiles at rows (0, 4) and columns (0, 8)
    test = datamodule.test_data
    hole = test.samples[test.samples.image_path.str.contains("hole")]
    # The resized hole mask covers rows 0-1, columns 0-1: only the top-left tile contains it.
    assert sorted(zip(hole.tile_top, hole.tile_left, hole.label_index, strict=True)) == [
        (0, 0, 1), (0, 8, 0), (4, 0, 0), (4, 8, 0),
    ]
    item = test[int(hole.index[(hole.tile_top == 4) & (hole.tile_left == 8)][0])]
    assert item.image.shape == (3, 8, 8)
    assert item.gt_mask.shape == (8, 8)
    assert int(item.gt_label) == 0
    assert not item.gt_mask.any()


def test_tile_starts_cover_the_image() -> None:
    assert tile_starts(10, 4, 4) == [0, 4, 6]
    assert tile_starts(8, 4, 2) == [0, 2, 4]
    with pytest.raises(ValueError, match="larger than the image side"):
        tile_starts(3, 4, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"split_mode": "random", "pattern": "a"}, "split_mode must be one of"),
        ({"split_mode": "pattern"}, "needs pattern"),
        ({"split_mode": "material", "pattern": "a"}, "leave pattern and test_pattern unset"),
        ({"split_mode": "cross_pattern", "pattern": "a"}, "needs a test_pattern different"),
        ({"split_mode": "cross_pattern", "pattern": "a", "test_pattern": "a"}, "needs a test_pattern different"),
        ({"pattern": "a", "image_size": 0}, "image_size must be a positive int"),
        ({"pattern": "a", "tile_stride": 4}, "tile_stride needs tile_size"),
    ],
)
def test_invalid_options(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TextureFolder(root=tmp_path, material="leather", **kwargs)


def test_missing_folders_are_named(collection: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"root folder '.*nowhere' does not exist"):
        _setup(collection / "nowhere", pattern="a")
    with pytest.raises(FileNotFoundError, match=r"material \('cloth'\).*Available: \['leather'\]"):
        TextureFolder(root=collection, material="cloth", pattern="a", num_workers=0).setup()
    with pytest.raises(FileNotFoundError, match=r"pattern \('c'\).*Available: \['a', 'b'\]"):
        _setup(collection, pattern="c")
    (collection / "leather" / "a" / "test" / "good" / "000.png").unlink()
    (collection / "leather" / "a" / "test" / "good").rmdir()
    for defect in ("hole", "stain"):
        for path in (collection / "leather" / "a" / "test" / defect).iterdir():
            path.unlink()
        (collection / "leather" / "a" / "test" / defect).rmdir()
    (collection / "leather" / "a" / "test").rmdir()
    with pytest.raises(FileNotFoundError, match=r"test \('a'\) folder .* does not exist"):
        _setup(collection, pattern="a")


def test_pattern_without_training_images(collection: Path) -> None:
    for path in (collection / "leather" / "b" / "train" / "good").iterdir():
        path.unlink()
    with pytest.raises(ValueError, match=r"pattern 'b' has no training images"):
        _setup(collection, split_mode="material")


def test_missing_mask(collection: Path) -> None:
    (collection / "leather" / "a" / "ground_truth" / "stain" / "001.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"no mask for defective image '.*001.jpg'.*001_mask"):
        _setup(collection, pattern="a")


def test_mask_of_another_size(collection: Path) -> None:
    small_mask = _mask(slice(0, 4), slice(0, 4), (10, 10))
    _save(collection / "leather" / "a" / "ground_truth" / "hole" / "000_mask.png", small_mask)
    with pytest.raises(ValueError, match=r"Mask '.*000_mask.png' is 10x10 \(HxW\) but its image '.*000.png' is 24x32"):
        _setup(collection, pattern="a")


def test_unreadable_image(collection: Path) -> None:
    (collection / "leather" / "a" / "train" / "good" / "001.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"Cannot read image file '.*001.png'"):
        _setup(collection, pattern="a")


def test_training_batches_of_any_image_size_after_resize(tmp_path: Path) -> None:
    make_pattern(tmp_path, "cloth", "floral")
    _save(tmp_path / "cloth" / "floral" / "train" / "good" / "big.png", _image(7, (40, 50)))
    datamodule = TextureFolder(
        root=tmp_path, material="cloth", pattern="floral", image_size=16, num_workers=0, train_batch_size=4,
        val_split_mode="none",
    )
    datamodule.setup()
    batch = next(iter(datamodule.train_dataloader()))
    assert batch.image.shape == (4, 3, 16, 16)
    assert torch.all((batch.image >= 0) & (batch.image <= 1))


def test_default_validation_uses_no_test_image(collection: Path) -> None:
    """Default: anomalib's synthetic validation from held-out training images (normal and anomalous)."""
    datamodule = TextureFolder(root=collection, material="leather", pattern="a", num_workers=0, seed=0)
    datamodule.setup()
    assert len(datamodule.train_data) + len(datamodule.val_data) == 3
    assert not set(datamodule.val_data.samples.image_path) & set(datamodule.test_data.samples.image_path)


def test_root_with_spaces_works_and_non_ascii_root_is_refused(tmp_path: Path) -> None:
    make_pattern(tmp_path / "my textures", "leather", "a")
    assert len(_setup(tmp_path / "my textures", pattern="a").test_data) == 3
    with pytest.raises(ValueError, match="root=.*printable ASCII"):
        TextureFolder(root=tmp_path / "textures-é", material="leather", pattern="a")
