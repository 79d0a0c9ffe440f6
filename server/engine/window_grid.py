"""A fixed grid of overlapping encoder windows over an image at one resolution.

Windows are `size` pixels square at the grid's downsample and start every `stride = size - overlap`
pixels from the image's top-left corner; the last column and row are moved inward so that every
window lies inside the image (an image narrower than one window gets windows as narrow as the image).
The grid depends only on the image's extent and the resolution, so its windows (and their embeddings)
are shared by every object on the image, cacheable on disk and precomputable for a whole slide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from slidesam.server.errors import InvalidArgument
from slidesam.server.slides.regions import Rect

DEFAULT_WINDOW = 1024
DEFAULT_OVERLAP = 256
MAX_GRID_WINDOWS = 1_000_000
"""Grids with more windows than this are refused (a resolution far finer than the slide's)."""


@dataclass(frozen=True, order=True)
class WindowIndex:
    column: int
    row: int


@dataclass(frozen=True)
class WindowGrid:
    """Encoder windows over `bounds` (level-0) at `downsample` level-0 px per pixel."""

    bounds: Rect
    downsample: float
    size: int = DEFAULT_WINDOW
    overlap: int = DEFAULT_OVERLAP

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and 64 <= self.size <= 4096):
            raise InvalidArgument(f"grid window size must be an integer from 64 to 4096 pixels, got {self.size!r}")
        if not (isinstance(self.overlap, int) and 0 <= self.overlap <= self.size // 2):
            raise InvalidArgument(
                f"grid overlap must be an integer from 0 to half the window ({self.size // 2}) pixels, got {self.overlap!r}"
            )
        if not (math.isfinite(self.downsample) and self.downsample > 0):
            raise InvalidArgument(f"grid downsample must be a positive finite number, got {self.downsample!r}")
        if min(self.bounds.width, self.bounds.height) / self.downsample < 1:
            raise InvalidArgument(
                f"at downsample {self.downsample:g} this image ({self.bounds.width:g} x {self.bounds.height:g}) is "
                "smaller than one pixel; choose a finer resolution"
            )
        if self.columns * self.rows > MAX_GRID_WINDOWS:
            raise InvalidArgument(
                f"a grid at downsample {self.downsample:g} would have {self.columns * self.rows} windows over this image "
                f"(at most {MAX_GRID_WINDOWS}); choose a coarser resolution"
            )

    @property
    def stride(self) -> int:
        return self.size - self.overlap

    @property
    def key(self) -> str:
        """Names the grid (not the image): resolution (exactly: grids of nearby resolutions differ), window
        size and overlap."""
        return f"ds{repr(float(self.downsample)).removesuffix('.0')}-w{self.size}-o{self.overlap}"

    @property
    def columns(self) -> int:
        return _count(self.bounds.width / self.downsample, self.size, self.stride)

    @property
    def rows(self) -> int:
        return _count(self.bounds.height / self.downsample, self.size, self.stride)

    def window(self, index: WindowIndex) -> Rect:
        """The level-0 rectangle of one window (inside the image)."""
        if not (0 <= index.column < self.columns and 0 <= index.row < self.rows):
            raise InvalidArgument(f"window {index} lies outside the {self.columns} x {self.rows} grid")
        x, width = self._span(index.column, self.bounds.x, self.bounds.width)
        y, height = self._span(index.row, self.bounds.y, self.bounds.height)
        return Rect(x, y, width, height)

    def indices(self) -> list[WindowIndex]:
        """Every window, row by row."""
        return [WindowIndex(column, row) for row in range(self.rows) for column in range(self.columns)]

    def overlapping(self, rect: Rect) -> list[WindowIndex]:
        """The windows whose rectangle overlaps `rect` (with positive area), row by row."""
        columns = self._overlapping(rect.x, rect.right, self.bounds.x, self.bounds.width, self.columns)
        rows = self._overlapping(rect.y, rect.bottom, self.bounds.y, self.bounds.height, self.rows)
        return [WindowIndex(column, row) for row in rows for column in columns]

    def containing(self, x: float, y: float) -> list[WindowIndex]:
        """The windows that contain the level-0 point (x, y)."""
        return [
            index for index in self.overlapping(Rect(x - 1e-6, y - 1e-6, 2e-6, 2e-6))
            if _inside(x, y, self.window(index))
        ]

    def nearest(self, x: float, y: float) -> WindowIndex:
        """The window whose centre is nearest the level-0 point (x, y); ties go to the first."""
        column = _nearest(x, self.bounds.x, self.bounds.width, self.downsample, self.size, self.stride, self.columns)
        row = _nearest(y, self.bounds.y, self.bounds.height, self.downsample, self.size, self.stride, self.rows)
        return WindowIndex(column, row)

    def _span(self, index: int, origin: float, extent: float) -> tuple[float, float]:
        """Start and length (level-0) of window `index` along one axis."""
        pixels = extent / self.downsample
        length = min(self.size, math.floor(pixels + 1e-9))
        start = min(index * self.stride, max(0, math.floor(pixels + 1e-9) - self.size))
        return origin + start * self.downsample, max(1, length) * self.downsample

    def _overlapping(self, start: float, end: float, origin: float, extent: float, count: int) -> list[int]:
        found = []
        for index in range(count):
            low, length = self._span(index, origin, extent)
            if low < end and start < low + length:
                found.append(index)
        return found


def _count(pixels: float, size: int, stride: int) -> int:
    whole = math.floor(pixels + 1e-9)
    if whole <= size:
        return 1
    return 1 + math.ceil((whole - size) / stride)


def _nearest(value: float, origin: float, extent: float, downsample: float, size: int, stride: int, count: int) -> int:
    pixels = math.floor(extent / downsample + 1e-9)
    best, best_distance = 0, math.inf
    for index in range(count):
        start = min(index * stride, max(0, pixels - size))
        centre = origin + (start + min(size, pixels) / 2) * downsample
        distance = abs(centre - value)
        if distance < best_distance:
            best, best_distance = index, distance
    return best


def _inside(x: float, y: float, rect: Rect) -> bool:
    return rect.x <= x <= rect.right and rect.y <= y <= rect.bottom
