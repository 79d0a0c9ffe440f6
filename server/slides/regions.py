"""What reading a region deals in: level-0 rectangles, resolutions, the pixels read, and the
ImageSource protocol that slides and uploaded pixels both follow.

Coordinates are QuPath's: level-0 pixels, floating point, origin top-left. A region is read by
snapping the requested rectangle outward to the pixel grid of the raster it is read from (the
chosen pyramid level, or the uploaded array), reading those pixels and resizing them once;
`RegionImage.rect` is the level-0 rectangle the returned pixels exactly cover.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from slidesam.server.errors import InvalidArgument

MAX_REGION_PIXELS = 4096 * 4096
"""Default limit on the pixels of one returned region."""

MAX_READ_PIXELS = 8192 * 8192
"""Default limit on the pixels read from a pyramid level for one region (before resizing)."""


@dataclass(frozen=True)
class Rect:
    """A rectangle in level-0 pixels (QuPath convention: origin top-left, floats allowed)."""

    x: float
    y: float
    width: float
    height: float

    @property
    def right(self) -> float:
        return self.x + self.width

    @property
    def bottom(self) -> float:
        return self.y + self.height

    def validate(self) -> None:
        """Raise InvalidArgument unless all fields are finite and the size is positive."""
        for name in ("x", "y", "width", "height"):
            value = getattr(self, name)
            if not is_finite_number(value):
                raise InvalidArgument(f"region {name} must be a finite number, got {value!r}")
        for name in ("width", "height"):
            if getattr(self, name) <= 0:
                raise InvalidArgument(f"region {name} must be positive, got {getattr(self, name)!r}")

    def describe(self) -> str:
        return f"(x={self.x:g}, y={self.y:g}, width={self.width:g}, height={self.height:g})"


@dataclass(frozen=True)
class Resolution:
    """Exactly one way to say the target resolution.

    `value` is µm/px for "mpp", the objective magnification for "magnification" (5 for x5),
    the level-0 downsample for "downsample"; it is unused for "fit".
    """

    kind: Literal["mpp", "magnification", "downsample", "fit"]
    value: float = 0.0


@dataclass(frozen=True)
class RegionImage:
    """Pixels of a region and the level-0 rectangle they exactly cover."""

    pixels: np.ndarray
    """HxWx3 uint8 RGB, transparency composited over white."""
    rect: Rect
    """The level-0 rectangle the pixels cover (the request snapped outward to the source grid)."""
    downsample: float
    """Level-0 pixels per output pixel along x: rect.width / pixels.shape[1]."""

    @property
    def downsample_y(self) -> float:
        """Level-0 pixels per output pixel along y (equal to `downsample` within one output pixel)."""
        return self.rect.height / self.pixels.shape[0]


class ImageSource(Protocol):
    """Something regions can be read from: a slide or uploaded pixels placed in level-0 space."""

    cache_key: str
    store_identity: str
    """Names the pixels across server restarts (keys the precomputed embedding store)."""
    width: int
    height: int
    mpp: float | None
    objective_power: float | None

    @property
    def bounds(self) -> Rect: ...

    def read_region(self, rect: Rect, downsample: float) -> RegionImage: ...

    def plan_read(self, rect: Rect, downsample: float) -> tuple[Rect, tuple[int, int]]:
        """What `read_region(rect, downsample)` would return, without reading pixels: the level-0
        rectangle covered and the (height, width) of the pixels. Raises the same errors."""
        ...


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """HxWx4 uint8 RGBA (straight alpha) to HxWx3 RGB over a white background."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    if np.all(alpha == 255):
        return np.ascontiguousarray(rgb)
    alpha16 = alpha.astype(np.uint16)
    blended = (rgb.astype(np.uint16) * alpha16 + 255 * (255 - alpha16) + 127) // 255
    return blended.astype(np.uint8)


def is_finite_number(value: object) -> bool:
    """A real number (not a bool), finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(value)
