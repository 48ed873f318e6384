"""SurfaceDemo: the embedded default dataset, generated offline from photographs shipped with scikit-image.

Nothing is downloaded. Three kinds of category (:mod:`~anomalib_surface.data.surface_categories`):
stochastic textures (``brick``, ``grass``, ``gravel``), periodic patterns (``cloth/woven``,
``cloth/plaid``, ``cloth/motif``, ``leather/pebble``, ``leather/quilted``, ``leather/scales``) and
aligned objects (``washer``, ``nut``, ``board``). Each test and validation defect image carries one
defect with an exact mask (:mod:`~anomalib_surface.data.surface_defects`), stored in the folder named
after its kind.

:func:`make_surface_demo` materialises the MVTec AD layout read by
:class:`~anomalib.data.datasets.image.mvtecad.MVTecADDataset` (and, for the patterns, the
``<material>/<pattern>`` layout read by :class:`~anomalib_surface.data.TextureFolder`)::

    <root>/<category>/
    ├── train/good/000.png ...
    ├── test/good/000.png ...
    ├── test/<defect>/000.png ...
    ├── ground_truth/<defect>/000_mask.png ...
    └── surface_demo.json        (generation settings)
    <root>/validation/<category>/  the validation set: test/good, test/<defect>, ground_truth/<defect>

The validation set is generated like the test set but from other random streams (other defect
instances) and from the photographs' training half, so thresholds and normalisation never see a test
image. Both folders are built atomically and reused while their manifest matches
(:func:`~anomalib_surface.data.cached_build.build_cached`); the same settings give byte-identical files.

Example:
    >>> from anomalib_surface.data import SurfaceDemo
    >>> datamodule = SurfaceDemo(category="cloth/woven", image_size=64, num_train=8)
    >>> datamodule.setup()
    >>> next(iter(datamodule.train_dataloader())).image.shape
    torch.Size([8, 3, 64, 64])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import platformdirs
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.utils import Split, TestSplitMode, ValSplitMode
from PIL import Image
from torchvision.transforms.v2 import Transform

from anomalib_surface.components.checks import require_int
from anomalib_surface.data.cached_build import build_cached, check_dataset_path
from anomalib_surface.data.checked_dataset import MVTecLayoutDataset
from anomalib_surface.data.surface_categories import CATEGORIES, KINDS, category_of
from anomalib_surface.data.surface_defects import MASK_THRESHOLD, quantise, render_defect

__all__ = [
    "CATEGORIES",
    "KINDS",
    "MANIFEST_NAME",
    "MASK_THRESHOLD",
    "MIN_IMAGE_SIZE",
    "VALIDATION_FOLDER",
    "SurfaceDemo",
    "SurfaceDemoSettings",
    "SurfaceSample",
    "default_surface_demo_root",
    "generate_surface_samples",
    "make_surface_demo",
]

MIN_IMAGE_SIZE = 32
MANIFEST_NAME = "surface_demo.json"
VALIDATION_FOLDER = "validation"
"""Folder under the root holding each category's generated validation set."""
GENERATOR_VERSION = 2
"""Bumped whenever the generated pixels change, so that stale cached datasets are rebuilt."""


@dataclasses.dataclass(frozen=True)
class SurfaceDemoSettings:
    """Generation settings of one SurfaceDemo dataset; validated on construction.

    Args:
        image_size (int): Side of the square generated images, at least ``MIN_IMAGE_SIZE``.
        num_train (int): Defect-free training images per category.
        num_test_good (int): Defect-free test images per category.
        num_test_defect_per_type (int): Test images per defect type and category.
        generation_seed (int): Non-negative seed of the generator (not the split seed).
        num_val_good (int | None): Defect-free validation images; ``None``: a third of ``num_test_good``.
        num_val_defect_per_type (int | None): Validation images per defect type; ``None``: a third of
            ``num_test_defect_per_type``.
    """

    image_size: int = 128
    num_train: int = 60
    num_test_good: int = 60
    num_test_defect_per_type: int = 12
    generation_seed: int = 0
    num_val_good: int | None = None
    num_val_defect_per_type: int | None = None

    def __post_init__(self) -> None:
        derived = {
            "num_val_good": max(1, require_int("num_test_good", self.num_test_good, 1) // 3),
            "num_val_defect_per_type": max(1, require_int("num_test_defect_per_type", self.num_test_defect_per_type, 1) // 3),
        }
        minimums = {"image_size": MIN_IMAGE_SIZE, "generation_seed": 0}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            value = derived[field.name] if value is None else value
            # Stored as plain ints so that the manifest is JSON even when numpy integers are passed.
            object.__setattr__(self, field.name, require_int(field.name, value, minimums.get(field.name, 1)))

    def manifest(self, category: str, split_set: str = "main") -> dict[str, int | str]:
        """Content of the ``surface_demo.json`` written in a generated category (``split_set`` main or validation)."""
        return {
            "category": category,
            "generator_version": GENERATOR_VERSION,
            "split_set": split_set,
            **dataclasses.asdict(self),
        }

    @property
    def digest(self) -> str:
        """Short hash of the settings, naming the default cache folder."""
        text = json.dumps(self.manifest(""), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def plan(self, category: str, split_set: str = "main") -> Iterator[tuple[str, str, int]]:
        """``(split, label, count)`` of every image folder; ``label`` is ``"good"`` or a defect type.

        ``split_set="main"`` is the training and test data, ``"validation"`` the validation data (split ``val``).
        """
        defects = category_of(category).defect_types
        if split_set == "validation":
            yield "val", "good", self.num_val_good
            for defect in defects:
                yield "val", defect, self.num_val_defect_per_type
            return
        yield "train", "good", self.num_train
        yield "test", "good", self.num_test_good
        for defect in defects:
            yield "test", defect, self.num_test_defect_per_type


@dataclasses.dataclass(frozen=True)
class SurfaceSample:
    """One generated image.

    Attributes:
        split (str): ``"train"``, ``"val"`` or ``"test"``.
        label (str): ``"good"`` or one of the category's defect types.
        name (str): File stem, e.g. ``"003"``.
        image (np.ndarray): ``(H, W, 3)`` uint8 image as saved.
        clean (np.ndarray): ``(H, W, 3)`` uint8 defect-free version of ``image``.
        mask (np.ndarray | None): ``(H, W)`` bool defect mask, ``None`` for good images.
    """

    split: str
    label: str
    name: str
    image: np.ndarray
    clean: np.ndarray
    mask: np.ndarray | None


def _square_side(image_size: int | Sequence[int]) -> int:
    """``image_size`` as one side; anomalib's ``get_datamodule`` passes it as an ``(H, W)`` pair."""
    if isinstance(image_size, str) or not isinstance(image_size, Sequence):
        return image_size
    if len(image_size) == 2 and image_size[0] == image_size[1]:  # noqa: PLR2004
        return image_size[0]
    msg = f"image_size must be an int or a square (size, size) pair, got {image_size!r}"
    raise ValueError(msg)


def default_surface_demo_root(settings: SurfaceDemoSettings) -> Path:
    """Per-settings cache folder, so that datasets of different sizes or counts never collide."""
    return Path(platformdirs.user_cache_dir("anomalib_surface")) / "surface_demo" / settings.digest


def _sample_rng(seed: int, category: str, split: str, label: str, index: int) -> np.random.Generator:
    """Independent generator per image, so that changing one count leaves the other images unchanged."""
    return np.random.default_rng([seed, zlib.crc32(f"{category}/{split}/{label}/{index}".encode())])


def generate_surface_samples(
    category: str,
    settings: SurfaceDemoSettings,
    split_set: str = "main",
) -> Iterator[SurfaceSample]:
    """Generate every image of one category, in the order of :meth:`SurfaceDemoSettings.plan`.

    Args:
        category (str): One of :data:`CATEGORIES`.
        settings (SurfaceDemoSettings): Generation settings.
        split_set (str): ``"main"`` (train and test) or ``"validation"``.

    Yields:
        SurfaceSample: Image, defect-free reference and mask.
    """
    definition = category_of(category)
    for split, label, count in settings.plan(category, split_set):
        width = max(3, len(str(count - 1)))
        for index in range(count):
            rng = _sample_rng(settings.generation_seed, category, split, label, index)
            rendered, scene = definition.render(split, settings.image_size, rng)
            clean = quantise(rendered)
            if label == "good":
                image, mask = clean, None
            else:
                image, mask = render_defect(clean, definition.renderer(label, scene), rng)
            yield SurfaceSample(split, label, f"{index:0{width}d}", image, clean, mask)


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG", compress_level=1)  # fast; still lossless and deterministic


def _write_category(directory: Path, category: str, settings: SurfaceDemoSettings, split_set: str) -> None:
    """Write one category's ``split_set`` in the MVTec AD layout (validation images under ``test/``)."""
    for sample in generate_surface_samples(category, settings, split_set):
        split = "test" if sample.split == "val" else sample.split
        _save_png(directory / split / sample.label / f"{sample.name}.png", sample.image)
        if sample.mask is not None:
            mask_path = directory / "ground_truth" / sample.label / f"{sample.name}_mask.png"
            _save_png(mask_path, sample.mask.astype(np.uint8) * 255)


def make_surface_demo(
    root: Path | str | None = None,
    categories: str | Sequence[str] = tuple(CATEGORIES),
    image_size: int = 128,
    num_train: int = 60,
    num_test_good: int = 60,
    num_test_defect_per_type: int = 12,
    generation_seed: int = 0,
    num_val_good: int | None = None,
    num_val_defect_per_type: int | None = None,
) -> Path:
    """Generate the SurfaceDemo dataset folder (MVTec AD layout) and its validation set unless already there.

    Args:
        root (Path | str | None): Dataset root; ``<root>/<category>`` and ``<root>/validation/<category>``
            are written. ``None`` uses :func:`default_surface_demo_root`. Defaults to ``None``.
        categories (str | Sequence[str]): Categories to build. Defaults to all of :data:`CATEGORIES`.
        image_size (int): Side of the square images. Defaults to ``128``.
        num_train (int): Training images per category. Defaults to ``60``.
        num_test_good (int): Defect-free test images per category. Defaults to ``60``.
        num_test_defect_per_type (int): Test images per defect type and category. Defaults to ``12``.
        generation_seed (int): Seed of the generator. Defaults to ``0``.
        num_val_good (int | None): Defect-free validation images; ``None``: ``num_test_good // 3``.
        num_val_defect_per_type (int | None): Validation images per defect type; ``None``:
            ``num_test_defect_per_type // 3``.

    Returns:
        Path: The dataset root.

    Raises:
        ValueError: An unknown category, or a root path anomalib cannot read (checked before writing).
        FileExistsError: A category folder exists that this function did not write.

    Example:
        >>> root = make_surface_demo("./datasets/SurfaceDemo", categories="brick", image_size=64, num_train=8)
        >>> sorted(p.name for p in (root / "brick" / "test").iterdir())
        ['foreign_material', 'good', 'low_contrast', 'missing_material', 'scratch', 'stain']
    """
    settings = SurfaceDemoSettings(
        image_size, num_train, num_test_good, num_test_defect_per_type, generation_seed, num_val_good, num_val_defect_per_type,
    )
    categories = [categories] if isinstance(categories, str) else list(categories)
    for category in categories:
        category_of(category)
    if not categories:
        msg = f"categories must name at least one of {', '.join(CATEGORIES)}"
        raise ValueError(msg)
    root = check_dataset_path(root if root is not None else default_surface_demo_root(settings), "root")
    for category in categories:
        for split_set, folder in (("main", root / category), ("validation", root / VALIDATION_FOLDER / category)):
            build_cached(
                folder,
                settings.manifest(category, split_set),
                MANIFEST_NAME,
                lambda staging, category=category, split_set=split_set: _write_category(staging, category, settings, split_set),
            )
    return root


class SurfaceDemo(AnomalibDataModule):
    """SurfaceDemo datamodule: textures, periodic patterns and aligned objects with exactly masked defects.

    The data is generated on first use (see the module docstring) and cached under ``root``.
    :meth:`setup` generates it too when :meth:`prepare_data` was not called, so the datamodule also
    works outside a Trainer. By default (``val_split_mode="from_dir"``) validation reads the generated
    validation set (normal and defective images that are not test images), so thresholds,
    normalisation and calibrated post-processing never see a test image.

    Args:
        root (Path | str | None): Dataset root holding ``<category>/`` in the MVTec AD layout. ``None``
            uses a cache folder named after the generation settings. Defaults to ``None``.
        category (str): One of :data:`CATEGORIES`: ``brick``, ``grass``, ``gravel`` (textures),
            ``cloth/woven``, ``cloth/plaid``, ``cloth/motif``, ``leather/pebble``, ``leather/quilted``,
            ``leather/scales`` (patterns), ``washer``, ``nut``, ``board`` (objects). Defaults to ``"brick"``.
        train_batch_size (int): Training batch size. Defaults to ``32``.
        eval_batch_size (int): Validation and test batch size. Defaults to ``32``.
        num_workers (int): Number of dataloader workers. Defaults to ``8``.
        train_augmentations (Transform | None): Augmentations of the training images. Defaults to ``None``.
        val_augmentations (Transform | None): Augmentations of the validation images. Defaults to ``None``.
        test_augmentations (Transform | None): Augmentations of the test images. Defaults to ``None``.
        augmentations (Transform | None): Augmentations of subsets that have none of their own.
            Defaults to ``None``.
        test_split_mode (TestSplitMode | str): How the test set is made. Defaults to ``TestSplitMode.FROM_DIR``.
        test_split_ratio (float): Fraction of data used for testing. Defaults to ``0.2``.
        val_split_mode (ValSplitMode | str): How the validation set is made: ``from_dir`` reads the
            generated validation set; anomalib's other modes work as usual. Defaults to ``ValSplitMode.FROM_DIR``.
        val_split_ratio (float): Fraction of data used for validation by anomalib's other modes. Defaults to ``0.5``.
        seed (int | None): Seed of the subset splits. Defaults to ``None``.
        image_size (int | tuple[int, int]): Side of the generated square images, at least 32; a square
            ``(size, size)`` pair is accepted too. Defaults to ``128``.
        num_train (int): Training images. Defaults to ``60``.
        num_test_good (int): Defect-free test images. Defaults to ``60``.
        num_test_defect_per_type (int): Test images per defect type (5 types in every category).
            Defaults to ``12``.
        generation_seed (int): Seed of the image generator. Defaults to ``0``.
        num_val_good (int | None): Defect-free validation images; ``None``: ``num_test_good // 3``.
        num_val_defect_per_type (int | None): Validation images per defect type; ``None``:
            ``num_test_defect_per_type // 3``.

    Example:
        >>> datamodule = SurfaceDemo(category="washer", image_size=64, eval_batch_size=4, num_workers=0)
        >>> datamodule.setup()
        >>> batch = next(iter(datamodule.test_dataloader()))
        >>> batch.image.shape, batch.gt_mask.shape
        (torch.Size([4, 3, 64, 64]), torch.Size([4, 64, 64]))
    """

    def __init__(
        self,
        root: Path | str | None = None,
        category: str = "brick",
        train_batch_size: int = 32,
        eval_batch_size: int = 32,
        num_workers: int = 8,
        train_augmentations: Transform | None = None,
        val_augmentations: Transform | None = None,
        test_augmentations: Transform | None = None,
        augmentations: Transform | None = None,
        test_split_mode: TestSplitMode | str = TestSplitMode.FROM_DIR,
        test_split_ratio: float = 0.2,
        val_split_mode: ValSplitMode | str = ValSplitMode.FROM_DIR,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
        image_size: int | tuple[int, int] = 128,
        num_train: int = 60,
        num_test_good: int = 60,
        num_test_defect_per_type: int = 12,
        generation_seed: int = 0,
        num_val_good: int | None = None,
        num_val_defect_per_type: int | None = None,
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
        self.settings = SurfaceDemoSettings(
            _square_side(image_size),
            num_train,
            num_test_good,
            num_test_defect_per_type,
            generation_seed,
            num_val_good,
            num_val_defect_per_type,
        )
        self.category = category_of(category).name
        self.root = check_dataset_path(root if root is not None else default_surface_demo_root(self.settings), "root")

    def prepare_data(self) -> None:
        """Generate ``<root>/<category>`` and its validation set unless they hold data made with the same settings."""
        make_surface_demo(self.root, self.category, **dataclasses.asdict(self.settings))

    def _setup(self, _stage: str | None = None) -> None:
        """Create the train, test and (``from_dir``) validation datasets, generating them if needed."""
        self.prepare_data()
        self.train_data = MVTecLayoutDataset(split=Split.TRAIN, root=self.root, category=self.category)
        self.test_data = MVTecLayoutDataset(split=Split.TEST, root=self.root, category=self.category)
        if self.val_split_mode == ValSplitMode.FROM_DIR:
            self.val_data = MVTecLayoutDataset(split=Split.TEST, root=self.root / VALIDATION_FOLDER, category=self.category)
