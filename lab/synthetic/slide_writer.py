"""Synthetic pyramidal slides that OpenSlide reads, with one known object, for tests and demos.

The slide is an Aperio-style tiled TIFF (vendor "aperio", with µm/px and objective power): pale
pink "tissue" with mild seeded texture, and one dark purple, slightly irregular ellipse (a
tumour-like region) whose exact level-0 shape is `SyntheticSlide.object_geometry`. Every pyramid
level is drawn directly at its own resolution from that shape, tile by tile.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import shapely
import tifffile

from slidesam.server.slides.regions import Rect

TILE = 256
JPEG_QUALITY = 85
THUMBNAIL_SIZE = 768
BACKGROUND_RGB = np.array([236, 204, 220], dtype=np.float32)
OBJECT_RGB = np.array([96, 40, 122], dtype=np.float32)
_TEXTURE_WAVES = 4
_VERTICES = 720
_FIXED_POINT_SHIFT = 4


@dataclass(frozen=True)
class SyntheticSlide:
    """A written synthetic slide and the exact geometry of its known object."""

    path: Path
    width: int
    height: int
    mpp: float
    objective_power: float
    level_downsamples: tuple[int, ...]
    object_geometry: shapely.Polygon
    """The known object in level-0 pixels."""

    def object_mask(self, rect: Rect, downsample: float) -> np.ndarray:
        """The known object rasterised over `rect` at `downsample`: a bool array of shape
        (round(rect.height / downsample), round(rect.width / downsample)), at least 1x1, with the
        same pixel-centre convention as `slidesam.server.slides` regions."""
        rows = max(1, round(rect.height / downsample))
        columns = max(1, round(rect.width / downsample))
        return _rasterise(
            self.object_geometry, rect.x, rect.y, rect.width / columns, rect.height / rows, rows, columns
        )


@dataclass(frozen=True)
class _Texture:
    """A smooth seeded field in [-1, 1] over level-0 space: a sum of separable sine products."""

    frequencies: np.ndarray  # (waves, 2): radians per level-0 pixel along x, y
    phases: np.ndarray  # (waves, 2)

    @classmethod
    def random(cls, rng: np.random.Generator) -> _Texture:
        wavelengths = rng.uniform(150.0, 1500.0, size=(_TEXTURE_WAVES, 2))
        return cls(2 * math.pi / wavelengths, rng.uniform(0, 2 * math.pi, size=(_TEXTURE_WAVES, 2)))

    def sample(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        along_x = np.sin(self.frequencies[:, :1] * xs[None, :] + self.phases[:, :1])
        along_y = np.sin(self.frequencies[:, 1:] * ys[None, :] + self.phases[:, 1:])
        return (np.einsum("kr,kc->rc", along_y, along_x) / _TEXTURE_WAVES).astype(np.float32)


def write_synthetic_slide(
    path: Path,
    width: int = 8192,
    height: int = 6144,
    mpp: float = 0.25,
    objective_power: float = 40,
    levels: tuple[int, ...] = (1, 4, 16),
    object_center: tuple[float, float] = (5200.0, 3300.0),
    object_radii: tuple[float, float] = (700.0, 450.0),
    seed: int = 0,
) -> SyntheticSlide:
    """Write a synthetic Aperio-style slide to `path` and describe it."""
    if not levels or levels[0] != 1 or any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"levels must start at 1 and increase, got {levels}")
    rng = np.random.default_rng(seed)
    geometry = _irregular_ellipse(object_center, object_radii, rng)
    painter = _Painter(geometry, _Texture.random(rng), seed)
    header = f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE})"
    properties = f"|AppMag = {objective_power:g}|MPP = {mpp:g}"
    path = Path(path)
    with tifffile.TiffWriter(path, bigtiff=width * height * 3 > 2**31) as tif:
        for index, downsample in enumerate(levels):
            columns, rows = max(1, width // downsample), max(1, height // downsample)
            step = (width / columns + height / rows) / 2  # how OpenSlide computes a level's downsample
            resized = f" -> {columns}x{rows}" if index else ""
            description = f"{header}{resized} JPEG/RGB Q={JPEG_QUALITY}{properties}"
            _write_page(tif, painter.tiles(index, step, columns, rows), (rows, columns), description)
            if index == 0:
                _write_thumbnail(tif, painter, width, height, properties)
    return SyntheticSlide(path, width, height, mpp, float(objective_power), tuple(levels), geometry)


class _Painter:
    """Draws the synthetic content of any level-0 area at any pixel step."""

    def __init__(self, geometry: shapely.Polygon, texture: _Texture, seed: int) -> None:
        self._geometry = geometry
        self._texture = texture
        self._seed = seed

    def tiles(self, level: int, step: float, columns: int, rows: int) -> Iterator[np.ndarray]:
        """Full TILE x TILE tiles of a level, row by row (tifffile crops those at the edges)."""
        for row in range(0, rows, TILE):
            for column in range(0, columns, TILE):
                yield self.paint(column * step, row * step, step, TILE, TILE, (level + 1, row, column))

    def paint(
        self, x0: float, y0: float, step: float, rows: int, columns: int, noise_key: tuple[int, ...]
    ) -> np.ndarray:
        """RGB pixels whose pixel (r, c) is centred at level-0 (x0 + (c + .5) step, y0 + (r + .5) step);
        `noise_key` (non-negative ints) seeds the pixel noise of this piece."""
        xs = x0 + (np.arange(columns) + 0.5) * step
        ys = y0 + (np.arange(rows) + 0.5) * step
        shade = self._texture.sample(xs, ys)[..., None]
        inside = _rasterise(self._geometry, x0, y0, step, step, rows, columns)[..., None]
        colour = np.where(inside, OBJECT_RGB + 18 * shade, BACKGROUND_RGB + 12 * shade)
        noise = np.random.default_rng((self._seed, *noise_key))
        colour += noise.normal(0.0, 3.0, size=(rows, columns, 1)).astype(np.float32)
        return np.clip(colour, 0, 255).astype(np.uint8)


def _write_thumbnail(
    tif: tifffile.TiffWriter, painter: _Painter, width: int, height: int, properties: str
) -> None:
    """The stripped page after level 0 that OpenSlide's Aperio reader takes as the thumbnail."""
    step = max(width, height) / THUMBNAIL_SIZE
    columns, rows = max(1, round(width / step)), max(1, round(height / step))
    pixels = painter.paint(0.0, 0.0, step, rows, columns, (0, 0, 0))
    description = f"Aperio Image Library v12.0.15 \r\n{width}x{height} -> {columns}x{rows} - {properties}"
    _write_page(tif, pixels, (rows, columns), description, tile=False)


def _write_page(
    tif: tifffile.TiffWriter,
    data: np.ndarray | Iterator[np.ndarray],
    shape: tuple[int, int],
    description: str,
    tile: bool = True,
) -> None:
    tif.write(
        data,
        shape=(*shape, 3),
        dtype=np.uint8,
        photometric="rgb",
        tile=(TILE, TILE) if tile else None,
        compression="jpeg",
        compressionargs={"level": JPEG_QUALITY},
        description=description,
        metadata=None,
    )


def _irregular_ellipse(
    center: tuple[float, float], radii: tuple[float, float], rng: np.random.Generator
) -> shapely.Polygon:
    """An ellipse with a seeded smooth perturbation of its radius (harmonics 3 to 6, under 12 %)."""
    angles = np.linspace(0.0, 2 * math.pi, _VERTICES, endpoint=False)
    harmonics = np.arange(3, 7)
    amplitudes = rng.uniform(0.01, 0.03, size=harmonics.size)
    phases = rng.uniform(0, 2 * math.pi, size=harmonics.size)
    scale = 1 + (amplitudes[:, None] * np.cos(harmonics[:, None] * angles + phases[:, None])).sum(axis=0)
    xs = center[0] + radii[0] * scale * np.cos(angles)
    ys = center[1] + radii[1] * scale * np.sin(angles)
    return shapely.Polygon(np.column_stack([xs, ys]))


def _rasterise(
    geometry: shapely.Polygon, x0: float, y0: float, step_x: float, step_y: float, rows: int, columns: int
) -> np.ndarray:
    """Bool mask of the pixels whose centre lies in `geometry` (exterior ring), for a raster whose
    pixel (r, c) is centred at level-0 (x0 + (c + .5) step_x, y0 + (r + .5) step_y)."""
    mask = np.zeros((rows, columns), dtype=np.uint8)
    coords = np.asarray(geometry.exterior.coords)
    pixels = np.column_stack([(coords[:, 0] - x0) / step_x - 0.5, (coords[:, 1] - y0) / step_y - 0.5])
    fixed = np.round(pixels * (1 << _FIXED_POINT_SHIFT)).astype(np.int32)
    cv2.fillPoly(mask, [fixed], 1, lineType=cv2.LINE_8, shift=_FIXED_POINT_SHIFT)
    return mask.astype(bool)
