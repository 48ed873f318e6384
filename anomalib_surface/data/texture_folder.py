"""TextureFolder: texture collections with several materials and several patterns per material.

Built for "private-style" collections such as the leather (6 textures, 640x512) and cloth (10
decorative patterns) sets of the PGCN paper. Layout::

    <root>/<material>/<pattern>/
    ├── train/good/*.png                   defect-free training images
    ├── test/good/*.png                    defect-free test images (optional)
    ├── test/<defect>/*.png                defective test images
    └── ground_truth/<defect>/<stem>.png   one mask per defective image, same size
                                           (``<stem>_mask.png`` is accepted too)

Any image extension torchvision knows is read; images can have any size and are optionally resized
(``image_size``) and/or cut into tiles (``tile_size``, ``tile_stride``; every tile is one sample,
labelled anomalous iff its part of the mask is non-empty; tiles cover the whole image, the last row
and column of tiles being flush with the border).

Split modes:

- ``"pattern"``: train and test on one ``pattern`` of the material;
- ``"material"``: all patterns of the material pooled, for training and for testing;
- ``"cross_pattern"``: train on ``pattern``, test on ``test_pattern`` (texture-robustness experiment).
  The normal test images are ``test_pattern``'s ``test/good``, or its ``train/good`` when it has no
  ``test/good`` (they are never trained on in this mode).

Validation defaults to anomalib's ``synthetic`` mode (held-out training images, half with synthetic
anomalies), so no test image is used to fit thresholds or normalisation. SurfaceDemo's pattern
categories (``cloth/*``, ``leather/*``) are such a collection: pass the SurfaceDemo root.

The folders are checked when the datamodule is set up: missing folders, patterns without training
images, defective images without a mask, masks of another size than their image and unreadable
image files raise an error naming the path.

Example:
    >>> from anomalib_surface.data.texture_folder import TextureFolder
    >>> datamodule = TextureFolder(
    ...     root="datasets/cloth", material="cloth", pattern="floral", split_mode="cross_pattern",
    ...     test_pattern="stripes", image_size=(256, 320),
    ... )  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.utils import LabelName, Split, TestSplitMode, ValSplitMode
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import Transform
from torchvision.transforms.v2 import functional as tvf
from torchvision.tv_tensors import Mask

from anomalib_surface.data.cached_build import check_dataset_path
from anomalib_surface.data.checked_dataset import CheckedImageDataset, check_image_files, has_mask
from anomalib_surface.io.image_io import list_image_files, read_mask

__all__ = ["SPLIT_MODES", "TextureFolder", "TextureFolderDataset", "make_texture_folder_samples", "tile_starts"]

SPLIT_MODES = ("pattern", "material", "cross_pattern")
NORMAL_LABEL = "good"
MASK_SUFFIX = "_mask"


def _size_pair(name: str, value: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``(H, W)`` from an int or a pair of positive ints (``None`` passes through)."""
    if value is None:
        return None
    pair = (value, value) if isinstance(value, int) else tuple(value)
    valid = all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in pair)
    if len(pair) != 2 or not valid:  # noqa: PLR2004
        msg = f"{name} must be a positive int or a pair (H, W) of them, got {value!r}."
        raise ValueError(msg)
    return pair


def _subfolders(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.is_dir())


def _require_folder(folder: Path, what: str, siblings_of: Path | None = None) -> Path:
    """Return ``folder`` or raise a FileNotFoundError naming it (and the existing alternatives)."""
    if folder.is_dir():
        return folder
    msg = f"TextureFolder: {what} folder '{folder}' does not exist."
    if siblings_of is not None and siblings_of.is_dir():
        msg += f" Available: {_subfolders(siblings_of)}."
    raise FileNotFoundError(msg)


def _find_mask(image_path: Path, mask_folder: Path) -> Path:
    """The mask of a defective image: ``<stem>.*`` or ``<stem>_mask.*`` in ``mask_folder``."""
    for stem in (image_path.stem, image_path.stem + MASK_SUFFIX):
        for candidate in sorted(mask_folder.glob(f"{stem}.*")):
            if candidate.suffix.lower() in IMG_EXTENSIONS:
                return candidate
    msg = (
        f"TextureFolder: no mask for defective image '{image_path}': expected '{mask_folder / image_path.stem}.<ext>' "
        f"or '{mask_folder / (image_path.stem + MASK_SUFFIX)}.<ext>'."
    )
    raise FileNotFoundError(msg)


def _rows(pattern_dir: Path, split: str, label: str, folder: Path) -> list[dict]:
    """Sample rows of the images of one label folder, checking images (and masks of defects) in full."""
    image_paths = list_image_files(folder)
    mask_paths: list[Path | None] = [None] * len(image_paths)
    if label != NORMAL_LABEL:
        mask_folder = _require_folder(pattern_dir / "ground_truth" / label, f"ground-truth mask (defect '{label}')")
        mask_paths = [_find_mask(image_path, mask_folder) for image_path in image_paths]
    sizes = check_image_files(list(zip(image_paths, mask_paths, strict=True)))
    return [
        {
            "path": str(pattern_dir),
            "pattern": pattern_dir.name,
            "split": split,
            "label": label,
            "image_path": str(image_path),
            "mask_path": None if mask_path is None else str(mask_path),
            "label_index": int(LabelName.NORMAL if label == NORMAL_LABEL else LabelName.ABNORMAL),
            "height": height,
            "width": width,
        }
        for image_path, mask_path, (height, width) in zip(image_paths, mask_paths, sizes, strict=True)
    ]


def _train_rows(pattern_dir: Path, as_split: str) -> list[dict]:
    folder = _require_folder(pattern_dir / "train" / NORMAL_LABEL, f"training ('{pattern_dir.name}')")
    rows = _rows(pattern_dir, as_split, NORMAL_LABEL, folder)
    if not rows:
        msg = f"TextureFolder: pattern '{pattern_dir.name}' has no training images in '{folder}'."
        raise ValueError(msg)
    return rows


def _test_rows(pattern_dir: Path, normal_from_train: bool) -> list[dict]:
    test_dir = _require_folder(pattern_dir / "test", f"test ('{pattern_dir.name}')")
    labels = _subfolders(test_dir)
    rows = [row for label in labels for row in _rows(pattern_dir, "test", label, test_dir / label)]
    if normal_from_train and NORMAL_LABEL not in labels:
        rows += _train_rows(pattern_dir, as_split="test")
    return rows


def make_texture_folder_samples(
    root: str | Path,
    material: str,
    patterns: Sequence[str],
    split: str | Split,
    normal_test_from_train: bool = False,
) -> pd.DataFrame:
    """Samples of some patterns of a material, in the columns of anomalib's datasets.

    Args:
        root: Collection root holding ``<material>/<pattern>/``.
        material: Material folder name.
        patterns: Pattern folder names; all must exist.
        split: ``"train"`` (``train/good``) or ``"test"`` (``test/*``).
        normal_test_from_train: For ``"test"``: use ``train/good`` as normal test images of patterns that
            have no ``test/good``.

    Returns:
        DataFrame with ``path, pattern, split, label, image_path, mask_path, label_index, height, width``
        (image size before any resizing); ``attrs["task"]`` is ``"segmentation"`` when there are masks.

    Raises:
        FileNotFoundError: Missing root/material/pattern/split/mask folder or mask file.
        ValueError: Pattern without training images, unreadable image, mask of another size.
    """
    split = Split(split).value
    root = _require_folder(Path(root), "root")
    material_dir = _require_folder(root / material, f"material ('{material}')", siblings_of=root)
    rows = []
    for pattern in patterns:
        pattern_dir = _require_folder(material_dir / pattern, f"pattern ('{pattern}')", siblings_of=material_dir)
        if split == "train":
            rows += _train_rows(pattern_dir, "train")
        else:
            rows += _test_rows(pattern_dir, normal_test_from_train)
    if not rows:
        msg = f"TextureFolder: no {split} images for patterns {list(patterns)} of material '{material}' under '{root}'."
        raise ValueError(msg)
    samples = pd.DataFrame(rows)
    samples.attrs["task"] = "segmentation" if samples.mask_path.notna().any() else "classification"
    return samples


def tile_starts(length: int, tile: int, stride: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels every ``stride`` pixels covering ``length`` pixels.

    The last tile is flush with the border, e.g. ``tile_starts(10, 4, 4) == [0, 4, 6]``.
    """
    if tile > length:
        msg = f"tile_size {tile} is larger than the image side {length}."
        raise ValueError(msg)
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


class TextureFolderDataset(CheckedImageDataset):
    """Images of some patterns of a texture material, optionally resized and tiled.

    Args:
        root: Collection root holding ``<material>/<pattern>/``.
        material: Material folder name.
        patterns: Pattern folder names.
        split: ``"train"`` or ``"test"``.
        image_size: Resize every image (and mask) to ``(H, W)`` first; ``None`` keeps the file size.
        tile_size: Cut images into tiles of ``(h, w)``; ``None`` for whole images.
        tile_stride: Step between tiles; defaults to ``tile_size`` (no overlap).
        normal_test_from_train: See :func:`make_texture_folder_samples`.
        augmentations: Augmentations applied to every sample (after resize and tiling).
    """

    def __init__(
        self,
        root: str | Path,
        material: str,
        patterns: Sequence[str],
        split: str | Split,
        image_size: int | Sequence[int] | None = None,
        tile_size: int | Sequence[int] | None = None,
        tile_stride: int | Sequence[int] | None = None,
        normal_test_from_train: bool = False,
        augmentations: Transform | None = None,
    ) -> None:
        super().__init__(augmentations=augmentations)
        self.image_size = _size_pair("image_size", image_size)
        self.tile_size = _size_pair("tile_size", tile_size)
        self.tile_stride = _size_pair("tile_stride", tile_stride) or self.tile_size
        self.split = Split(split)
        samples = make_texture_folder_samples(root, material, patterns, self.split, normal_test_from_train)
        self.samples = self._tile(samples) if self.tile_size is not None else samples

    def _resized(self, data: torch.Tensor) -> torch.Tensor:
        return tvf.resize(data, list(self.image_size)) if self.image_size is not None else data

    def load_image(self, sample: pd.Series) -> torch.Tensor:
        """``[3, h, w]`` image of a sample row, resized to ``image_size`` and cut to its tile."""
        return self._crop(self._resized(super().load_image(sample)), sample)

    def load_mask(self, sample: pd.Series) -> torch.Tensor:
        """``[h, w]`` 0/1 mask of a defective sample row, resized (nearest) and cut to its tile."""
        return self._crop(self._resized(super().load_mask(sample)), sample)

    def _tile(self, samples: pd.DataFrame) -> pd.DataFrame:
        """One row per tile (``tile_top``, ``tile_left``), anomalous iff the tile's part of the mask is non-empty."""
        tile_h, tile_w = self.tile_size
        rows = []
        for sample in samples.itertuples(index=False):
            height, width = self.image_size or (sample.height, sample.width)
            mask = self._resized(Mask(read_mask(sample.mask_path))) if has_mask(sample.mask_path) else None
            for top in tile_starts(height, tile_h, self.tile_stride[0]):
                for left in tile_starts(width, tile_w, self.tile_stride[1]):
                    row = {**sample._asdict(), "tile_top": top, "tile_left": left}
                    if mask is not None and not mask[top : top + tile_h, left : left + tile_w].any():
                        row.update(label=NORMAL_LABEL, label_index=int(LabelName.NORMAL))
                    rows.append(row)
        tiles = pd.DataFrame(rows)
        tiles.attrs.update(samples.attrs)
        return tiles

    def _crop(self, data: torch.Tensor, sample: pd.Series) -> torch.Tensor:
        if self.tile_size is None:
            return data
        return tvf.crop(data, int(sample.tile_top), int(sample.tile_left), *self.tile_size)


class TextureFolder(AnomalibDataModule):
    """Datamodule of a multi-material, multi-pattern texture collection (see the module docstring).

    Args:
        root (str | Path): Collection root holding ``<material>/<pattern>/``.
        material (str): Material folder, e.g. ``"leather"``.
        pattern (str | None): Training pattern for ``"pattern"`` and ``"cross_pattern"``; must be ``None`` for
            ``"material"``. Defaults to ``None``.
        split_mode (str): ``"pattern"``, ``"material"`` or ``"cross_pattern"``. Defaults to ``"pattern"``.
        test_pattern (str | None): Test pattern of ``"cross_pattern"`` (different from ``pattern``).
            Defaults to ``None``.
        image_size (int | Sequence[int] | None): Resize images and masks to ``(H, W)`` when loading.
            Defaults to ``None`` (file size; the model's pre-processor still resizes).
        tile_size (int | Sequence[int] | None): Cut (resized) images into tiles of ``(h, w)``, one sample each.
            Defaults to ``None``.
        tile_stride (int | Sequence[int] | None): Step between tiles. Defaults to ``tile_size``.
        train_batch_size (int): Training batch size. Defaults to ``32``.
        eval_batch_size (int): Validation and test batch size. Defaults to ``32``.
        num_workers (int): Dataloader workers. Defaults to ``8``.
        train_augmentations (Transform | None): Training augmentations. Defaults to ``None``.
        val_augmentations (Transform | None): Validation augmentations. Defaults to ``None``.
        test_augmentations (Transform | None): Test augmentations. Defaults to ``None``.
        augmentations (Transform | None): Augmentations of subsets without their own. Defaults to ``None``.
        test_split_mode (TestSplitMode | str): How the test set is made. Defaults to ``"from_dir"``.
        test_split_ratio (float): Fraction of training images used as normal test images when a
            pattern has no ``test/good`` (``"pattern"``/``"material"`` modes). Defaults to ``0.2``.
        val_split_mode (ValSplitMode | str): How the validation set is made. The default, anomalib's
            ``"synthetic"``, holds out part of the training images and pastes synthetic anomalies on half
            of them, so no test image is used (``"same_as_test"`` would fit thresholds on the test images).
            Defaults to ``"synthetic"``.
        val_split_ratio (float): Fraction used for validation. Defaults to ``0.5``.
        seed (int | None): Seed of the random splits. Defaults to ``None``.
    """

    def __init__(
        self,
        root: str | Path,
        material: str,
        pattern: str | None = None,
        split_mode: str = "pattern",
        test_pattern: str | None = None,
        image_size: int | Sequence[int] | None = None,
        tile_size: int | Sequence[int] | None = None,
        tile_stride: int | Sequence[int] | None = None,
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.SYNTHETIC,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            train_batch_size=train_batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            train_augmentations=train_augmentations,
            val_augmentations=val_augmentations,
            test_augmentations=test_augmentations,
            augmentations=augmentations,
            test_split_mode=test_split_mode,
            test_split_ratio=test_split_ratio,
            val_split_mode=val_split_mode,
            val_split_ratio=val_split_ratio,
            seed=seed,
        )
        self.root = check_dataset_path(root, "root")
        self.material = material
        self.split_mode = split_mode
        self.pattern = pattern
        self.test_pattern = test_pattern
        self._check_split_options()
        self.loading = {
            "image_size": _size_pair("image_size", image_size),
            "tile_size": _size_pair("tile_size", tile_size),
            "tile_stride": _size_pair("tile_stride", tile_stride),
        }
        if tile_stride is not None and tile_size is None:
            msg = "tile_stride needs tile_size."
            raise ValueError(msg)
        self.category = self._category_name()

    def _check_split_options(self) -> None:
        """Check that ``pattern``/``test_pattern`` fit ``split_mode``."""
        if self.split_mode not in SPLIT_MODES:
            msg = f"split_mode must be one of {SPLIT_MODES}, got {self.split_mode!r}."
            raise ValueError(msg)
        if self.split_mode == "material" and (self.pattern is not None or self.test_pattern is not None):
            msg = "split_mode='material' pools all patterns: leave pattern and test_pattern unset."
            raise ValueError(msg)
        if self.split_mode != "material" and self.pattern is None:
            msg = f"split_mode={self.split_mode!r} needs pattern (the training pattern)."
            raise ValueError(msg)
        if self.split_mode == "pattern" and self.test_pattern is not None:
            msg = "test_pattern is only used with split_mode='cross_pattern'."
            raise ValueError(msg)
        if self.split_mode == "cross_pattern" and (self.test_pattern is None or self.test_pattern == self.pattern):
            msg = f"split_mode='cross_pattern' needs a test_pattern different from pattern {self.pattern!r}."
            raise ValueError(msg)

    def _category_name(self) -> str:
        """``material/pattern``, ``material`` or ``material/pattern_to_test_pattern`` (names result folders)."""
        if self.split_mode == "material":
            return self.material
        if self.split_mode == "cross_pattern":
            return f"{self.material}/{self.pattern}_to_{self.test_pattern}"
        return f"{self.material}/{self.pattern}"

    def _patterns(self) -> tuple[list[str], list[str]]:
        """Training and test patterns of the split mode."""
        if self.split_mode == "material":
            root = _require_folder(self.root, "root")
            material_dir = _require_folder(root / self.material, f"material ('{self.material}')", siblings_of=root)
            patterns = _subfolders(material_dir)
            if not patterns:
                msg = f"TextureFolder: material folder '{material_dir}' holds no pattern folders."
                raise FileNotFoundError(msg)
            return patterns, patterns
        test_pattern = self.test_pattern if self.split_mode == "cross_pattern" else self.pattern
        return [self.pattern], [test_pattern]

    def _setup(self, _stage: str | None = None) -> None:
        """Build and check the training and test datasets of the split mode."""
        train_patterns, test_patterns = self._patterns()
        common = {"root": self.root, "material": self.material, **self.loading}
        self.train_data = TextureFolderDataset(patterns=train_patterns, split=Split.TRAIN, **common)
        self.test_data = TextureFolderDataset(
            patterns=test_patterns,
            split=Split.TEST,
            normal_test_from_train=self.split_mode == "cross_pattern",
            **common,
        )
        # The task is the collection's (that of the test images), as in anomalib's datasets: when a pattern has no
        # test/good, anomalib moves training images into the test set, and pandas drops ``attrs`` on concatenation
        # unless both splits agree.
        self.train_data.samples.attrs["task"] = self.test_data.samples.attrs["task"]
        for dataset in (self.train_data, self.test_data):
            dataset.category = self.category
