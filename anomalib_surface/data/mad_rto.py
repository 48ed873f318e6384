"""MadRto: the randomly rotated and cropped ("RTO") variant of an MVTec-layout dataset, as a datamodule.

The variant itself (transforms, cache, manifest) is built by
:func:`~anomalib_surface.data.rto_variant.make_mad_rto`; this module reads it. Validation defaults to
anomalib's ``synthetic`` mode: half of the (transformed) training images, with anomalib's synthetic
anomalies pasted on one half of those, so thresholds and normalisation never see a test image.

Example:
    >>> from anomalib_surface.data.mad_rto import MadRto
    >>> datamodule = MadRto(root="./datasets/MVTecAD", category="bottle")  # doctest: +SKIP
    >>> datamodule.setup()  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from anomalib.data.datamodules.image.mvtecad import MVTecAD
from anomalib.data.datasets.image.mvtecad import CATEGORIES as MVTEC_CATEGORIES
from anomalib.data.utils import Split, TestSplitMode, ValSplitMode
from torchvision.transforms.v2 import Transform

from anomalib_surface.data.cached_build import check_dataset_path
from anomalib_surface.data.checked_dataset import MVTecLayoutDataset
from anomalib_surface.data.rto_variant import RtoSettings, make_mad_rto, scan_mvtec_category

__all__ = ["MadRto"]


class MadRto(MVTecAD):
    """RTO variant (random rotation + random crop) of an MVTec-layout category; the paper's MAD-RTO.

    Rotation and crop ranges are our assumption (the paper gives none); ``crop_scale=1`` turns the zoom
    off, leaving rotation and translation only (see :mod:`~anomalib_surface.data.rto_variant`).

    ``root`` is the *source* dataset. When ``<root>/<category>`` is missing and ``category`` is an
    MVTec AD category, MVTec AD is downloaded there as by :class:`~anomalib.data.MVTecAD`; any other
    missing category is an error. The variant is built once into ``cache_root`` (see
    :func:`make_mad_rto`) and read from there.

    Args:
        root: Source dataset root (MVTec AD layout). Defaults to ``"./datasets/MVTecAD"``.
        category: Category to transform. The paper uses :data:`MVTEC_OBJECT_CATEGORIES`. Defaults to ``"bottle"``.
        cache_root: Where the variant is written; ``None`` uses a per-settings user cache folder.
        max_angle: Largest rotation in degrees. Defaults to ``15.0``.
        crop_scale: Smallest crop side as a fraction of the image side; ``1`` turns crop and zoom off.
            Defaults to ``1.0``.
        max_shift: Largest translation along x and y as a fraction of the image side. Defaults to ``0.1``.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"`` for the corners the rotation brings in.
            Defaults to ``"reflection"``.
        rto_seed: Seed of the per-file transforms. Defaults to ``0``.
        train_batch_size: Training batch size. Defaults to ``32``.
        eval_batch_size: Validation and test batch size. Defaults to ``32``.
        num_workers: Dataloader workers. Defaults to ``8``.
        train_augmentations: Augmentations of the training images. Defaults to ``None``.
        val_augmentations: Augmentations of the validation images. Defaults to ``None``.
        test_augmentations: Augmentations of the test images. Defaults to ``None``.
        augmentations: Augmentations of subsets that have none of their own. Defaults to ``None``.
        test_split_mode: How the test set is made. Defaults to ``TestSplitMode.FROM_DIR``.
        test_split_ratio: Fraction of data used for testing. Defaults to ``0.2``.
        val_split_mode: How the validation set is made. The default, anomalib's ``synthetic``, uses no test
            image (``same_as_test`` or ``from_test`` would fit thresholds on test images). Defaults to
            ``ValSplitMode.SYNTHETIC``.
        val_split_ratio: Fraction of data used for validation. Defaults to ``0.5``.
        seed: Seed of the subset splits (not of the transforms). Defaults to ``None``.

    Example:
        >>> from anomalib_surface.data.surface_demo import make_surface_demo
        >>> root = make_surface_demo("./datasets/SurfaceDemo", categories="brick", image_size=64)  # doctest: +SKIP
        >>> datamodule = MadRto(root=root, category="brick", max_angle=30)  # doctest: +SKIP
    """

    def __init__(
        self,
        root: Path | str | None = "./datasets/MVTecAD",
        category: str = "bottle",
        cache_root: Path | str | None = None,
        max_angle: float = 15.0,
        crop_scale: float = 1.0,
        max_shift: float = 0.1,
        padding_mode: str = "reflection",
        rto_seed: int = 0,
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
            root=root,
            category=category,
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
        self.settings = RtoSettings(max_angle, crop_scale, padding_mode, rto_seed, max_shift)
        self.cache_root = check_dataset_path(cache_root, "cache_root") if cache_root is not None else None
        self.rto_root: Path | None = None

    def prepare_data(self) -> None:
        """Get the source category (downloading MVTec AD if it is one of its categories) and build the variant."""
        if not (self.root / self.category).is_dir():
            if self.category not in MVTEC_CATEGORIES:
                scan_mvtec_category(self.root, self.category)  # raises the missing-category error
            try:
                super().prepare_data()
            except OSError as error:
                msg = (
                    f"'{self.root / self.category}' does not exist and MVTec AD could not be downloaded ({error}); "
                    "pass root=<a local folder in the MVTec AD layout>."
                )
                raise FileNotFoundError(msg) from error
        self.rto_root = make_mad_rto(self.root, self.category, self.cache_root, **dataclasses.asdict(self.settings))

    def _setup(self, _stage: str | None = None) -> None:
        """Read the train and test splits from the variant, building it first when needed."""
        if self.rto_root is None:
            self.prepare_data()
        self.train_data = MVTecLayoutDataset(split=Split.TRAIN, root=self.rto_root, category=self.category)
        self.test_data = MVTecLayoutDataset(split=Split.TEST, root=self.rto_root, category=self.category)

