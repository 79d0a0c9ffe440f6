"""Stitching a multi-window object: fine-window and coarse logits blended at the resolution asked for.

Fine windows weigh 1 inside and fall towards their edges that lie inside the image, so tile borders
leave no seams; the coarse logits carry a small weight everywhere (they decide only where no fine
window lies). Fine windows decide within a band around the coarse boundary and around the clicks;
farther away the coarse window, which sees the whole object, decides.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from slidesam.server.engine.frames import LowResFrame, resample
from slidesam.server.engine.geometry import RegionTransform
from slidesam.server.engine.prompts import Click
from slidesam.server.engine.results import WindowResult
from slidesam.server.engine.views import TiledView

COARSE_WEIGHT = 0.01
"""Blending weight of the coarse logits; a fine window weighs 1 inside and falls to MIN_WEIGHT at its inner edges."""
MIN_WEIGHT = 1e-3
BAND_ROWS = 1024
"""Canvas rows blended at once (bounds the memory of a large object's canvas)."""
TRUST_BAND = 48
"""Canvas pixels from the coarse boundary within which fine windows decide fully..."""
TRUST_FADE = 48
"""...fading to the coarse decision over this many more."""
CLICK_RADIUS = 96
"""Canvas pixels around each click where fine windows decide fully (a click may carve detail the coarse window misses)."""


def stitch(
    view: TiledView, coarse_values: np.ndarray, coarse_frame: LowResFrame, windows: list[WindowResult], overlap: int,
    clicks: tuple[Click, ...] = (),
) -> np.ndarray:
    """The object's mask (uint8, view.shape) at the resolution asked for: blended window and coarse logits > 0.

    Fine windows decide near the coarse boundary and near the clicks (their trust band); farther away the
    coarse window, which sees the whole object, decides. So a fine window refines the outline but cannot
    invent or drop whole regions that only make sense at the coarse scale.
    """
    canvas = view.transform
    height, width = view.shape
    bounds = view.source.bounds
    mask = np.zeros((height, width), dtype=np.uint8)
    ramp = max(1, overlap)
    boundary_distance = _distance_to_boundary(coarse_values, coarse_frame)
    for top in range(0, height, BAND_ROWS):
        rows = min(BAND_ROWS, height - top)
        trust = _trust(boundary_distance, coarse_frame, canvas, clicks, top, rows, width)
        total = (COARSE_WEIGHT + 1 - trust) * resample(coarse_values, coarse_frame.transform, canvas, (rows, width), (top, 0))
        for window in windows:
            columns = _pixel_span(window.region.x, window.region.right, canvas.x0, canvas.sx, width)
            band_rows = _pixel_span(window.region.y, window.region.bottom, canvas.y0, canvas.sy, height)
            row0, row1 = max(band_rows[0], top), min(band_rows[1], top + rows)
            if row0 >= row1 or columns[0] >= columns[1]:
                continue
            values = resample(window.logits, window.frame.transform, canvas, (row1 - row0, columns[1] - columns[0]), (row0, columns[0]))
            weights = np.outer(
                _ramp(np.arange(row0, row1), canvas.y0, canvas.sy, window.region.y, window.region.bottom, bounds.y, bounds.bottom, ramp),
                _ramp(np.arange(*columns), canvas.x0, canvas.sx, window.region.x, window.region.right, bounds.x, bounds.right, ramp),
            )
            target = (slice(row0 - top, row1 - top), slice(*columns))
            total[target] += weights * trust[target] * values
        mask[top : top + rows] = total > 0
    return mask


def _distance_to_boundary(coarse_values: np.ndarray, frame: LowResFrame) -> np.ndarray:
    """Distance (in low-res pixels of the coarse frame) from each logit to the coarse mask's boundary."""
    inside = (coarse_values > 0).astype(np.uint8)
    if not inside.any():
        return np.full(inside.shape, np.inf, dtype=np.float32)
    outside_distance = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
    inside_distance = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    return np.where(inside > 0, inside_distance, outside_distance).astype(np.float32)


def _trust(
    boundary_distance: np.ndarray, frame: LowResFrame, canvas: RegionTransform, clicks: tuple[Click, ...],
    top: int, rows: int, width: int,
) -> np.ndarray:
    """How much the fine windows decide at each canvas pixel of a band of rows: 1 within TRUST_BAND canvas
    pixels of the coarse boundary or CLICK_RADIUS of a click, fading to 0 over TRUST_FADE more."""
    if np.isinf(boundary_distance).all():
        distance = np.full((rows, width), np.inf, dtype=np.float32)
    else:
        distance = resample(boundary_distance, frame.transform, canvas, (rows, width), (top, 0)) * (frame.transform.sx / canvas.sx)
    reach = CLICK_RADIUS + TRUST_FADE
    for click in clicks:  # only the pixels a click can reach
        column, row = (click.x - canvas.x0) / canvas.sx - 0.5, (click.y - canvas.y0) / canvas.sy - 0.5 - top
        columns = slice(max(0, math.floor(column - reach)), min(width, math.ceil(column + reach) + 1))
        rows_near = slice(max(0, math.floor(row - reach)), min(rows, math.ceil(row + reach) + 1))
        if columns.start >= columns.stop or rows_near.start >= rows_near.stop:
            continue
        dy, dx = np.ogrid[rows_near.start - row : rows_near.stop - row, columns.start - column : columns.stop - column]
        from_click = np.sqrt(dx * dx + dy * dy).astype(np.float32) - (CLICK_RADIUS - TRUST_BAND)
        distance[rows_near, columns] = np.minimum(distance[rows_near, columns], from_click)
    return np.clip(1 - (distance - TRUST_BAND) / TRUST_FADE, 0, 1).astype(np.float32)


def _ramp(pixels: np.ndarray, origin: float, step: float, start: float, end: float, low: float, high: float, ramp: int) -> np.ndarray:
    """Blending weights along one axis: 1 inside the window, falling linearly over `ramp` pixels towards
    each edge that lies inside the image (an edge on the image's border keeps full weight)."""
    centres = origin + (pixels + 0.5) * step
    distance = np.full(len(pixels), np.inf)
    if start > low + 1e-6:
        distance = np.minimum(distance, (centres - start) / step)
    if end < high - 1e-6:
        distance = np.minimum(distance, (end - centres) / step)
    return np.clip(distance / ramp, MIN_WEIGHT, 1.0).astype(np.float32)


def _pixel_span(start: float, end: float, origin: float, step: float, count: int) -> tuple[int, int]:
    """Canvas pixels [first, last) whose centres lie in [start, end)."""
    first = math.ceil((start - origin) / step - 0.5 - 1e-9)
    last = math.ceil((end - origin) / step - 0.5 - 1e-9)
    return max(0, first), min(count, last)
