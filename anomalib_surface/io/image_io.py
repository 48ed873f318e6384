"""Reading images and ground-truth masks the same way in every datamodule of this package, with clear errors.

Industrial data comes in many file formats; every image is converted by one rule (:func:`read_image`):

=====================================  ==================================================================
file content (Pillow mode)             becomes ``[3, H, W]`` float32 in ``[0, 1]``
=====================================  ==================================================================
8-bit RGB (``RGB``)                    value / 255
8-bit grey (``L``), 1-bit (``1``)      value / 255 copied to the three channels
grey + alpha (``LA``), ``RGBA``        alpha is dropped (colour channels as stored, no compositing)
palette (``P``, ``PA``)                looked up in the palette (its alpha dropped)
``CMYK``, ``YCbCr``, ``LAB``, ``HSV``  converted to RGB by Pillow
16-bit grey (``I;16*``; ``I``)         value / 65535 copied to the three channels (full 16-bit range;
                                       ``I`` images must hold values in ``[0, 65535]``)
32-bit float grey (``F``)              used as is; values must be finite and in ``[0, 1]``
16-bit colour PNG/TIFF                 Pillow keeps the high byte of each channel: (value >> 8) / 255
other TIFFs (float colour, ...)        read with ``tifffile``: 8-bit / 255, 16-bit / 65535, float32 as is
                                       (in ``[0, 1]``); 1, 3 or 4 channels (a 4th one is alpha, dropped)
=====================================  ==================================================================

(anomalib's own ``read_image`` converts 16-bit grey with Pillow's ``convert("RGB")``, which clips every
value above 255 to white; this module does not.)

Masks (:func:`read_mask`) must be *binary*: every pixel 0 (normal) or one common non-zero value
(defect), whatever that value is (255, 1, 65535, a colour...). A mask with more values (JPEG
artefacts, anti-aliased edges, several label values) is refused rather than thresholded, because any
threshold would silently change what is scored as defective. Masks must have the size of their image.

Every reader applies the EXIF orientation tag (``Orientation``, as cameras and phones write it) to
images *and* masks, so both come out as an image viewer displays them: a mask drawn on the displayed
photo lines up with it. A mask whose orientation tag differs from its image's gets a warning (it was
probably drawn on the other orientation); when that makes their sizes differ, the error says so. TIFFs
that only ``tifffile`` can decode are used as stored.

Unreadable or truncated files raise :class:`ImageReadError` naming the file; every file is decoded in
full (:func:`image_size_of`), so a truncated JPEG fails when checked, not after training steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = [
    "ImageReadError",
    "MaskError",
    "OrientationWarning",
    "check_mask_size",
    "image_size_of",
    "list_image_files",
    "orientation_of",
    "read_image",
    "read_mask",
]

SIXTEEN_BIT_MAX = 65535
EXIF_ORIENTATION = 0x0112
TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
"""EXIF orientations that swap height and width (transpositions, rotations by 90 degrees)."""
TIFF_SUFFIXES = (".tif", ".tiff")
INTEGER_SCALES = {np.dtype(np.uint8): 255, np.dtype(np.uint16): SIXTEEN_BIT_MAX}
_PIL_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class ImageReadError(ValueError):
    """An image or mask file cannot be read, or holds values outside the documented conversion rule."""


class MaskError(ValueError):
    """A ground-truth mask is not binary or does not match its image's size."""


class OrientationWarning(UserWarning):
    """A mask and its image carry different EXIF orientation tags."""


def list_image_files(folder: Path) -> list[Path]:
    """Sorted image files (extensions torchvision knows) directly inside ``folder``."""
    return sorted(path for path in folder.iterdir() if path.is_file() and path.suffix.lower() in IMG_EXTENSIONS)


def image_size_of(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file as read (EXIF orientation applied), decoding the whole file.

    Pillow's ``verify`` does not decode JPEG data, so a truncated JPEG would pass it and fail in the
    middle of training; this decodes every pixel (without the float conversion of :func:`read_image`).

    Raises:
        ImageReadError: Naming the file, if it is not a readable image.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            width, height = image.size
            orientation = int(image.getexif().get(EXIF_ORIENTATION, 1))
    except _PIL_ERRORS:
        return tuple(_pixels(path).shape[:2])  # TIFFs for tifffile, or the error naming the file
    return (width, height) if orientation in TRANSPOSING_ORIENTATIONS else (height, width)


def orientation_of(path: str | Path) -> int:
    """EXIF orientation tag (1-8) of an image file; 1 (as stored) when it has none or is unreadable."""
    try:
        with Image.open(path) as image:
            return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except (*_PIL_ERRORS, TypeError):
        return 1


def _pixels(path: Path) -> np.ndarray:
    """Pixel array ``[H, W]`` or ``[H, W, C]`` of a file, scaled to ``[0, 1]`` float32 by the module's rule."""
    try:
        with Image.open(path) as image:
            image.load()
            return _scaled(ImageOps.exif_transpose(image), path)
    except ImageReadError:
        raise
    except _PIL_ERRORS as error:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return _tiff_pixels(path, error)
        msg = f"Cannot read image file '{path}': {error}. Expected a complete image file ({', '.join(IMG_EXTENSIONS)})."
        raise ImageReadError(msg) from error


def _scaled(image: Image.Image, path: Path) -> np.ndarray:
    """Pixels of an opened Pillow image in ``[0, 1]``: 16-bit by 65535, float as is, the rest as 8-bit RGB."""
    if image.mode.startswith("I;16"):
        return np.asarray(image, dtype=np.float32) / SIXTEEN_BIT_MAX
    if image.mode == "I":
        values = np.asarray(image, dtype=np.int64)
        return _check_range(values, 0, SIXTEEN_BIT_MAX, path, "32-bit integer").astype(np.float32) / SIXTEEN_BIT_MAX
    if image.mode == "F":
        return _check_range(np.array(image, dtype=np.float32), 0.0, 1.0, path, "32-bit float")
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255


def _tiff_pixels(path: Path, pillow_error: Exception) -> np.ndarray:
    """Pixels of a TIFF that Pillow cannot decode (e.g. float colour), read with ``tifffile``, in ``[0, 1]``."""
    import tifffile

    try:
        values = tifffile.imread(path)
    except Exception as error:
        msg = f"Cannot read TIFF file '{path}': Pillow: {pillow_error}; tifffile: {error}."
        raise ImageReadError(msg) from error
    if values.dtype in INTEGER_SCALES:
        return values.astype(np.float32) / INTEGER_SCALES[values.dtype]
    if values.dtype == np.float32:
        return _check_range(values, 0.0, 1.0, path, "32-bit float")
    msg = f"TIFF file '{path}' holds {values.dtype} pixels; expected 8-bit or 16-bit unsigned integers or float32."
    raise ImageReadError(msg)


def _check_range(values: np.ndarray, low: float, high: float, path: Path, kind: str) -> np.ndarray:
    if not np.isfinite(values).all() or values.min() < low or values.max() > high:
        msg = (
            f"{kind} image '{path}' has values in [{values.min()}, {values.max()}]; expected finite values in "
            f"[{low}, {high}]. Save it as 8-bit or 16-bit PNG/TIFF."
        )
        raise ImageReadError(msg)
    return values


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as ``[3, H, W]`` float32 in ``[0, 1]``, converted by the module's rule.

    Raises:
        ImageReadError: Naming the file, if it is unreadable or out of range.
    """
    pixels = torch.from_numpy(np.ascontiguousarray(_pixels(Path(path))))
    if pixels.ndim == 2:  # noqa: PLR2004
        return pixels.expand(3, *pixels.shape).contiguous()
    channels = pixels.shape[-1]
    if channels not in {3, 4}:
        msg = f"Image '{path}' has {channels} channels; expected grey, RGB or RGBA."
        raise ImageReadError(msg)
    return pixels[..., :3].permute(2, 0, 1).contiguous()


def read_mask(path: str | Path) -> torch.Tensor:
    """A binary ground-truth mask file as ``[H, W]`` uint8 (1 = defect).

    Raises:
        ImageReadError: Naming the file, if it is unreadable.
        MaskError: If the mask holds more than 0 and one non-zero value.
    """
    pixels = _pixels(Path(path))
    if pixels.ndim == 3:  # noqa: PLR2004
        pixels = pixels[..., :3].max(axis=-1)
    values = np.unique(pixels)
    non_zero = values[values > 0]
    if len(non_zero) > 1:
        shown = ", ".join(f"{value:.4g}" for value in values[:6]) + (", ..." if len(values) > 6 else "")  # noqa: PLR2004
        msg = (
            f"Mask '{path}' is not binary: it holds {len(values)} values ({shown}, on a 0-1 scale); expected 0 for "
            "normal pixels and one non-zero value (e.g. 255) for defects. Save masks losslessly (PNG, not JPEG) "
            "without anti-aliasing, or threshold them yourself."
        )
        raise MaskError(msg)
    return torch.from_numpy(pixels > 0).to(torch.uint8)


def check_mask_size(
    mask_path: str | Path,
    mask_size: Sequence[int],
    image_path: str | Path,
    image_size: Sequence[int],
) -> None:
    """Check a mask against its image, both ``(H, W)`` as read (EXIF orientation applied).

    Warns when their EXIF orientation tags differ (the mask was probably drawn on the other orientation,
    which a square image does not reveal by its size).

    Raises:
        MaskError: Naming both files, when the sizes differ (and, if the tags differ, saying so).
    """
    mask_orientation, image_orientation = orientation_of(mask_path), orientation_of(image_path)
    disagreement = ""
    if mask_orientation != image_orientation:
        disagreement = (
            f"the EXIF orientation of mask '{mask_path}' ({mask_orientation}) differs from its image "
            f"'{image_path}' ({image_orientation}); both are applied when read, so the mask must be drawn on the "
            "image as displayed"
        )
        warnings.warn(disagreement[0].upper() + disagreement[1:] + ".", OrientationWarning, stacklevel=2)
    if tuple(mask_size) != tuple(image_size):
        msg = (
            f"Mask '{mask_path}' is {mask_size[0]}x{mask_size[1]} (HxW) but its image '{image_path}' is "
            f"{image_size[0]}x{image_size[1]}; a mask must have its image's size"
            + (f" ({disagreement})." if disagreement else ".")
        )
        raise MaskError(msg)
