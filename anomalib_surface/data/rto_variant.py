"""RTO variant builder: random rotation + crop of every image of an MVTec-layout category, cached.

Lv et al. (CVPR 2023 workshops) call MVTec AD "MAD" and build "MAD-RTO" from its ten object
categories by applying a random rotation and a random crop to train and test images alike, to
simulate parts that are not aligned on a production line. The paper gives no ranges; ours
(rotation ``U(-max_angle, max_angle)``, default 15 degrees; translation ``U(-max_shift, max_shift)``
of the side along x and y, default 0.1; a crop of ``U(crop_scale, 1)`` of the side, default 1 = off)
are our assumption. The default is rigid (rotation + translation): a crop also zooms, and zoom is
outside the three parameters (angle and x/y translation) of the paper's image matching module.

Every image gets its own transform, drawn from ``seed`` and the image's path relative to the
category folder (so it does not depend on which other files exist): a rotation about the image
centre, then a crop whose sides are both ``scale`` of the image's (aspect ratio kept), at a random
position inside the rotated frame, resized back to the original size. Both are one affine warp; the
ground-truth mask of an image goes through the same warp (nearest neighbour), so masks stay aligned.
The variant is written once into a cache folder (``<cache_root>/<category>``; by default a user cache
folder named after the settings and the source folder) by
:func:`~anomalib_surface.data.cached_build.build_cached`, with a manifest ``mad_rto.json`` recording
every file's transform; images and masks are stored as PNG.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

import kornia
import platformdirs
import torch
from torchvision import io
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2 import functional as tvf

from anomalib_surface.data.cached_build import build_cached, check_dataset_path
from anomalib_surface.data.checked_dataset import check_mask_file
from anomalib_surface.io.image_io import list_image_files, read_image, read_mask

__all__ = [
    "MANIFEST_NAME",
    "MVTEC_OBJECT_CATEGORIES",
    "RtoEntry",
    "RtoSettings",
    "RtoTransform",
    "default_mad_rto_root",
    "make_mad_rto",
    "scan_mvtec_category",
]

MVTEC_OBJECT_CATEGORIES = (
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
)
"""The ten MVTec AD object categories that make up the paper's MAD-RTO."""
MANIFEST_NAME = "mad_rto.json"
RTO_VERSION = 3
"""Bumped whenever the generated pixels change, so that stale cached variants are rebuilt."""
PADDING_MODES = ("zeros", "border", "reflection")


@dataclasses.dataclass(frozen=True)
class RtoSettings:
    """Settings of an RTO variant; validated on construction.

    Args:
        max_angle: Largest rotation in degrees, in ``[0, 180]``.
        crop_scale: Smallest crop side as a fraction of the image side, in ``(0, 1]``; ``1`` disables cropping
            (and zoom).
        padding_mode: Content of the corners that the rotation brings in: ``"zeros"`` (black),
            ``"border"`` (edge pixels repeated) or ``"reflection"`` (mirrored image).
        seed: Seed of the per-file transforms.
        max_shift: Largest translation along x and along y as a fraction of the image side, in ``[0, 0.5]``.
    """

    max_angle: float = 15.0
    crop_scale: float = 1.0
    padding_mode: str = "reflection"
    seed: int = 0
    max_shift: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_angle <= 180.0:
            msg = f"max_angle must be in [0, 180] degrees, got {self.max_angle}."
            raise ValueError(msg)
        if not 0.0 < self.crop_scale <= 1.0:
            msg = f"crop_scale must be in (0, 1], got {self.crop_scale}."
            raise ValueError(msg)
        if not 0.0 <= self.max_shift <= 0.5:  # noqa: PLR2004
            msg = f"max_shift must be in [0, 0.5] (a fraction of the image side), got {self.max_shift}."
            raise ValueError(msg)
        if self.padding_mode not in PADDING_MODES:
            msg = f"padding_mode must be one of {PADDING_MODES}, got {self.padding_mode!r}."
            raise ValueError(msg)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            msg = f"seed must be an integer, got {self.seed!r}."
            raise ValueError(msg)


@dataclasses.dataclass(frozen=True)
class RtoTransform:
    """Transform of one image: rotation, then crop, then resize back to the original size, then translation.

    Attributes:
        angle: Rotation in degrees (counter-clockwise as displayed).
        scale: Crop side as a fraction of the image side.
        offset: ``(x, y)`` position of the crop centre in ``[-1, 1]``: ``-1``/``1`` put the crop
            against the left/right (top/bottom) edge of the rotated frame, ``0`` centres it.
        shift: ``(x, y)`` translation of the result as a fraction of the image width and height.
    """

    angle: float
    scale: float
    offset: tuple[float, float]
    shift: tuple[float, float] = (0.0, 0.0)

    @classmethod
    def draw(cls, key: str, settings: RtoSettings) -> RtoTransform:
        """The transform of the file ``key`` (path relative to the category folder), fixed by ``settings.seed``."""
        rng = random.Random(f"{settings.seed}/{key}")  # noqa: S311 - reproducible augmentation, not cryptography
        angle = rng.uniform(-settings.max_angle, settings.max_angle)
        scale = rng.uniform(settings.crop_scale, 1.0)
        offset = (rng.uniform(-1.0, 1.0), rng.uniform(-1.0, 1.0))
        shift = (rng.uniform(-settings.max_shift, settings.max_shift), rng.uniform(-settings.max_shift, settings.max_shift))
        return cls(angle=angle, scale=scale, offset=offset, shift=shift)

    def matrix(self, height: int, width: int) -> torch.Tensor:
        """``[1, 2, 3]`` pixel-space affine matrix (source to destination) for ``kornia`` ``warp_affine``."""
        centre = torch.tensor([[(width - 1) / 2, (height - 1) / 2]])
        rotation = kornia.geometry.transform.get_rotation_matrix2d(
            centre,
            torch.tensor([self.angle]),
            torch.full((1, 2), 1.0 / self.scale),
        )
        # The crop centre sits offset * (1 - scale) / 2 of the frame away from the image centre; moving it
        # to the image centre after the 1/scale zoom shifts the result by -offset * (1 - scale) / (2 * scale).
        size = torch.tensor([width - 1, height - 1], dtype=torch.float32)
        crop_shift = -torch.tensor(self.offset) * (1.0 - self.scale) / (2.0 * self.scale) * size
        rotation[0, :, 2] += crop_shift + torch.tensor(self.shift) * size
        return rotation

    def apply(self, image: torch.Tensor, mode: str = "bilinear", padding_mode: str = "zeros") -> torch.Tensor:
        """Warp a ``[C, H, W]`` uint8 image (``mode="bilinear"``) or mask (``mode="nearest"``); same shape out."""
        height, width = image.shape[-2:]
        warped = kornia.geometry.transform.warp_affine(
            image[None].float(),
            self.matrix(height, width),
            dsize=(height, width),
            mode=mode,
            padding_mode=padding_mode,
            align_corners=True,
        )[0]
        return warped.round().clamp(0, 255).to(torch.uint8)

    def to_json(self) -> dict[str, float | list[float]]:
        """Manifest record of the transform."""
        return {"angle": self.angle, "scale": self.scale, "offset": list(self.offset), "shift": list(self.shift)}


@dataclasses.dataclass(frozen=True)
class RtoEntry:
    """One image of a source category and its mask, as paths relative to the category folder."""

    image: str
    mask: str | None

    @property
    def target(self) -> str:
        """Path of the transformed image in the variant (always PNG)."""
        return str(Path(self.image).with_suffix(".png"))

    @property
    def target_mask(self) -> str | None:
        """Path of the transformed mask in the variant, named ``<stem>_mask.png`` as in MVTec AD."""
        if self.mask is None:
            return None
        image = Path(self.image)
        return str(Path("ground_truth", image.parent.name, f"{image.stem}_mask.png"))


def _find_mask(category_dir: Path, image: Path) -> Path:
    """Ground-truth mask of a defect test image (``<stem>_mask.*`` or ``<stem>.*``)."""
    folder = category_dir / "ground_truth" / image.parent.name
    names = {f"{image.stem}_mask", image.stem}
    candidates = [path for path in list_image_files(folder) if path.stem in names] if folder.is_dir() else []
    if not candidates:
        msg = (
            f"No ground-truth mask for defect image '{image}': expected "
            f"'{folder / (image.stem + '_mask.png')}' (MVTec AD layout)."
        )
        raise FileNotFoundError(msg)
    return candidates[0]


def scan_mvtec_category(root: str | Path, category: str) -> list[RtoEntry]:
    """Every train and test image of ``<root>/<category>`` with its mask, checking the MVTec AD layout.

    Raises:
        FileNotFoundError: If the category folder, ``train/good``, ``test`` or a defect image's mask is missing.
        ValueError: If ``train/good`` or ``test`` holds no image.
    """
    root = Path(root)
    category_dir = root / category
    if not category_dir.is_dir():
        available = sorted(path.name for path in root.iterdir() if path.is_dir()) if root.is_dir() else []
        msg = f"Category folder '{category_dir}' does not exist; categories found in '{root}': {available or 'none'}."
        raise FileNotFoundError(msg)
    for required in ("train/good", "test"):
        if not (category_dir / required).is_dir():
            msg = f"'{category_dir}' is not in the MVTec AD layout: missing folder '{required}/'."
            raise FileNotFoundError(msg)
    entries = []
    for split in ("train", "test"):
        split_images = []
        for label_dir in sorted(path for path in (category_dir / split).iterdir() if path.is_dir()):
            for image in list_image_files(label_dir):
                mask = _find_mask(category_dir, image) if split == "test" and label_dir.name != "good" else None
                split_images.append(
                    RtoEntry(str(image.relative_to(category_dir)), mask and str(mask.relative_to(category_dir))),
                )
        if not split_images or (split == "train" and not list_image_files(category_dir / "train" / "good")):
            where = "train/good" if split == "train" else "test/<label>"
            msg = f"'{category_dir}' holds no images ({sorted(IMG_EXTENSIONS)}) in '{where}/'."
            raise ValueError(msg)
        entries.extend(split_images)
    return entries


def _read_uint8(path: Path) -> torch.Tensor:
    """``[3, H, W]`` uint8 image, converted by :func:`~anomalib_surface.io.image_io.read_image`'s rule."""
    return tvf.to_dtype(read_image(path), torch.uint8, scale=True)


def _write_png(path: Path, image: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    io.write_png(image, str(path))


def _manifest_head(source_dir: Path, category: str, settings: RtoSettings) -> dict:
    return {
        "category": category,
        "rto_version": RTO_VERSION,
        "settings": dataclasses.asdict(settings),
        "source": str(source_dir.resolve()),
    }


def _manifest(source_dir: Path, category: str, settings: RtoSettings, entries: list[RtoEntry]) -> dict:
    """Full manifest: settings, source folder and every file's transform and source size."""
    files = {}
    for entry in entries:
        files[entry.target] = {
            "source": entry.image,
            "source_bytes": (source_dir / entry.image).stat().st_size,
            "mask": entry.target_mask,
            "mask_source": entry.mask,
            "transform": RtoTransform.draw(entry.image, settings).to_json(),
        }
    return {**_manifest_head(source_dir, category, settings), "files": files}


def default_mad_rto_root(source_root: str | Path, category: str, settings: RtoSettings) -> Path:
    """Cache folder of a variant, named after the settings and the resolved source category folder."""
    text = json.dumps(_manifest_head(Path(source_root) / category, "", settings), sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return Path(platformdirs.user_cache_dir("anomalib_surface")) / "mad_rto" / digest


def _transformed_files(
    source_dir: Path,
    settings: RtoSettings,
    entries: list[RtoEntry],
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(target path, uint8 [C, H, W])`` of every transformed image and mask."""
    for entry in entries:
        transform = RtoTransform.draw(entry.image, settings)
        image = _read_uint8(source_dir / entry.image)
        yield entry.target, transform.apply(image, "bilinear", settings.padding_mode)
        if entry.mask is not None:
            mask_path = source_dir / entry.mask
            check_mask_file(mask_path, source_dir / entry.image, tuple(image.shape[-2:]))
            mask = read_mask(mask_path)[None] * 255
            yield entry.target_mask, transform.apply(mask, "nearest", settings.padding_mode)


def make_mad_rto(
    root: str | Path,
    category: str,
    cache_root: str | Path | None = None,
    max_angle: float = 15.0,
    crop_scale: float = 1.0,
    padding_mode: str = "reflection",
    seed: int = 0,
    max_shift: float = 0.1,
) -> Path:
    """Build the RTO variant of ``<root>/<category>`` unless the cache already holds it.

    Args:
        root: Source dataset root in the MVTec AD layout.
        category: Category folder under ``root``.
        cache_root: Root of the variant; ``<cache_root>/<category>`` is written. ``None`` uses
            :func:`default_mad_rto_root`.
        max_angle: See :class:`RtoSettings`.
        crop_scale: See :class:`RtoSettings`.
        padding_mode: See :class:`RtoSettings`.
        seed: See :class:`RtoSettings`.
        max_shift: See :class:`RtoSettings`.

    Returns:
        The variant's root, to read with :class:`~anomalib_surface.data.checked_dataset.MVTecLayoutDataset`.

    Raises:
        FileNotFoundError / ValueError: See :func:`scan_mvtec_category`.
        FileExistsError: If ``<cache_root>/<category>`` exists but was not written by this function.
        ValueError: If ``cache_root`` is a path anomalib cannot read (checked before anything is written).
    """
    settings = RtoSettings(max_angle, crop_scale, padding_mode, seed, max_shift)
    source_dir = Path(root) / category
    entries = scan_mvtec_category(root, category)
    cache_root = default_mad_rto_root(root, category, settings) if cache_root is None else cache_root
    cache_root = check_dataset_path(cache_root, "cache_root")

    def write(staging: Path) -> None:
        for relative, image in _transformed_files(source_dir, settings, entries):
            _write_png(staging / relative, image)

    build_cached(cache_root / category, _manifest(source_dir, category, settings, entries), MANIFEST_NAME, write)
    return cache_root


