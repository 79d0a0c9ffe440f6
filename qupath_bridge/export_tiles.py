"""Where training patches are cut: windows around an object (tiled when it is larger than one), windows in
the band around it for negatives, masks rasterised into a window, and whether a patch shows tissue.

A `Window` is a patch of `columns` x `rows` pixels at `downsample` level-0 pixels per pixel whose top-left
corner is the whole level-0 pixel (x, y): patch pixel (c, r) covers level-0 [x + c * d, x + (c + 1) * d) x
[y + r * d, y + (r + 1) * d), its centre at x + (c + 0.5) * d, as the server's `RegionTransform` and
`geometry_to_mask` have it (the bridge does not import the server; a test holds the two equal).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import shapely

from slidesam.qupath_bridge.tissue import TissueSettings

_SHIFT = 8
"""Fixed-point fraction bits of the vertices cv2 draws (as the server's geometry_to_mask)."""
MIN_TISSUE = 0.5
"""A negative patch is in tissue when at least this share of its pixels is stained (saturation, `tissue_fraction`)."""
_DIRECTIONS = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)]
_RINGS = 2


@dataclass(frozen=True)
class Window:
    """A patch placed on level 0; `tile` is its (column, row) in the object's tiling (None: not tiled)."""

    x: int
    y: int
    columns: int
    rows: int
    downsample: float
    tile: tuple[int, int] | None = None

    @property
    def box(self) -> shapely.Polygon:
        """The level-0 rectangle the patch covers."""
        return shapely.box(self.x, self.y, self.x + self.columns * self.downsample, self.y + self.rows * self.downsample)


def object_windows(
    bounds: tuple[float, float, float, float], image_size: tuple[int, int], downsample: float,
    context: float, min_size: int, window: int, overlap: int,
) -> list[Window]:
    """The patches around an object with level-0 bounds (x0, y0, x1, y1): its box grown by `context` times its
    longer side on every side, to at least `min_size` pixels, inside the image; one patch when that fits
    `window` pixels, else window-sized tiles overlapping by `overlap` (starting every window - overlap pixels,
    the last moved inward to end at the box's edge), row by row."""
    x0, y0, x1, y1 = bounds
    pad = context * max(x1 - x0, y1 - y0)
    left, columns = _span(x0 - pad, x1 + pad, min_size, image_size[0], downsample)
    top, rows = _span(y0 - pad, y1 + pad, min_size, image_size[1], downsample)
    if columns <= window and rows <= window:
        return [Window(left, top, columns, rows, downsample)]
    return [
        Window(left + round(u * downsample), top + round(v * downsample), min(window, columns), min(window, rows), downsample, (i, j))
        for j, v in enumerate(_starts(rows, window, window - overlap))
        for i, u in enumerate(_starts(columns, window, window - overlap))
    ]


def negative_windows(
    bounds: tuple[float, float, float, float], side: int, downsample: float, image_size: tuple[int, int], rng: np.random.Generator,
) -> list[Window]:
    """Candidate negatives in the band around an object with level-0 bounds (x0, y0, x1, y1): square patches
    of `side` pixels beside its box in the 8 directions, touching it and one patch farther out, inside the
    image, in the order `rng` shuffles them into."""
    x0, y0, x1, y1 = bounds
    extent = side * downsample
    candidates = []
    for ring in range(1, _RINGS + 1):
        for dx, dy in _DIRECTIONS:
            cx = (x0 + x1) / 2 + dx * ((x1 - x0) / 2 + (ring - 0.5) * extent)
            cy = (y0 + y1) / 2 + dy * ((y1 - y0) / 2 + (ring - 0.5) * extent)
            x, y = math.floor(cx - extent / 2), math.floor(cy - extent / 2)
            if x >= 0 and y >= 0 and x + extent <= image_size[0] and y + extent <= image_size[1]:
                candidates.append(Window(x, y, side, side, downsample))
    return [candidates[i] for i in rng.permutation(len(candidates))]


def rasterise(geometry: shapely.Geometry, window: Window) -> np.ndarray:
    """uint8 mask of the window (255 = object): pixels whose centre lies inside or on the geometry's polygons,
    holes cleared (their boundary kept), largest exterior drawn first so islands in holes survive."""
    mask = np.zeros((window.rows, window.columns), dtype=np.uint8)
    polygons = [p for p in shapely.get_parts(geometry) if isinstance(p, shapely.Polygon) and not p.is_empty]
    for polygon in sorted(polygons, key=lambda p: -shapely.Polygon(p.exterior).area):
        cv2.fillPoly(mask, [_fixed_point(polygon.exterior, window)], 255, cv2.LINE_8, _SHIFT)
        for hole in polygon.interiors:
            points = _fixed_point(hole, window)
            cv2.fillPoly(mask, [points], 0, cv2.LINE_8, _SHIFT)
            cv2.polylines(mask, [points], True, 255, 1, cv2.LINE_8, _SHIFT)
    return mask


def tissue_fraction(rgb: np.ndarray) -> float:
    """The share of pixels that are stained: HSV saturation at least `TissueSettings.min_saturation` (glass is
    near white, tissue coloured)."""
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    return float((saturation >= TissueSettings().min_saturation).mean())


def _fixed_point(ring: shapely.LinearRing, window: Window) -> np.ndarray:
    """Ring -> int32 pixel-centre indices of the window, scaled by 2**_SHIFT, as cv2 drawing takes them."""
    indices = (shapely.get_coordinates(ring) - (window.x, window.y)) / window.downsample - 0.5
    return np.round(indices * (1 << _SHIFT)).astype(np.int32)


def _span(start: float, end: float, min_size: int, limit: int, downsample: float) -> tuple[int, int]:
    """Level-0 [start, end] grown to min_size pixels around its centre, moved inside [0, limit]: the whole
    level-0 pixel it starts at and its length in pixels (the last pixel inside the image)."""
    size = min(max(end - start, min_size * downsample), limit)
    low = min(max((start + end) / 2 - size / 2, 0.0), limit - size)
    origin = math.floor(low)
    return origin, max(1, min(math.ceil((low + size - origin) / downsample), math.floor((limit - origin) / downsample)))


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Tile starts along `length` pixels: every stride, the last moved inward to end at the edge."""
    count = 1 + math.ceil(max(0, length - window) / stride)
    return sorted({min(k * stride, max(0, length - window)) for k in range(count)})
