"""Regions of a slide file read through OpenSlide: the best pyramid level for the downsample asked
for, then one resize."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

import numpy as np
import openslide

from slidesam.server.errors import DataLoss, ResourceExhausted
from slidesam.server.slides.read_plan import Grid, ReadPlan, check_request, plan_in_grid, region_image
from slidesam.server.slides.regions import MAX_READ_PIXELS, MAX_REGION_PIXELS, Rect, RegionImage, composite_on_white

LEVEL_TOLERANCE = 0.01
"""A pyramid level whose downsample exceeds the request by at most this fraction is still used
(real slides report level downsamples such as 4.0003 where the request says 4)."""


class OpenSlideSource:
    """An ImageSource over an open OpenSlide handle."""

    def __init__(
        self,
        slide: openslide.OpenSlide,
        cache_key: str,
        max_region_pixels: int = MAX_REGION_PIXELS,
        max_read_pixels: int = MAX_READ_PIXELS,
    ) -> None:
        self._slide = slide
        self.cache_key = cache_key
        self.store_identity = _slide_identity(slide, cache_key)
        self.damaged = False  # a read failed: the store opens a fresh handle for the next request
        self.width, self.height = slide.dimensions
        self.mpp = _mean_property(slide.properties, openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y)
        self.objective_power = _mean_property(slide.properties, openslide.PROPERTY_NAME_OBJECTIVE_POWER)
        self.vendor: str | None = slide.properties.get(openslide.PROPERTY_NAME_VENDOR)
        self.level_downsamples: tuple[float, ...] = tuple(slide.level_downsamples)
        self._max_region_pixels = max_region_pixels
        self._max_read_pixels = max_read_pixels

    @property
    def bounds(self) -> Rect:
        return Rect(0.0, 0.0, float(self.width), float(self.height))

    def plan_read(self, rect: Rect, downsample: float) -> tuple[Rect, tuple[int, int]]:
        """The level-0 rectangle and (height, width) that read_region would return; checks only."""
        return self._plan(rect, downsample).rect_and_shape

    def read_region(self, rect: Rect, downsample: float) -> RegionImage:
        """Read `rect` at `downsample` from the best pyramid level, resized once."""
        plan = self._plan(rect, downsample)
        col0, row0, col1, row1 = plan.window
        level_downsample = self.level_downsamples[plan.level]
        location = (round(col0 * level_downsample), round(row0 * level_downsample))
        try:
            image = self._slide.read_region(location, plan.level, (col1 - col0, row1 - row0))
        except openslide.OpenSlideError as error:
            self.damaged = True  # OpenSlide's handle fails every read after this one; the store reopens it
            raise DataLoss(f"the slide file is damaged: pyramid level {plan.level} of {rect.describe()} cannot be decoded ({error})") from None
        return region_image(composite_on_white(np.asarray(image)), plan)

    def _plan(self, rect: Rect, downsample: float) -> ReadPlan:
        check_request(rect, downsample)
        level = self._slide.get_best_level_for_downsample(downsample * (1 + LEVEL_TOLERANCE))
        level_downsample = self.level_downsamples[level]
        columns, rows = self._slide.level_dimensions[level]
        grid = Grid(0.0, 0.0, level_downsample, columns, rows)
        bounds = Rect(0.0, 0.0, self.width, self.height)
        what = f"the slide ({self.width} x {self.height})"
        plan = plan_in_grid(rect, downsample, bounds, grid, what, self._max_region_pixels, level)
        col0, row0, col1, row1 = plan.window
        read_pixels = (col1 - col0) * (row1 - row0)
        if read_pixels > self._max_read_pixels:
            levels = ", ".join(f"{d:g}" for d in self.level_downsamples)
            raise ResourceExhausted(
                f"region {rect.describe()} at downsample {downsample:g} needs {read_pixels} pixels "
                f"read from pyramid level {level} (downsample {level_downsample:g}), more than this "
                f"server allows ({self._max_read_pixels}); choose a smaller region, or a downsample "
                f"at or just above one of the slide's levels ({levels})"
            )
        return plan


def _slide_identity(slide: openslide.OpenSlide, cache_key: str) -> str:
    """OpenSlide's quickhash of the slide's content when it has one, else a hash of path, size and mtime."""
    quickhash = slide.properties.get("openslide.quickhash-1")
    if quickhash:
        return f"openslide-quickhash-1:{quickhash}"
    return "file:" + hashlib.sha256(cache_key.encode()).hexdigest()


def _mean_property(properties: Mapping[str, str], *names: str) -> float | None:
    """Mean of the named properties that parse as positive finite numbers, else None."""
    values = []
    for name in names:
        try:
            value = float(properties[name])
        except (KeyError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            values.append(value)
    return sum(values) / len(values) if values else None
