"""SurfaceDemo: the embedded default dataset, generated offline from scikit-image's texture photographs.

Nothing is downloaded. Each category is one real 512x512 grayscale photograph shipped with
scikit-image (:func:`skimage.data.brick`, :func:`~skimage.data.grass`, :func:`~skimage.data.gravel`),
given a mild per-category tint so that the images are RGB. Every image is a random square crop of
the photograph (random flip, 90 degree rotation and mild brightness jitter), resized to
``image_size``. Training crops come from the **top half** of the photograph (rows 0-255) and test
crops from the **bottom half** (rows 256-511), so no test crop shares pixels with a training crop
of its category.

Test images carry one generated defect each, stored in the MVTec folder named after its kind:

- ``scratch``: a thin curved bright or dark line with tapered ends;
- ``stain``: a soft-edged darker, coloured blob;
- ``foreign_material``: a recoloured patch of another category's texture in an irregular shape;
- ``missing_material``: a hole, i.e. a dark irregular region shaded along a light direction;
- ``low_contrast``: a soft blob whose intensity differs by only 6-12 grey levels.

Masks are exact. A defect is first rendered in floating point on top of the saved (uint8)
defect-free crop; a pixel belongs to the mask iff the rendered change is at least
:data:`MASK_THRESHOLD` grey levels (of 255) in some channel, and changes below that are discarded.
Hence the saved defect image differs from its defect-free crop exactly inside the mask, by at least
:data:`MASK_THRESHOLD` levels in some channel at every mask pixel. :func:`generate_surface_samples`
yields each image together with its defect-free crop so that this can be checked.

:func:`make_surface_demo` materialises the MVTec AD layout read by
:class:`~anomalib.data.datasets.image.mvtecad.MVTecADDataset`::

    <root>/<category>/
    ├── train/good/000.png ...
    ├── test/good/000.png ...
    ├── test/<defect>/000.png ...
    ├── ground_truth/<defect>/000_mask.png ...
    └── surface_demo.json        (generation settings)

Each category is built in a temporary sibling folder and renamed into place, so an interrupted build
leaves no partial dataset; an existing category folder whose manifest matches the settings is reused.
The same settings produce byte-identical files.

Example:
    >>> from anomalib_surface.data import SurfaceDemo
    >>> datamodule = SurfaceDemo(category="gravel", image_size=64, num_train=8)
    >>> datamodule.setup()
    >>> next(iter(datamodule.train_dataloader())).image.shape
    torch.Size([8, 3, 64, 64])
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import shutil
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import platformdirs
from anomalib.data.datamodules.base.image import AnomalibDataModule
from anomalib.data.utils import Split, TestSplitMode, ValSplitMode
from PIL import Image
from scipy import ndimage
from skimage import data as skimage_data
from skimage.transform import resize
from torchvision.transforms.v2 import Transform

from anomalib_surface.components.checks import require_int
from anomalib_surface.data.checked_dataset import MVTecLayoutDataset

__all__ = [
    "CATEGORIES",
    "DEFECT_TYPES",
    "MANIFEST_NAME",
    "MASK_THRESHOLD",
    "MIN_IMAGE_SIZE",
    "SurfaceDemo",
    "SurfaceDemoSettings",
    "SurfaceSample",
    "apply_defect",
    "default_surface_demo_root",
    "generate_surface_samples",
    "make_surface_demo",
]

logger = logging.getLogger(__name__)

CATEGORIES = ("brick", "grass", "gravel")
DEFECT_TYPES = ("scratch", "stain", "foreign_material", "missing_material", "low_contrast")
MASK_THRESHOLD = 2
"""Smallest change, in grey levels of 255 in any channel, that a pixel needs to be in a defect mask."""
MIN_IMAGE_SIZE = 32
MANIFEST_NAME = "surface_demo.json"
GENERATOR_VERSION = 1
"""Bumped whenever the generated pixels change, so that stale cached datasets are rebuilt."""

_TINTS = {"brick": (1.10, 0.93, 0.82), "grass": (0.86, 1.06, 0.78), "gravel": (1.03, 1.00, 0.95)}
_SPLIT_ROWS = {"train": slice(0, 256), "test": slice(256, 512)}
_CROP_SIDE = (192, 240)
_BRIGHTNESS_JITTER = 0.08
_MIN_DEFECT_FRACTION = 0.002
_MAX_DEFECT_ATTEMPTS = 20
_STAIN_COLOURS = ((0.62, 0.50, 0.38), (0.55, 0.55, 0.60), (0.72, 0.66, 0.45))
_FOREIGN_COLOURS = ((1.30, 1.25, 1.10), (0.60, 0.75, 1.25), (1.25, 1.05, 0.50), (0.45, 0.45, 0.45))

DefectRenderer = Callable[[np.ndarray, np.random.Generator], np.ndarray]


@dataclasses.dataclass(frozen=True)
class SurfaceDemoSettings:
    """Generation settings of one SurfaceDemo dataset; validated on construction.

    Args:
        image_size (int): Side of the square generated images, at least ``MIN_IMAGE_SIZE``.
        num_train (int): Defect-free training images per category.
        num_test_good (int): Defect-free test images per category.
        num_test_defect_per_type (int): Test images per defect type and category.
        generation_seed (int): Non-negative seed of the generator (not the split seed).
    """

    image_size: int = 128
    num_train: int = 40
    num_test_good: int = 10
    num_test_defect_per_type: int = 4
    generation_seed: int = 0

    def __post_init__(self) -> None:
        minimums = {"image_size": MIN_IMAGE_SIZE, "generation_seed": 0}
        for field in dataclasses.fields(self):
            value = require_int(field.name, getattr(self, field.name), minimums.get(field.name, 1))
            # Stored as plain ints so that the manifest is JSON even when numpy integers are passed.
            object.__setattr__(self, field.name, value)

    def manifest(self, category: str) -> dict[str, int | str]:
        """Content of the ``surface_demo.json`` written next to a generated category."""
        return {"category": category, "generator_version": GENERATOR_VERSION, **dataclasses.asdict(self)}

    @property
    def digest(self) -> str:
        """Short hash of the settings, naming the default cache folder."""
        text = json.dumps(self.manifest(""), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def plan(self) -> Iterator[tuple[str, str, int]]:
        """``(split, label, count)`` of every image folder, ``label`` being ``"good"`` or a defect type."""
        yield "train", "good", self.num_train
        yield "test", "good", self.num_test_good
        for defect in DEFECT_TYPES:
            yield "test", defect, self.num_test_defect_per_type


@dataclasses.dataclass(frozen=True)
class SurfaceSample:
    """One generated image.

    Attributes:
        split (str): ``"train"`` or ``"test"``.
        label (str): ``"good"`` or one of :data:`DEFECT_TYPES`.
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


def _check_category(category: object) -> str:
    if category not in CATEGORIES:
        msg = f"Unknown SurfaceDemo category {category!r}; expected one of {', '.join(CATEGORIES)}"
        raise ValueError(msg)
    return str(category)


def _square_side(image_size: int | Sequence[int]) -> int:
    """``image_size`` as one side; anomalib's ``get_datamodule`` passes it as an ``(H, W)`` pair."""
    if isinstance(image_size, str) or not isinstance(image_size, Sequence):
        return image_size
    if len(image_size) == 2 and image_size[0] == image_size[1]:
        return image_size[0]
    msg = f"image_size must be an int or a square (size, size) pair, got {image_size!r}"
    raise ValueError(msg)


def default_surface_demo_root(settings: SurfaceDemoSettings) -> Path:
    """Per-settings cache folder, so that datasets of different sizes or counts never collide."""
    return Path(platformdirs.user_cache_dir("anomalib_surface")) / "surface_demo" / settings.digest


@functools.cache
def _photo(category: str) -> np.ndarray:
    """Tinted photograph of ``category``: read-only ``(512, 512, 3)`` float64 in ``[0, 255]``."""
    gray = getattr(skimage_data, category)().astype(np.float64)
    photo = np.clip(gray[..., None] * np.asarray(_TINTS[category]), 0, 255)
    photo.setflags(write=False)
    return photo


def _quantise(image: np.ndarray) -> np.ndarray:
    """Round half up to uint8, so that rounding commutes with adding whole grey levels."""
    return np.floor(np.clip(image, 0, 255) + 0.5).astype(np.uint8)


def _random_crop(region: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Random square crop of ``region`` (``(H, W, 3)`` float), flipped, rotated, resized and jittered.

    Returns:
        np.ndarray: ``(size, size, 3)`` uint8 image.
    """
    side = int(rng.integers(_CROP_SIDE[0], _CROP_SIDE[1] + 1))
    top = int(rng.integers(0, region.shape[0] - side + 1))
    left = int(rng.integers(0, region.shape[1] - side + 1))
    crop = region[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.rot90(crop, k=int(rng.integers(4)))
    crop = resize(crop, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return _quantise(crop * rng.uniform(1 - _BRIGHTNESS_JITTER, 1 + _BRIGHTNESS_JITTER))


def _blob_alpha(size: int, rng: np.random.Generator, radius: float, edge: float) -> tuple[np.ndarray, np.ndarray]:
    """Irregular blob: a randomly placed, stretched circle with a wobbly outline and a smooth edge.

    Args:
        size (int): Image side.
        rng (np.random.Generator): Random generator.
        radius (float): Mean radius in pixels.
        edge (float): Width of the smoothstep ramp from 1 to 0 across the outline, in pixels.

    Returns:
        tuple: ``(H, W)`` alpha in ``[0, 1]`` and the ``(2,)`` centre ``(y, x)`` in pixels.
    """
    centre = rng.uniform(0.25, 0.75, 2) * size
    yy, xx = np.mgrid[:size, :size] + 0.5
    dy, dx = yy - centre[0], xx - centre[1]
    theta = rng.uniform(0, np.pi)
    along = (dx * np.cos(theta) + dy * np.sin(theta)) * rng.uniform(0.7, 1.0)
    across = dy * np.cos(theta) - dx * np.sin(theta)
    distance, angle = np.hypot(along, across), np.arctan2(across, along)
    wobble = sum(rng.uniform(0, 0.12) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    ramp = np.clip((radius * (1 + wobble) - distance) / edge + 0.5, 0, 1)
    return ramp * ramp * (3 - 2 * ramp), centre


def _scratch(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thin curved bright or dark line (quadratic Bezier) with tapered ends."""
    size = clean.shape[0]
    start = rng.uniform(0.15, 0.85, 2) * size
    heading = rng.uniform(0, 2 * np.pi)
    length = rng.uniform(0.3, 0.6) * size
    end = start + length * np.array([np.sin(heading), np.cos(heading)])
    bend = (start + end) / 2 + rng.uniform(-0.3, 0.3) * length * np.array([np.cos(heading), -np.sin(heading)])
    t = np.linspace(0, 1, 4 * size)[:, None]
    points = (1 - t) ** 2 * start + 2 * t * (1 - t) * bend + t**2 * end
    pixels = np.floor(points).astype(int)
    inside = ((pixels >= 0) & (pixels < size)).all(axis=1)
    rows, cols = pixels[inside].T
    on_curve = np.zeros((size, size), dtype=bool)
    position = np.zeros((size, size))
    on_curve[rows, cols] = True
    position[rows, cols] = t[inside, 0]
    distance, (near_rows, near_cols) = ndimage.distance_transform_edt(~on_curve, return_indices=True)
    half_width = rng.uniform(0.3, 0.8) * max(1.0, size / 96)
    taper = np.sin(np.pi * position[near_rows, near_cols]) ** 0.5
    alpha = (np.clip(half_width + 0.5 - distance, 0, 1) * taper * rng.uniform(0.6, 0.9))[..., None]
    target = clean + 0.7 * (255 - clean) if rng.random() < 0.5 else 0.3 * clean
    return clean + alpha * (target - clean)


def _stain(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft-edged darker, coloured blob (rust, oil or dirt)."""
    size = clean.shape[0]
    radius = rng.uniform(0.08, 0.18) * size
    alpha = _blob_alpha(size, rng, radius, edge=0.6 * radius)[0][..., None]
    colour = np.asarray(_STAIN_COLOURS[rng.integers(len(_STAIN_COLOURS))]) * rng.uniform(0.85, 1.05)
    return clean * (1 - alpha * (1 - colour))


def _foreign_material(clean: np.ndarray, rng: np.random.Generator, sources: Sequence[str]) -> np.ndarray:
    """Recoloured patch of another texture (one of ``sources``) pasted in an irregular shape."""
    size = clean.shape[0]
    alpha = _blob_alpha(size, rng, rng.uniform(0.08, 0.16) * size, edge=1.5)[0][..., None]
    source = sources[rng.integers(len(sources))]
    patch = _random_crop(_photo(source), size, rng).astype(np.float64)
    colour = np.asarray(_FOREIGN_COLOURS[rng.integers(len(_FOREIGN_COLOURS))])
    return clean * (1 - alpha) + patch * colour * alpha


def _missing_material(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hole: dark irregular region, lighter on the side facing a random light direction."""
    size = clean.shape[0]
    radius = rng.uniform(0.07, 0.14) * size
    alpha, centre = _blob_alpha(size, rng, radius, edge=1.5)
    light = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[:size, :size] + 0.5
    slope = ((yy - centre[0]) * np.sin(light) + (xx - centre[1]) * np.cos(light)) / radius
    shading = rng.uniform(0.12, 0.22) * (1 + 0.6 * np.clip(slope, -1, 1))
    return clean * (1 - alpha[..., None] * (1 - shading[..., None]))


def _low_contrast(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft blob that is only 6-12 grey levels brighter or darker."""
    size = clean.shape[0]
    radius = rng.uniform(0.08, 0.16) * size
    alpha = _blob_alpha(size, rng, radius, edge=0.5 * radius)[0][..., None]
    return clean + rng.choice((-1, 1)) * rng.uniform(6, 12) * alpha


def _defect_renderers(category: str) -> dict[str, DefectRenderer]:
    """Renderer of each defect type: ``(clean (H, W, 3) float, rng) -> rendered (H, W, 3) float``."""
    others = tuple(other for other in CATEGORIES if other != category)
    return {
        "scratch": _scratch,
        "stain": _stain,
        "foreign_material": functools.partial(_foreign_material, sources=others),
        "missing_material": _missing_material,
        "low_contrast": _low_contrast,
    }


def apply_defect(clean: np.ndarray, rendered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantise a rendered defect and derive its exact mask.

    Args:
        clean (np.ndarray): ``(H, W, 3)`` uint8 defect-free image.
        rendered (np.ndarray): ``(H, W, 3)`` float rendering of the defect on ``clean``, in grey levels.

    Returns:
        tuple: ``(H, W, 3)`` uint8 image equal to ``clean`` outside the mask, and the ``(H, W)`` bool mask
        of pixels whose change reaches :data:`MASK_THRESHOLD` in some channel.
    """
    change = np.clip(rendered, 0, 255) - clean
    mask = np.abs(change).max(axis=-1) >= MASK_THRESHOLD
    # ``clean`` is integral and rounding is half-up, so masked pixels move by >= MASK_THRESHOLD levels.
    return np.where(mask[..., None], _quantise(rendered), clean), mask


def _render_defect(
    clean: np.ndarray,
    renderer: DefectRenderer,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw defects until one covers at least ``_MIN_DEFECT_FRACTION`` of the image; see :func:`apply_defect`."""
    min_area = max(4, _MIN_DEFECT_FRACTION * clean.shape[0] * clean.shape[1])
    for _ in range(_MAX_DEFECT_ATTEMPTS):
        image, mask = apply_defect(clean, renderer(clean.astype(np.float64), rng))
        if mask.sum() >= min_area:
            return image, mask
    msg = f"Could not draw a visible defect in {_MAX_DEFECT_ATTEMPTS} attempts"
    raise RuntimeError(msg)


def _sample_rng(seed: int, category: str, split: str, label: str, index: int) -> np.random.Generator:
    """Independent generator per image, so that changing one count leaves the other images unchanged."""
    return np.random.default_rng([seed, zlib.crc32(f"{category}/{split}/{label}/{index}".encode())])


def generate_surface_samples(category: str, settings: SurfaceDemoSettings) -> Iterator[SurfaceSample]:
    """Generate every image of one category, in the order of :meth:`SurfaceDemoSettings.plan`.

    Args:
        category (str): One of :data:`CATEGORIES`.
        settings (SurfaceDemoSettings): Generation settings.

    Yields:
        SurfaceSample: Image, defect-free reference and mask.
    """
    category = _check_category(category)
    renderers = _defect_renderers(category)
    for split, label, count in settings.plan():
        region = _photo(category)[_SPLIT_ROWS[split]]
        width = max(3, len(str(count - 1)))
        for index in range(count):
            rng = _sample_rng(settings.generation_seed, category, split, label, index)
            clean = _random_crop(region, settings.image_size, rng)
            image, mask = (clean, None) if label == "good" else _render_defect(clean, renderers[label], rng)
            yield SurfaceSample(split, label, f"{index:0{width}d}", image, clean, mask)


def _save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def _read_manifest(category_dir: Path) -> dict | None:
    try:
        return json.loads((category_dir / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None


def _write_category(directory: Path, category: str, settings: SurfaceDemoSettings) -> None:
    """Write one category in the MVTec AD layout, manifest last."""
    for sample in generate_surface_samples(category, settings):
        _save_png(directory / sample.split / sample.label / f"{sample.name}.png", sample.image)
        if sample.mask is not None:
            mask_path = directory / "ground_truth" / sample.label / f"{sample.name}_mask.png"
            _save_png(mask_path, sample.mask.astype(np.uint8) * 255)
    manifest = json.dumps(settings.manifest(category), indent=2, sort_keys=True)
    (directory / MANIFEST_NAME).write_text(manifest + "\n")


def _build_category(category_dir: Path, category: str, settings: SurfaceDemoSettings) -> None:
    """Build ``category_dir`` unless it already holds these settings; replace it if it holds others.

    Raises:
        FileExistsError: If ``category_dir`` exists but was not generated by this module.
    """
    manifest = settings.manifest(category)
    existing = _read_manifest(category_dir)
    if existing == manifest:
        logger.info("Reusing SurfaceDemo data in %s", category_dir)
        return
    if category_dir.exists() and existing is None:
        msg = f"{category_dir} exists but holds no {MANIFEST_NAME}; refusing to overwrite it, pass another root"
        raise FileExistsError(msg)
    logger.info("Generating SurfaceDemo category %r in %s", category, category_dir)
    category_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = category_dir.with_name(f".{category}.tmp-{uuid.uuid4().hex}")
    stale = category_dir.with_name(f".{category}.stale-{uuid.uuid4().hex}")
    try:
        _write_category(staging, category, settings)
        if existing is not None:
            category_dir.rename(stale)
        try:
            staging.rename(category_dir)
        except OSError:
            # Another process finished the same build first: fine if it holds these settings.
            if _read_manifest(category_dir) != manifest:
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)


def make_surface_demo(
    root: Path | str | None = None,
    categories: str | Sequence[str] = CATEGORIES,
    image_size: int = 128,
    num_train: int = 40,
    num_test_good: int = 10,
    num_test_defect_per_type: int = 4,
    generation_seed: int = 0,
) -> Path:
    """Generate the SurfaceDemo dataset folder (MVTec AD layout) unless it is already there.

    Args:
        root (Path | str | None): Dataset root; ``<root>/<category>`` is written. ``None`` uses
            :func:`default_surface_demo_root`. Defaults to ``None``.
        categories (str | Sequence[str]): Categories to build. Defaults to all of :data:`CATEGORIES`.
        image_size (int): Side of the square images. Defaults to ``128``.
        num_train (int): Training images per category. Defaults to ``40``.
        num_test_good (int): Defect-free test images per category. Defaults to ``10``.
        num_test_defect_per_type (int): Test images per defect type and category. Defaults to ``4``.
        generation_seed (int): Seed of the generator. Defaults to ``0``.

    Returns:
        Path: The dataset root.

    Example:
        >>> root = make_surface_demo("./datasets/SurfaceDemo", categories="brick", image_size=64, num_train=8)
        >>> sorted(p.name for p in (root / "brick" / "test").iterdir())
        ['foreign_material', 'good', 'low_contrast', 'missing_material', 'scratch', 'stain']
    """
    settings = SurfaceDemoSettings(image_size, num_train, num_test_good, num_test_defect_per_type, generation_seed)
    categories = [categories] if isinstance(categories, str) else list(categories)
    for category in categories:
        _check_category(category)
    if not categories:
        msg = f"categories must name at least one of {', '.join(CATEGORIES)}"
        raise ValueError(msg)
    root = Path(root) if root is not None else default_surface_demo_root(settings)
    for category in categories:
        _build_category(root / category, category, settings)
    return root


class SurfaceDemo(AnomalibDataModule):
    """SurfaceDemo datamodule: texture surfaces with generated, exactly masked defects.

    The data is generated on first use (see the module docstring) and cached under ``root``.
    :meth:`setup` generates it too when :meth:`prepare_data` was not called, so the datamodule also
    works outside a Trainer.

    Args:
        root (Path | str | None): Dataset root holding ``<category>/`` in the MVTec AD layout. ``None``
            uses a cache folder named after the generation settings. Defaults to ``None``.
        category (str): One of ``"brick"``, ``"grass"``, ``"gravel"``. Defaults to ``"brick"``.
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
        val_split_mode (ValSplitMode | str): How the validation set is made.
            Defaults to ``ValSplitMode.SAME_AS_TEST``.
        val_split_ratio (float): Fraction of data used for validation. Defaults to ``0.5``.
        seed (int | None): Seed of the subset splits. Defaults to ``None``.
        image_size (int | tuple[int, int]): Side of the generated square images, at least 32; a square
            ``(size, size)`` pair is accepted too. Defaults to ``128``.
        num_train (int): Training images. Defaults to ``40``.
        num_test_good (int): Defect-free test images. Defaults to ``10``.
        num_test_defect_per_type (int): Test images per defect type. Defaults to ``4``.
        generation_seed (int): Seed of the image generator. Defaults to ``0``.

    Example:
        >>> datamodule = SurfaceDemo(category="grass", image_size=64, eval_batch_size=4, num_workers=0)
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
        val_split_mode: ValSplitMode | str = ValSplitMode.SAME_AS_TEST,
        val_split_ratio: float = 0.5,
        seed: int | None = None,
        image_size: int | tuple[int, int] = 128,
        num_train: int = 40,
        num_test_good: int = 10,
        num_test_defect_per_type: int = 4,
        generation_seed: int = 0,
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
        )
        self.category = _check_category(category)
        self.root = Path(root) if root is not None else default_surface_demo_root(self.settings)

    def prepare_data(self) -> None:
        """Generate ``<root>/<category>`` unless it already holds data made with the same settings."""
        make_surface_demo(self.root, self.category, **dataclasses.asdict(self.settings))

    def _setup(self, _stage: str | None = None) -> None:
        """Create the train and test datasets from the generated folder, generating it if needed."""
        self.prepare_data()
        self.train_data = MVTecLayoutDataset(split=Split.TRAIN, root=self.root, category=self.category)
        self.test_data = MVTecLayoutDataset(split=Split.TEST, root=self.root, category=self.category)
