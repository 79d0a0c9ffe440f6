"""Regions of RGB pixels held in memory (uploaded images), placed in level-0 space where the client
says they sit on its slide."""

from __future__ import annotations

import math

import numpy as np

from slidesam.server.errors import InvalidArgument
from slidesam.server.slides.read_plan import SNAP_EPSILON, Grid, ReadPlan, check_request, plan_in_grid, region_image
from slidesam.server.slides.regions import MAX_REGION_PIXELS, Rect, RegionImage, is_finite_number


class ArrayImageSource:
    """An ImageSource over RGB pixels placed in level-0 space.

    The array covers level-0 [origin_x, origin_x + W * downsample) x [origin_y, origin_y + H * downsample):
    this is how uploaded pixels are served, with the client saying where they sit on its slide.
    """

    def __init__(
        self,
        pixels: np.ndarray,
        cache_key: str,
        origin_x: float = 0.0,
        origin_y: float = 0.0,
        downsample: float = 1.0,
        mpp: float | None = None,
        objective_power: float | None = None,
        max_region_pixels: int = MAX_REGION_PIXELS,
    ) -> None:
        if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
            raise InvalidArgument(f"image pixels must be HxWx3 uint8 RGB, got shape {pixels.shape} of {pixels.dtype}")
        for name, value in (("origin x", origin_x), ("origin y", origin_y)):
            if not is_finite_number(value):
                raise InvalidArgument(f"image {name} must be a finite number, got {value!r}")
        if not is_finite_number(downsample) or downsample <= 0:
            raise InvalidArgument(f"image downsample must be a positive finite number, got {downsample!r}")
        for name, value in (("mpp", mpp), ("objective power", objective_power)):
            if value is not None and (not is_finite_number(value) or value <= 0):
                raise InvalidArgument(f"image {name} must be a positive finite number, got {value!r}")
        self._pixels = pixels
        self.cache_key = cache_key
        self.store_identity = f"{cache_key}@{origin_x:.17g},{origin_y:.17g},{downsample:.17g}"
        rows, columns = pixels.shape[:2]
        self._grid = Grid(float(origin_x), float(origin_y), float(downsample), columns, rows)
        self._bounds = self._grid.covered((0, 0, columns, rows))
        self.width = math.ceil(self._bounds.right - SNAP_EPSILON)
        self.height = math.ceil(self._bounds.bottom - SNAP_EPSILON)
        self.mpp = mpp
        self.objective_power = objective_power
        self._max_region_pixels = max_region_pixels

    @property
    def bounds(self) -> Rect:
        return self._bounds

    def plan_read(self, rect: Rect, downsample: float) -> tuple[Rect, tuple[int, int]]:
        """The level-0 rectangle and (height, width) that read_region would return; checks only."""
        return self._plan(rect, downsample).rect_and_shape

    def read_region(self, rect: Rect, downsample: float) -> RegionImage:
        """Crop the array pixels covering `rect` and resize them to `downsample`."""
        plan = self._plan(rect, downsample)
        col0, row0, col1, row1 = plan.window
        return region_image(self._pixels[row0:row1, col0:col1], plan)

    def _plan(self, rect: Rect, downsample: float) -> ReadPlan:
        check_request(rect, downsample)
        b = self._bounds
        what = (
            f"the uploaded image, which covers x from {b.x:g} to {b.right:g} "
            f"and y from {b.y:g} to {b.bottom:g} in level-0 pixels"
        )
        return plan_in_grid(rect, downsample, b, self._grid, what, self._max_region_pixels)
