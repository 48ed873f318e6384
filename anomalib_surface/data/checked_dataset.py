"""Datasets that read every image and mask with :mod:`anomalib_surface.io.image_io` and check them up front."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import torch
from anomalib import TaskType
from anomalib.data.dataclasses import ImageItem
from anomalib.data.datasets.base import AnomalibDataset
from anomalib.data.datasets.image.mvtecad import MVTecADDataset
from anomalib.data.utils import LabelName, Split
from torchvision.tv_tensors import Image as ImageTensor
from torchvision.tv_tensors import Mask

from anomalib_surface.io.image_io import check_mask_size, image_size_of, read_image, read_mask

__all__ = ["CheckedImageDataset", "MVTecLayoutDataset", "check_image_files", "check_sample_files", "has_mask"]


def has_mask(mask_path: object) -> bool:
    """Whether a ``mask_path`` cell holds a path (normal samples hold ``None``, or NaN after pandas concatenation)."""
    return isinstance(mask_path, str) and bool(mask_path)


CHECK_THREADS = 8
"""Threads decoding files in the up-front checks (Pillow and numpy release the GIL while decoding)."""


def check_mask_file(mask_path: str | Path, image_path: str | Path, image_size: tuple[int, int]) -> None:
    """Check that a mask file is readable, binary and of its image's ``(H, W)`` (errors name the files)."""
    check_mask_size(mask_path, tuple(read_mask(mask_path).shape), image_path, image_size)


def _check_pair(image_path: str | Path, mask_path: str | Path | None) -> tuple[int, int]:
    image_size = image_size_of(image_path)
    if mask_path is not None:
        check_mask_file(mask_path, image_path, image_size)
    return image_size


def check_image_files(pairs: Sequence[tuple[str | Path, str | Path | None]]) -> list[tuple[int, int]]:
    """Decode every ``(image, mask or None)`` pair in full, in :data:`CHECK_THREADS` threads.

    Returns:
        ``(H, W)`` of each image, in order.

    Raises:
        ImageReadError / MaskError: Of the first bad pair in list order, naming its file.
    """
    with ThreadPoolExecutor(max_workers=CHECK_THREADS) as pool:
        return list(pool.map(lambda pair: _check_pair(*pair), pairs))


def check_sample_files(samples: pd.DataFrame, where: str) -> None:
    """Check every image of ``samples`` (decoded in full) and every mask (present for defects, binary, same size).

    Args:
        samples: anomalib sample table (``image_path``, ``mask_path``, ``label_index``).
        where: The dataset folder, named in the error when ``samples`` is empty.

    Raises:
        ValueError: No samples; a defective image without mask. ImageReadError / MaskError from
            :mod:`~anomalib_surface.io.image_io`, naming the file.
    """
    if samples.empty:
        msg = f"No images found in '{where}'."
        raise ValueError(msg)
    for sample in samples.itertuples(index=False):
        if (
            not has_mask(sample.mask_path)
            and sample.label_index == LabelName.ABNORMAL
            and samples.attrs.get("task") == TaskType.SEGMENTATION
        ):
            msg = f"Defective image '{sample.image_path}' has no ground-truth mask."
            raise ValueError(msg)
    check_image_files([
        (sample.image_path, sample.mask_path if has_mask(sample.mask_path) else None)
        for sample in samples.itertuples(index=False)
    ])


class CheckedImageDataset(AnomalibDataset):
    """Base of this package's datasets: items built from :func:`read_image`-style hooks.

    Subclasses override :meth:`load_image` / :meth:`load_mask` to resize or crop; the item assembly
    (zero masks for normal images, joint augmentation of image and mask) is shared.
    """

    def load_image(self, sample: pd.Series) -> torch.Tensor:
        """``[3, H, W]`` float image of a sample row."""
        return ImageTensor(read_image(sample.image_path))

    def load_mask(self, sample: pd.Series) -> torch.Tensor:
        """``[H, W]`` uint8 0/1 mask of a defective sample row."""
        return Mask(read_mask(sample.mask_path))

    def __getitem__(self, index: int) -> ImageItem:
        """Image with its label and, for segmentation, its mask (zeros for normal images), augmented."""
        sample = self.samples.iloc[index]
        image = self.load_image(sample)
        gt_mask = None
        if self.task == TaskType.SEGMENTATION:
            gt_mask = (
                self.load_mask(sample)
                if has_mask(sample.mask_path)
                else Mask(torch.zeros(image.shape[-2:], dtype=torch.uint8))
            )
        if self.augmentations is not None:
            if gt_mask is None:
                image = self.augmentations(image)
            else:
                image, gt_mask = self.augmentations(image, gt_mask)
        return ImageItem(
            image=image,
            gt_mask=gt_mask,
            gt_label=torch.tensor(int(sample.label_index)),
            image_path=sample.image_path,
            mask_path=sample.mask_path if has_mask(sample.mask_path) else None,
        )


class MVTecLayoutDataset(CheckedImageDataset, MVTecADDataset):
    """anomalib's MVTec AD dataset (any category name) with this package's reading rules and file checks.

    Args:
        root: Dataset root holding ``<category>/{train,test,ground_truth}``.
        category: Category folder.
        split: ``"train"`` or ``"test"``.
    """

    def __init__(self, root: str | Path, category: str, split: str | Split) -> None:
        super().__init__(root=root, category=category, split=split)
        check_sample_files(self.samples, str(Path(root) / category / Split(split).value))
