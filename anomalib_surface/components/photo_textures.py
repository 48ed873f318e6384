"""Anomaly-source folders written from photographs shipped with scikit-image (nothing is downloaded).

Synthetic-anomaly methods fill their Perlin regions from a texture set (DTD in the papers). Without one, the
fill must come neither from the training images (the model would learn that its own surface is anomalous) nor
from the test set. scikit-image ships a few photographs; SurfaceDemo renders its categories from ``brick``,
``grass``, ``gravel``, ``camera``, ``astronaut``, ``text`` and ``page`` and keeps ``coins``, ``moon`` and
``immunohistochemistry`` for independent checks, so :data:`TEXTURE_PHOTOS` uses none of those.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import platformdirs

__all__ = ["TEXTURE_PHOTOS", "photo_texture_folder", "write_photos"]

TEXTURE_PHOTOS = ("chelsea", "coffee", "hubble_deep_field", "retina", "cell", "rocket", "microaneurysms")
"""scikit-image photographs whose close-up crops look like textures (fur, foam and wood grain, star field,
fundus vessels, microscopy, foliage and sky, retinal grain), none of them used by SurfaceDemo."""


def _rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 of a grey, RGB or RGBA uint8 image."""
    if image.ndim == 2:  # noqa: PLR2004
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3])


def _quadrant_crops(image: np.ndarray) -> list[np.ndarray]:
    """The four ``side x side`` corner crops (``side`` = half the shorter side): close-ups, as DTD's images are."""
    side = min(image.shape[:2]) // 2
    height, width = image.shape[:2]
    return [image[top : top + side, left : left + side] for top in (0, height - side) for left in (0, width - side)]


def write_photos(names: Sequence[str], folder: Path, crops: bool = False) -> Path:
    """Write ``skimage.data.<name>()`` for each of ``names`` as PNG into ``folder`` (skipping existing files).

    Args:
        names: scikit-image photograph names.
        folder: Destination folder (created).
        crops: Write the four quadrant close-ups of each photograph instead of the whole photograph.

    Returns:
        ``folder``.
    """
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        image = None
        suffixes = [f"_{index}" for index in range(4)] if crops else [""]
        for index, suffix in enumerate(suffixes):
            path = folder / f"{name}{suffix}.png"
            if path.is_file():
                continue
            image = _rgb(getattr(skimage.data, name)()) if image is None else image
            Image.fromarray(_quadrant_crops(image)[index] if crops else image).save(path)
    return folder


def photo_texture_folder(folder: Path | None = None) -> Path:
    """Folder of close-up crops of :data:`TEXTURE_PHOTOS` (default: in the user cache), written once."""
    folder = folder or Path(platformdirs.user_cache_dir("anomalib_surface")) / "texture_photos"
    return write_photos(TEXTURE_PHOTOS, folder, crops=True)
