"""SurfaceDemo's categories: stochastic textures, periodic patterns and aligned objects.

Every category renders a defect-free *scene* from a random generator and draws its defect types on
it. Everything comes from photographs shipped with scikit-image plus procedural composition; nothing
is downloaded. scikit-image's ``coins``, ``moon`` and ``immunohistochemistry`` are never used, so that
a check built on them stays independent of SurfaceDemo.

- **Textures** (``brick``, ``grass``, ``gravel``): random crops of one photograph, no layout.
- **Periodic patterns**, named ``<material>/<pattern>`` and written in the layout that
  :class:`~anomalib_surface.data.TextureFolder` reads (so the cross-pattern protocol of Huang et al.
  runs on them): cloth (``woven`` plain weave, ``plaid`` colour bands, ``motif`` printed flowers) and
  leather (``pebble``, ``quilted``, ``scales`` embossed grain). Each image is the pattern at a random
  phase, shaded and modulated by the fine grain of a photograph. Defects break the pattern.
- **Aligned objects** (``washer``, ``nut``, ``board``): one part in a fixed pose on a background,
  textured from photographs; defects are a missing piece, a crack, a scratch, contamination and a
  misplaced part or component.

Images of the ``train`` and ``val`` splits take their photographic content from the top half of each
photograph, those of ``test`` from the bottom half, so no test image shares photographed pixels with
a training image.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage
from skimage import data as skimage_data
from skimage.transform import resize

from anomalib_surface.data.surface_defects import (
    DefectRenderer,
    blob_alpha,
    curve_alpha,
    low_contrast,
    missing_material,
    quantise,
    scratch,
    stain,
)

__all__ = ["CATEGORIES", "KINDS", "SurfaceCategory", "category_of", "photo"]

_TINTS = {"brick": (1.10, 0.93, 0.82), "grass": (0.86, 1.06, 0.78), "gravel": (1.03, 1.00, 0.95)}
_CROP_SIDE = (192, 240)
_BRIGHTNESS_JITTER = 0.08
_FOREIGN_COLOURS = ((1.30, 1.25, 1.10), (0.60, 0.75, 1.25), (1.25, 1.05, 0.50), (0.45, 0.45, 0.45))
_FIBRE_COLOURS = ((200.0, 40.0, 40.0), (30.0, 30.0, 30.0), (240.0, 240.0, 230.0), (40.0, 60.0, 200.0))
_EXCLUDED_PHOTOS = frozenset({"coins", "moon", "immunohistochemistry"})

Scene = dict
"""What a category's defect renderers need besides the clean image (e.g. the pattern at another phase)."""


@functools.cache
def photo(name: str, tint: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """Read-only ``(H, W, 3)`` float64 photograph ``skimage.data.<name>()`` in ``[0, 255]``, grey times ``tint``."""
    if name in _EXCLUDED_PHOTOS:
        msg = f"skimage.data.{name} is kept out of SurfaceDemo (reserved for independent checks)"
        raise ValueError(msg)
    image = getattr(skimage_data, name)().astype(np.float64)
    gray = image[..., :3].mean(axis=-1) if image.ndim == 3 else image  # noqa: PLR2004
    result = np.clip(gray[..., None] * np.asarray(tint), 0, 255)
    result.setflags(write=False)
    return result


def _half(image: np.ndarray, split: str) -> np.ndarray:
    """Top half of ``image`` for ``train``/``val``, bottom half for ``test``."""
    middle = image.shape[0] // 2
    return image[middle:] if split == "test" else image[:middle]


def _random_crop(region: np.ndarray, size: int, rng: np.random.Generator, jitter: bool = True) -> np.ndarray:
    """Random square crop of ``region`` (``(H, W, C)`` float), flipped, rotated, resized and brightness-jittered.

    Returns:
        np.ndarray: ``(size, size, C)`` uint8 image.
    """
    largest = min(_CROP_SIDE[1], *region.shape[:2])
    side = int(rng.integers(min(_CROP_SIDE[0], largest), largest + 1))
    top = int(rng.integers(0, region.shape[0] - side + 1))
    left = int(rng.integers(0, region.shape[1] - side + 1))
    crop = region[top : top + side, left : left + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    crop = np.rot90(crop, k=int(rng.integers(4)))
    crop = resize(crop, (size, size), order=1, anti_aliasing=True, preserve_range=True)
    return quantise(crop * (rng.uniform(1 - _BRIGHTNESS_JITTER, 1 + _BRIGHTNESS_JITTER) if jitter else 1.0))


def _grain(name: str, split: str, size: int, rng: np.random.Generator, strength: float) -> np.ndarray:
    """``(H, W, 1)`` multiplicative grain around 1: the high-pass of a random crop of photograph ``name``."""
    region = _half(photo(name), split)[..., 0]
    if min(region.shape) >= size:  # a crop at the photograph's own scale: no resampling needed
        top, left = (int(rng.integers(0, extent - size + 1)) for extent in region.shape)
        crop = np.rot90(region[top : top + size, left : left + size], k=int(rng.integers(4)))
    else:
        crop = _random_crop(region[..., None], size, rng, jitter=False)[..., 0].astype(np.float64)
    detail = (crop - ndimage.gaussian_filter(crop, 2.0)) / 255.0
    return (1.0 + strength * detail / max(detail.std(), 1e-6) * 0.25)[..., None]


@dataclasses.dataclass(frozen=True)
class SurfaceCategory:
    """One SurfaceDemo category.

    Attributes:
        name (str): Category name, also its folder under the dataset root (``material/pattern`` for patterns).
        kind (str): ``"texture"``, ``"pattern"`` or ``"object"``.
        render (Callable): ``(split, size, rng) -> (image (H, W, 3) float, scene)``, the defect-free image.
        defects (dict): Defect type -> ``(scene, clean (H, W, 3) float, rng) -> rendered (H, W, 3) float``.
        period (float | None): Patterns: the period along x as a fraction of the image side.
    """

    name: str
    kind: str
    render: Callable[[str, int, np.random.Generator], tuple[np.ndarray, Scene]]
    defects: dict[str, Callable[[Scene, np.ndarray, np.random.Generator], np.ndarray]]
    period: float | None = None

    @property
    def defect_types(self) -> tuple[str, ...]:
        """Defect folders of the category, in generation order."""
        return tuple(self.defects)

    def renderer(self, label: str, scene: Scene) -> DefectRenderer:
        """The defect renderer of ``label`` bound to ``scene``."""
        return functools.partial(self.defects[label], scene)


def _plain(renderer: DefectRenderer) -> Callable[[Scene, np.ndarray, np.random.Generator], np.ndarray]:
    """A defect renderer that does not need the scene."""
    return lambda _scene, clean, rng: renderer(clean, rng)


# --------------------------------------------------------------------------------------------- textures
TEXTURES = ("brick", "grass", "gravel")


def _texture(name: str) -> SurfaceCategory:
    def render(split: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, Scene]:
        return _random_crop(_half(photo(name, _TINTS[name]), split), size, rng).astype(np.float64), {"split": split}

    def foreign_material(scene: Scene, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Recoloured patch of another texture pasted in an irregular shape."""
        size = clean.shape[0]
        alpha = blob_alpha(size, rng, rng.uniform(0.08, 0.16) * size, edge=1.5)[0][..., None]
        others = [other for other in TEXTURES if other != name]
        source = others[rng.integers(len(others))]
        patch = _random_crop(_half(photo(source, _TINTS[source]), scene["split"]), size, rng).astype(np.float64)
        colour = np.asarray(_FOREIGN_COLOURS[rng.integers(len(_FOREIGN_COLOURS))])
        return clean * (1 - alpha) + patch * colour * alpha

    defects = {
        "scratch": _plain(scratch),
        "stain": _plain(stain),
        "foreign_material": foreign_material,
        "missing_material": _plain(missing_material),
        "low_contrast": _plain(low_contrast),
    }
    return SurfaceCategory(name, "texture", render, defects)


# --------------------------------------------------------------------------------------------- patterns
PatternField = Callable[[np.ndarray, np.ndarray, float], np.ndarray]
"""``(y, x, period) -> (H, W, 3)`` colour in grey levels of a pattern at pixel coordinates ``y``, ``x``."""


def _frac(value: np.ndarray) -> np.ndarray:
    return value - np.floor(value)


def _woven(y: np.ndarray, x: np.ndarray, period: float) -> np.ndarray:
    """Plain weave: two threads per period, warp over weft on alternate crossings."""
    thread = period / 2
    over = (np.floor(x / thread) + np.floor(y / thread)) % 2 == 0
    warp = np.sin(np.pi * _frac(x / thread)) ** 0.6
    weft = np.sin(np.pi * _frac(y / thread)) ** 0.6
    warp_colour, weft_colour = np.array([40.0, 60.0, 120.0]), np.array([150.0, 170.0, 210.0])
    return np.where(over[..., None], warp[..., None] * warp_colour, weft[..., None] * weft_colour) + 30.0


def _plaid(y: np.ndarray, x: np.ndarray, period: float) -> np.ndarray:
    """Tartan: the same sequence of coloured bands along x and y, mixed, over a fine twill."""
    edges = np.array([0.0, 0.4, 0.55, 0.6, 0.75])
    colours = np.array([[170.0, 40.0, 40.0], [30.0, 80.0, 40.0], [220.0, 200.0, 60.0], [170.0, 40.0, 40.0], [20.0, 20.0, 60.0]])

    def bands(coordinate: np.ndarray) -> np.ndarray:
        return colours[np.searchsorted(edges, _frac(coordinate / period), side="right") - 1]

    twill = 1.0 + 0.12 * np.sign(np.sin(2 * np.pi * (x + y) / max(period / 10, 2.0)))
    return 0.5 * (bands(x) + bands(y)) * twill[..., None]


def _motif(y: np.ndarray, x: np.ndarray, period: float) -> np.ndarray:
    """Printed four-petal flowers on a square lattice over a cream ground."""
    v = _frac(y / period) - 0.5
    u = _frac(x / period) - 0.5
    radius, angle = np.hypot(u, v), np.arctan2(v, u)
    petal = np.clip((0.32 * (0.55 + 0.45 * np.cos(4 * angle)) - radius) * period + 0.5, 0, 1)
    centre = np.clip((0.08 - radius) * period + 0.5, 0, 1)
    ground, petal_colour, centre_colour = np.array([235.0, 225.0, 200.0]), np.array([190.0, 60.0, 90.0]), np.array([240.0, 190.0, 40.0])
    colour = ground + petal[..., None] * (petal_colour - ground)
    return colour + centre[..., None] * (centre_colour - colour)


def _embossed(height: Callable[[np.ndarray, np.ndarray, float], np.ndarray], base: Sequence[float]) -> PatternField:
    """Leather: a periodic height field lit from the top left, in the leather's ``base`` colour."""

    def field(y: np.ndarray, x: np.ndarray, period: float) -> np.ndarray:
        surface = height(y, x, period)
        dy, dx = np.gradient(surface)
        shading = np.clip(1.0 + 2.5 * (-dx - dy) + 0.25 * surface, 0.3, 1.6)
        return shading[..., None] * np.asarray(base)

    return field


def _pebble_height(y: np.ndarray, x: np.ndarray, period: float) -> np.ndarray:
    """Hexagonal bumps: three cosines whose wave vectors are 120 degrees apart, repeating every ``period`` along x."""
    u, v = x / period, y / (period * np.sqrt(3))
    return (np.cos(2 * np.pi * (u + v)) + np.cos(2 * np.pi * (u - v)) + np.cos(4 * np.pi * v)) / 3


def _quilted_height(y: np.ndarray, x: np.ndarray, period: float) -> np.ndarray:
    """Diamond quilting: grooves along both diagonals."""
    distances = [np.abs(_frac((x + sign * y) / period + 0.5) - 0.5) * period / np.sqrt(2) for sign in (1, -1)]
    return -np.exp(-((np.minimum(*distances) / (0.06 * period)) ** 2))


def _scales_height(y: np.ndarray, x: np.ndarray, period: float) -> np.ndarray:
    """Rectangular scales in offset rows (crocodile print): domes separated by grooves."""
    row = np.floor(y / (period / 1.5))
    u = _frac(x / period + 0.5 * (row % 2))
    v = _frac(y / (period / 1.5))
    return (np.sin(np.pi * u) * np.sin(np.pi * v)) ** 0.3


def _pattern(material: str, name: str, field: PatternField, period: float, grain_photo: str) -> SurfaceCategory:
    """A periodic pattern; ``period`` is its period along x as a fraction of the image side."""

    def draw(size: int, phase: np.ndarray) -> np.ndarray:
        yy, xx = np.mgrid[:size, :size].astype(np.float64) + 0.5
        return field(yy + phase[0], xx + phase[1], period * size)

    def render(split: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, Scene]:
        phase = rng.uniform(0, period * size, 2)
        gain = _grain(grain_photo, split, size, rng, strength=0.35) * rng.uniform(0.92, 1.08)
        image = np.clip(draw(size, phase) * gain, 0, 255)
        return image, {"draw": draw, "phase": phase, "gain": gain, "period": period * size}

    def shifted(scene: Scene, shift: np.ndarray) -> np.ndarray:
        return np.clip(scene["draw"](len(scene["gain"]), scene["phase"] + shift) * scene["gain"], 0, 255)

    def phase_shift(scene: Scene, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A patch of the pattern printed out of phase (misprint): same colours, broken layout."""
        size = clean.shape[0]
        alpha = blob_alpha(size, rng, rng.uniform(0.1, 0.18) * size, edge=1.0)[0][..., None]
        shift = scene["period"] * rng.uniform(0.3, 0.7, 2)
        return clean + alpha * (shifted(scene, shift) - clean)

    def displaced_band(scene: Scene, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Broken or displaced threads: a band along x or y whose pattern slipped by part of a period."""
        size = clean.shape[0]
        width = rng.uniform(0.04, 0.08) * size
        centre, start = rng.uniform(0.2, 0.8) * size, rng.uniform(0, 0.4) * size
        length = rng.uniform(0.4, 0.6) * size
        coordinates = np.arange(size) + 0.5
        across = np.clip(width / 2 + 0.5 - np.abs(coordinates - centre), 0, 1)
        along = np.clip(np.minimum(coordinates - start, start + length - coordinates) + 0.5, 0, 1)
        horizontal = rng.random() < 0.5
        alpha = (across[:, None] * along[None, :] if horizontal else along[:, None] * across[None, :])[..., None]
        slip = scene["period"] * rng.uniform(0.3, 0.7)
        shift = np.array([0.0, slip]) if horizontal else np.array([slip, 0.0])
        return clean + alpha * (shifted(scene, shift) - clean)

    def foreign_fibre(_scene: Scene, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return scratch(clean, rng, colour=np.asarray(_FIBRE_COLOURS[rng.integers(len(_FIBRE_COLOURS))]))

    defects = {
        "hole": _plain(missing_material),
        "stain": _plain(stain),
        "foreign_fibre": foreign_fibre,
        "phase_shift": phase_shift,
        "displaced_band": displaced_band,
    }
    return SurfaceCategory(f"{material}/{name}", "pattern", render, defects, period=period)


# ---------------------------------------------------------------------------------------------- objects
Layer = tuple[np.ndarray, np.ndarray]
"""``(alpha (H, W) in [0, 1], colour (H, W, 3))`` of one part of an object scene."""


def _edge(signed_distance: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage of a shape from its signed distance in pixels (positive inside)."""
    return np.clip(signed_distance + 0.5, 0, 1)


def _compose(background: np.ndarray, layers: Sequence[Layer]) -> np.ndarray:
    image = background.copy()
    for alpha, colour in layers:
        image += alpha[..., None] * (colour - image)
    return image


def _shift(layer: Layer, offset: tuple[int, int]) -> Layer:
    """``layer`` moved by ``offset`` whole pixels ``(dy, dx)`` (the parts stay clear of the border)."""
    return np.roll(layer[0], offset, axis=(0, 1)), np.roll(layer[1], offset, axis=(0, 1))


def _centred(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:size, :size].astype(np.float64) + 0.5
    return yy - size / 2, xx - size / 2


def _washer(split: str, size: int, rng: np.random.Generator) -> list[Layer]:
    """Steel washer: an annulus with a bevel, brushed texture from ``camera``."""
    dy, dx = _centred(size)
    radius = np.hypot(dy, dx)
    alpha = _edge(np.minimum(0.34 * size - radius, radius - 0.15 * size))
    bevel = 1.0 + 0.25 * np.cos(np.pi * (radius - 0.15 * size) / (0.19 * size))
    texture = _grain("camera", split, size, rng, strength=0.15)
    return [(alpha, np.array([175.0, 178.0, 185.0]) * bevel[..., None] * texture)]


def _nut(split: str, size: int, rng: np.random.Generator) -> list[Layer]:
    """Brass hex nut with a threaded hole; each flank lit differently; texture from ``astronaut``."""
    dy, dx = _centred(size)
    angle, radius = np.arctan2(dy, dx), np.hypot(dy, dx)
    sector = np.floor((angle + np.pi) / (np.pi / 3))
    apothem = 0.32 * size
    to_flank = apothem - radius * np.cos(_frac((angle + np.pi) / (np.pi / 3)) * np.pi / 3 - np.pi / 6)
    alpha = _edge(np.minimum(to_flank, radius - 0.13 * size))
    flank_light = 0.85 + 0.06 * sector
    thread = np.where(radius < 0.19 * size, 0.75 + 0.25 * np.cos(2 * np.pi * radius / max(size / 40, 1.5)), 1.0)
    texture = _grain("astronaut", split, size, rng, strength=0.25)
    return [(alpha, np.array([205.0, 170.0, 90.0]) * (flank_light * thread)[..., None] * texture)]


def _print(name: str, split: str, shape: tuple[int, int], rng: np.random.Generator, ink: float) -> np.ndarray:
    """``(h, w)`` ink coverage of a random crop of a printed-text photograph (left half train/val, right test)."""
    sheet = photo(name)[..., 0]
    half = sheet.shape[1] // 2
    sheet = sheet[:, half:] if split == "test" else sheet[:, :half]
    height, width = min(shape[0] * 2, sheet.shape[0]), min(shape[1] * 2, sheet.shape[1])
    top, left = int(rng.integers(0, sheet.shape[0] - height + 1)), int(rng.integers(0, sheet.shape[1] - width + 1))
    crop = resize(sheet[top : top + height, left : left + width], shape, order=1, anti_aliasing=True, preserve_range=True)
    return np.clip((ink - crop) / 80.0, 0, 1)


def _box(size: int, centre: tuple[float, float], half: tuple[float, float]) -> tuple[np.ndarray, tuple[slice, slice]]:
    """Anti-aliased rectangle coverage ``(H, W)`` and its bounding slices (fractions of the side)."""
    dy, dx = _centred(size)
    cy, cx, hy, hx = centre[0] * size, centre[1] * size, half[0] * size, half[1] * size
    alpha = _edge(np.minimum(hy - np.abs(dy - cy), hx - np.abs(dx - cx)))
    rows = slice(int(size / 2 + cy - hy), int(np.ceil(size / 2 + cy + hy)))
    cols = slice(int(size / 2 + cx - hx), int(np.ceil(size / 2 + cx + hx)))
    return alpha, (rows, cols)


def _board(split: str, size: int, rng: np.random.Generator) -> list[Layer]:
    """Small circuit board: green laminate (``grass`` grain), a printed chip (``text``), a label (``page``), pads."""
    laminate, _ = _box(size, (0.0, 0.0), (0.3, 0.4))
    board = np.array([40.0, 110.0, 60.0]) * _grain("grass", split, size, rng, strength=0.2)
    chip_alpha, (rows, cols) = _box(size, (-0.1, -0.12), (0.1, 0.16))
    chip = np.broadcast_to(np.array([35.0, 35.0, 40.0]), (size, size, 3)).copy()
    marking = np.zeros((size, size))  # the same part number on every chip
    marking[rows, cols] = _print("text", "train", (rows.stop - rows.start, cols.stop - cols.start), np.random.default_rng(0), 120.0)
    chip += marking[..., None] * 150.0
    label_alpha, (rows, cols) = _box(size, (0.16, 0.12), (0.08, 0.18))
    label = np.broadcast_to(np.array([235.0, 235.0, 225.0]), (size, size, 3)).copy()
    printed = np.zeros((size, size))
    printed[rows, cols] = _print("page", split, (rows.stop - rows.start, cols.stop - cols.start), rng, 140.0)
    label -= printed[..., None] * 180.0
    dy, dx = _centred(size)
    pads = sum(_edge(0.035 * size - np.hypot(dy - py * size, dx - px * size)) for py, px in ((-0.18, 0.22), (-0.02, 0.22), (0.16, -0.25)))
    resistor_alpha, _ = _box(size, (0.14, -0.22), (0.03, 0.07))
    gold, tan = np.array([215.0, 180.0, 80.0]), np.array([190.0, 160.0, 120.0])
    return [
        (laminate, board),
        (np.clip(pads, 0, 1), np.broadcast_to(gold, (size, size, 3))),
        (chip_alpha, chip),
        (label_alpha, label),
        (resistor_alpha, np.broadcast_to(tan, (size, size, 3))),
    ]


def _object(name: str, parts: Callable[[str, int, np.random.Generator], list[Layer]]) -> SurfaceCategory:
    """An aligned object: ``parts`` drawn at a fixed pose on a grey ``gravel``-grained background."""

    def render(split: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, Scene]:
        background = np.full((size, size, 3), 120.0) * _grain("gravel", split, size, rng, strength=0.1)
        layers = parts(split, size, rng)
        light = rng.uniform(0.94, 1.06)
        image = np.clip(_compose(background, layers) * light, 0, 255)
        return image, {"background": background, "layers": layers, "light": light}

    def redraw(scene: Scene, layers: Sequence[Layer]) -> np.ndarray:
        return np.clip(_compose(scene["background"], layers) * scene["light"], 0, 255)

    def coverage(scene: Scene) -> np.ndarray:
        return scene["layers"][0][0]

    def inside_point(scene: Scene, rng: np.random.Generator) -> np.ndarray:
        rows, cols = np.nonzero(coverage(scene) > 0.99)
        pick = int(rng.integers(len(rows)))
        return np.array([rows[pick], cols[pick]], dtype=np.float64) + 0.5

    def missing_piece(scene: Scene, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A chunk broken out of the part: the background shows through."""
        size = clean.shape[0]
        hole = blob_alpha(size, rng, rng.uniform(0.05, 0.09) * size, edge=1.0, centre=inside_point(scene, rng))[0]
        return redraw(scene, [(alpha * (1 - hole), colour) for alpha, colour in scene["layers"]])

    def crack(scene: Scene, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A dark jagged line across the part."""
        size = clean.shape[0]
        direction = rng.normal(0, 1, 2)
        steps = direction / max(np.linalg.norm(direction), 1e-6) + rng.normal(0, 0.5, (8, 2))
        steps *= rng.uniform(0.2, 0.35) * size / np.linalg.norm(steps, axis=1).sum()
        corners = inside_point(scene, rng) + np.vstack([[0.0, 0.0], np.cumsum(steps, axis=0)])
        points = np.concatenate([np.linspace(a, b, size // 8) for a, b in zip(corners[:-1], corners[1:], strict=True)])
        alpha = curve_alpha(size, points, max(0.5, size / 200), tapered=True) * coverage(scene)
        return clean * (1 - 0.75 * alpha[..., None])

    def part_scratch(scene: Scene, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A scratch on the part only."""
        return clean + coverage(scene)[..., None] * (scratch(clean, rng) - clean)

    def contamination(scene: Scene, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Dirt or oil on the part only."""
        return clean + coverage(scene)[..., None] * (stain(clean, rng) - clean)

    def misplaced(scene: Scene, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The part (single-part objects) or one component moved off its place."""
        size = clean.shape[0]
        layers = list(scene["layers"])
        index = 0 if len(layers) == 1 else int(rng.integers(1, len(layers)))
        distance = rng.uniform(0.05, 0.1) * size
        heading = rng.uniform(0, 2 * np.pi)
        offset = (round(distance * np.sin(heading)), round(distance * np.cos(heading)))
        layers[index] = _shift(layers[index], offset)
        return redraw(scene, layers)

    defects = {
        "missing_piece": missing_piece,
        "crack": crack,
        "scratch": part_scratch,
        "contamination": contamination,
        "misplaced": misplaced,
    }
    return SurfaceCategory(name, "object", render, defects)


CATEGORIES: dict[str, SurfaceCategory] = {
    category.name: category
    for category in (
        *(_texture(name) for name in TEXTURES),
        _pattern("cloth", "woven", _woven, 1 / 12, "gravel"),
        _pattern("cloth", "plaid", _plaid, 1 / 4, "gravel"),
        _pattern("cloth", "motif", _motif, 1 / 6, "gravel"),
        _pattern("leather", "pebble", _embossed(_pebble_height, (120.0, 75.0, 45.0)), 1 / 10, "grass"),
        _pattern("leather", "quilted", _embossed(_quilted_height, (60.0, 45.0, 40.0)), 1 / 5, "grass"),
        _pattern("leather", "scales", _embossed(_scales_height, (150.0, 120.0, 80.0)), 1 / 6, "grass"),
        _object("washer", _washer),
        _object("nut", _nut),
        _object("board", _board),
    )
}
"""Every category by name: textures, then patterns (``material/pattern``), then objects."""
KINDS = ("texture", "pattern", "object")


def category_of(name: object) -> SurfaceCategory:
    """The category called ``name``, or a ValueError listing the valid names."""
    if not isinstance(name, str) or name not in CATEGORIES:
        msg = f"Unknown SurfaceDemo category {name!r}; expected one of {', '.join(CATEGORIES)}"
        raise ValueError(msg)
    return CATEGORIES[name]
