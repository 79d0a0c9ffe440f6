"""Planning a read: the downsample a resolution asks for, the window of a raster that covers a
level-0 rectangle, the size of the pixels returned, the limits checked before any pixel is read,
and the one resize of the pixels read."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from slidesam.server.errors import InvalidArgument, ResourceExhausted
from slidesam.server.slides.regions import ImageSource, Rect, RegionImage, Resolution, is_finite_number

EDGE_TOLERANCE = 1.0
"""Level-0 pixels a rectangle may stick out of the image (rounding) before it is refused."""

SNAP_EPSILON = 1e-6
"""Grid steps a rectangle's edge may miss a pixel boundary by and still snap to it."""


def resolve_downsample(source: ImageSource, rect: Rect, resolution: Resolution, fit_size: int) -> float:
    """The level-0 downsample that `resolution` asks for when reading `rect` of `source`."""
    if resolution.kind == "fit":
        rect.validate()
        if not isinstance(fit_size, int) or fit_size <= 0:
            raise InvalidArgument(f"fit size must be a positive integer, got {fit_size!r}")
        return max(1.0, max(rect.width, rect.height) / fit_size)
    value = resolution.value
    if not is_finite_number(value) or value <= 0:
        raise InvalidArgument(f"resolution {resolution.kind} must be a positive finite number, got {value!r}")
    if resolution.kind == "downsample":
        return float(value)
    if resolution.kind == "mpp":
        if source.mpp is None:
            raise InvalidArgument(
                "this image has no known pixel size (µm/px); ask for a downsample or a magnification instead"
            )
        return value / source.mpp
    if resolution.kind == "magnification":
        if source.objective_power is None:
            raise InvalidArgument(
                "this image has no known objective power; ask for a downsample or a resolution in µm/px instead"
            )
        return source.objective_power / value
    raise InvalidArgument(f"unknown resolution kind {resolution.kind!r}; use mpp, magnification, downsample or fit")


@dataclass(frozen=True)
class Grid:
    """A raster placed in level-0 space: pixel (row, col) covers origin + [col, col+1) * step."""

    origin_x: float
    origin_y: float
    step: float
    columns: int
    rows: int

    def window(self, rect: Rect) -> tuple[int, int, int, int]:
        """Pixel bounds (col0, row0, col1, row1) of the smallest window covering `rect`, clamped."""
        col0, col1 = _snap(rect.x, rect.right, self.origin_x, self.step, self.columns)
        row0, row1 = _snap(rect.y, rect.bottom, self.origin_y, self.step, self.rows)
        return col0, row0, col1, row1

    def covered(self, window: tuple[int, int, int, int]) -> Rect:
        """The level-0 rectangle a pixel window covers."""
        col0, row0, col1, row1 = window
        return Rect(
            self.origin_x + col0 * self.step,
            self.origin_y + row0 * self.step,
            (col1 - col0) * self.step,
            (row1 - row0) * self.step,
        )


def _snap(start: float, end: float, origin: float, step: float, count: int) -> tuple[int, int]:
    first = math.floor((start - origin) / step + SNAP_EPSILON)
    last = math.ceil((end - origin) / step - SNAP_EPSILON)
    first = min(max(first, 0), count - 1)
    return first, max(min(last, count), first + 1)


@dataclass(frozen=True)
class ReadPlan:
    """The pixels to read from a raster and the size they are resized to."""

    window: tuple[int, int, int, int]  # (col0, row0, col1, row1) in the grid read
    rect: Rect  # level-0 rectangle the window covers
    output_size: tuple[int, int]  # (width, height)
    level: int = 0

    @property
    def rect_and_shape(self) -> tuple[Rect, tuple[int, int]]:
        """What `ImageSource.plan_read` answers: the rectangle covered and the (height, width) returned."""
        return self.rect, (self.output_size[1], self.output_size[0])


def check_request(rect: Rect, downsample: float) -> None:
    """InvalidArgument unless the rectangle is valid and the downsample positive and finite."""
    rect.validate()
    if not is_finite_number(downsample) or downsample <= 0:
        raise InvalidArgument(f"downsample must be a positive finite number, got {downsample!r}")


def plan_in_grid(
    rect: Rect, downsample: float, bounds: Rect, grid: Grid, what: str, max_region_pixels: int, level: int = 0,
) -> ReadPlan:
    """Check a valid request against `bounds`; work out the window to read and the output size."""
    if (
        rect.x < bounds.x - EDGE_TOLERANCE
        or rect.y < bounds.y - EDGE_TOLERANCE
        or rect.right > bounds.right + EDGE_TOLERANCE
        or rect.bottom > bounds.bottom + EDGE_TOLERANCE
    ):
        raise InvalidArgument(f"region {rect.describe()} lies outside {what}")
    window = grid.window(rect)
    covered = grid.covered(window)
    exact_width, exact_height = covered.width / downsample, covered.height / downsample
    if not (math.isfinite(exact_width) and math.isfinite(exact_height)) or exact_width * exact_height > max_region_pixels:
        raise ResourceExhausted(
            f"region {rect.describe()} at downsample {downsample:g} would be {exact_width:.0f} x {exact_height:.0f} pixels, "
            f"more than this server allows ({max_region_pixels} pixels); "
            "choose a coarser resolution or a smaller region"
        )
    return ReadPlan(window, covered, (max(1, round(exact_width)), max(1, round(exact_height))), level)


def region_image(pixels: np.ndarray, plan: ReadPlan) -> RegionImage:
    """The pixels read for a plan, resized once to its output size."""
    resized = _resize(pixels, plan.output_size)
    return RegionImage(resized, plan.rect, plan.rect.width / resized.shape[1])


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize HxWx3 pixels to size (width, height): area averaging when shrinking, else linear."""
    height, width = pixels.shape[:2]
    if (width, height) == size:
        return np.array(pixels, dtype=np.uint8, copy=True)
    shrinking = size[0] * size[1] < width * height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(pixels, size, interpolation=interpolation)
