"""Defect synthesis of SurfaceDemo: shapes, renderers and exact masks.

A renderer maps a defect-free image ``(H, W, 3)`` float in grey levels and a random generator to the
same image with one defect drawn on it, in floating point. :func:`apply_defect` quantises the
rendering and derives the exact mask: a pixel belongs to the mask iff the rendered change is at least
:data:`MASK_THRESHOLD` grey levels (of 255) in some channel, and changes below that are discarded, so
the saved defect image differs from its defect-free version exactly inside the mask.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

__all__ = [
    "MASK_THRESHOLD",
    "DefectRenderer",
    "apply_defect",
    "blob_alpha",
    "curve_alpha",
    "low_contrast",
    "missing_material",
    "quantise",
    "render_defect",
    "scratch",
    "stain",
]

MASK_THRESHOLD = 2
"""Smallest change, in grey levels of 255 in any channel, that a pixel needs to be in a defect mask."""
_MIN_DEFECT_FRACTION = 0.002
_MAX_DEFECT_ATTEMPTS = 20
_STAIN_COLOURS = ((0.62, 0.50, 0.38), (0.55, 0.55, 0.60), (0.72, 0.66, 0.45))

DefectRenderer = Callable[[np.ndarray, np.random.Generator], np.ndarray]
"""``(clean (H, W, 3) float, rng) -> rendered (H, W, 3) float``."""


def quantise(image: np.ndarray) -> np.ndarray:
    """Round half up to uint8, so that rounding commutes with adding whole grey levels."""
    return np.floor(np.clip(image, 0, 255) + 0.5).astype(np.uint8)


def blob_alpha(
    size: int,
    rng: np.random.Generator,
    radius: float,
    edge: float,
    centre: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Irregular blob: a stretched circle with a wobbly outline and a smooth edge.

    Args:
        size (int): Image side.
        rng (np.random.Generator): Random generator.
        radius (float): Mean radius in pixels.
        edge (float): Width of the smoothstep ramp from 1 to 0 across the outline, in pixels.
        centre (np.ndarray | None): ``(2,)`` centre ``(y, x)``; ``None`` draws one in the central half.

    Returns:
        tuple: ``(H, W)`` alpha in ``[0, 1]`` and the ``(2,)`` centre ``(y, x)`` in pixels.
    """
    centre = rng.uniform(0.25, 0.75, 2) * size if centre is None else centre
    yy, xx = np.mgrid[:size, :size] + 0.5
    dy, dx = yy - centre[0], xx - centre[1]
    theta = rng.uniform(0, np.pi)
    along = (dx * np.cos(theta) + dy * np.sin(theta)) * rng.uniform(0.7, 1.0)
    across = dy * np.cos(theta) - dx * np.sin(theta)
    distance, angle = np.hypot(along, across), np.arctan2(across, along)
    wobble = sum(rng.uniform(0, 0.12) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in range(2, 6))
    ramp = np.clip((radius * (1 + wobble) - distance) / edge + 0.5, 0, 1)
    return ramp * ramp * (3 - 2 * ramp), centre


def curve_alpha(size: int, points: np.ndarray, half_width: float, tapered: bool = True) -> np.ndarray:
    """``(H, W)`` alpha of a line of ``half_width`` pixels along ``(K, 2)`` points ``(y, x)``, ends tapered."""
    pixels = np.floor(points).astype(int)
    inside = ((pixels >= 0) & (pixels < size)).all(axis=1)
    rows, cols = pixels[inside].T
    on_curve = np.zeros((size, size), dtype=bool)
    position = np.zeros((size, size))
    on_curve[rows, cols] = True
    position[rows, cols] = np.linspace(0, 1, len(points))[inside]
    distance, (near_rows, near_cols) = ndimage.distance_transform_edt(~on_curve, return_indices=True)
    taper = np.sin(np.pi * position[near_rows, near_cols]) ** 0.5 if tapered else 1.0
    return np.clip(half_width + 0.5 - distance, 0, 1) * taper


def _bezier(size: int, rng: np.random.Generator, length: float, start: np.ndarray | None = None) -> np.ndarray:
    """``(4 * size, 2)`` points of a random quadratic Bezier curve of about ``length`` pixels."""
    start = rng.uniform(0.15, 0.85, 2) * size if start is None else start
    heading = rng.uniform(0, 2 * np.pi)
    end = start + length * np.array([np.sin(heading), np.cos(heading)])
    bend = (start + end) / 2 + rng.uniform(-0.3, 0.3) * length * np.array([np.cos(heading), -np.sin(heading)])
    t = np.linspace(0, 1, 4 * size)[:, None]
    return (1 - t) ** 2 * start + 2 * t * (1 - t) * bend + t**2 * end


def scratch(clean: np.ndarray, rng: np.random.Generator, colour: np.ndarray | None = None) -> np.ndarray:
    """Thin curved line with tapered ends: bright or dark, or of ``colour`` (``(3,)`` grey levels, a fibre)."""
    size = clean.shape[0]
    points = _bezier(size, rng, rng.uniform(0.3, 0.6) * size)
    half_width = rng.uniform(0.3, 0.8) * max(1.0, size / 96)
    alpha = (curve_alpha(size, points, half_width) * rng.uniform(0.6, 0.9))[..., None]
    if colour is not None:
        target = np.broadcast_to(colour, clean.shape)
    else:
        target = clean + 0.7 * (255 - clean) if rng.random() < 0.5 else 0.3 * clean
    return clean + alpha * (target - clean)


def stain(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft-edged darker, coloured blob (rust, oil or dirt)."""
    size = clean.shape[0]
    radius = rng.uniform(0.08, 0.18) * size
    alpha = blob_alpha(size, rng, radius, edge=0.6 * radius)[0][..., None]
    colour = np.asarray(_STAIN_COLOURS[rng.integers(len(_STAIN_COLOURS))]) * rng.uniform(0.85, 1.05)
    return clean * (1 - alpha * (1 - colour))


def missing_material(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hole: dark irregular region, lighter on the side facing a random light direction."""
    size = clean.shape[0]
    radius = rng.uniform(0.07, 0.14) * size
    alpha, centre = blob_alpha(size, rng, radius, edge=1.5)
    light = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[:size, :size] + 0.5
    slope = ((yy - centre[0]) * np.sin(light) + (xx - centre[1]) * np.cos(light)) / radius
    shading = rng.uniform(0.12, 0.22) * (1 + 0.6 * np.clip(slope, -1, 1))
    return clean * (1 - alpha[..., None] * (1 - shading[..., None]))


def low_contrast(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Soft blob that is only 6-12 grey levels brighter or darker."""
    size = clean.shape[0]
    radius = rng.uniform(0.08, 0.16) * size
    alpha = blob_alpha(size, rng, radius, edge=0.5 * radius)[0][..., None]
    return clean + rng.choice((-1, 1)) * rng.uniform(6, 12) * alpha


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
    return np.where(mask[..., None], quantise(rendered), clean), mask


def render_defect(
    clean: np.ndarray,
    renderer: DefectRenderer,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw defects until one covers at least 0.2 % of the image (at least 4 pixels); see :func:`apply_defect`.

    Raises:
        RuntimeError: If 20 attempts draw no defect that large.
    """
    min_area = max(4, _MIN_DEFECT_FRACTION * clean.shape[0] * clean.shape[1])
    for _ in range(_MAX_DEFECT_ATTEMPTS):
        image, mask = apply_defect(clean, renderer(clean.astype(np.float64), rng))
        if mask.sum() >= min_area:
            return image, mask
    msg = f"Could not draw a visible defect in {_MAX_DEFECT_ATTEMPTS} attempts"
    raise RuntimeError(msg)
