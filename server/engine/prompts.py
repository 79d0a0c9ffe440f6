"""Wire-independent request types of the engine: where to look, what was clicked, how to draw polygons."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely

from slidesam.server.errors import InvalidArgument
from slidesam.server.slides.regions import Rect, Resolution


@dataclass(frozen=True)
class SlideRef:
    """A slide under the server's slide root."""

    slide_id: str


@dataclass(frozen=True)
class UploadRef:
    """Uploaded pixels and where they sit in level-0 space."""

    sha256: str
    origin_x: float = 0.0
    origin_y: float = 0.0
    downsample: float = 1.0
    mpp: float | None = None
    objective_power: float | None = None


WINDOW_MODES = ("auto", "multi", "single")


@dataclass(frozen=True)
class RegionRequest:
    """An image, a level-0 region and the resolution to segment it at.

    windows: how a region larger than one encoder window at that resolution is segmented: "auto" and
    "multi" go coarse to fine over windows at the resolution asked for, "single" shrinks it into one.
    align_to_grid: a region that fits one window becomes the image's grid window nearest its centre.
    """

    image: SlideRef | UploadRef
    region: Rect
    resolution: Resolution
    windows: str = "auto"
    align_to_grid: bool = False


@dataclass(frozen=True)
class Click:
    x: float
    y: float
    positive: bool


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    width: float
    height: float

    @property
    def corners(self) -> tuple[float, float, float, float]:
        return self.x, self.y, self.x + self.width, self.y + self.height


@dataclass(frozen=True)
class Outline:
    """An existing outline used as the prompt: valid level-0 polygons with area."""

    geometry: shapely.MultiPolygon

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return tuple(self.geometry.bounds)


MAX_OUTLINE_VERTICES = 100_000


@dataclass(frozen=True)
class PolygonRequest:
    """How the client wants masks drawn; zeros mean 'not asked' (server defaults apply)."""

    simplify_tolerance_um: float = 0.0
    simplify_tolerance_px: float = 0.0
    max_vertices: int = 0
    min_area_um2: float = 0.0
    min_area_px: float = 0.0


def require_finite(name: str, value: float) -> float:
    """The value, or InvalidArgument naming the field when it is NaN or infinite."""
    if not math.isfinite(value):
        raise InvalidArgument(f"{name} must be a finite number, got {value}")
    return value


def require_inside(what: str, x: float, y: float, region: Rect) -> None:
    """InvalidArgument unless the level-0 point lies inside the region (edges included)."""
    if not (region.x <= x <= region.x + region.width and region.y <= y <= region.y + region.height):
        raise InvalidArgument(
            f"{what} ({x:g}, {y:g}) lies outside the field of view "
            f"x {region.x:g}..{region.x + region.width:g}, y {region.y:g}..{region.y + region.height:g} (level-0 pixels)"
        )


def validate_click(click: Click, region: Rect) -> Click:
    require_finite("click x", click.x)
    require_finite("click y", click.y)
    require_inside("click", click.x, click.y, region)
    return click


def validate_box(box: Box, region: Rect) -> Box:
    for name in ("x", "y", "width", "height"):
        require_finite(f"box {name}", getattr(box, name))
    if box.width <= 0 or box.height <= 0:
        raise InvalidArgument(f"box width and height must be positive, got {box.width:g} x {box.height:g}")
    x0, y0, x1, y1 = box.corners
    require_inside("box corner", x0, y0, region)
    require_inside("box corner", x1, y1, region)
    return box


def validate_outline(outline: Outline, region: Rect) -> Outline:
    """InvalidArgument unless the outline is non-empty, finite, valid, has area and lies inside the region."""
    geometry = outline.geometry
    if geometry.is_empty:
        raise InvalidArgument("an outline needs at least one polygon with area")
    vertices = shapely.get_num_coordinates(geometry)
    if vertices > MAX_OUTLINE_VERTICES:
        raise InvalidArgument(f"an outline takes at most {MAX_OUTLINE_VERTICES} vertices, got {vertices}")
    if not np.isfinite(shapely.get_coordinates(geometry)).all():
        raise InvalidArgument("outline coordinates must be finite numbers")
    if not geometry.is_valid:
        reason = shapely.is_valid_reason(geometry)
        raise InvalidArgument(f"the outline is not a valid polygon ({reason}); fix or redraw it (e.g. remove the self-intersection)")
    if geometry.area <= 0:
        raise InvalidArgument("the outline has no area")
    x0, y0, x1, y1 = geometry.bounds
    require_inside("outline corner", x0, y0, region)
    require_inside("outline corner", x1, y1, region)
    return outline


def validate_polygon_request(request: PolygonRequest) -> PolygonRequest:
    for name in ("simplify_tolerance_um", "simplify_tolerance_px", "min_area_um2", "min_area_px"):
        value = require_finite(name, getattr(request, name))
        if value < 0:
            raise InvalidArgument(f"{name} must not be negative, got {value:g}")
    if request.max_vertices < 0:
        raise InvalidArgument(f"max_vertices must not be negative, got {request.max_vertices}")
    if 0 < request.max_vertices < 4:
        raise InvalidArgument(f"max_vertices must be 0 (server default) or at least 4, got {request.max_vertices}")
    return request
