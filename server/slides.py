"""Reading regions of an image source (a slide or uploaded pixels) at a requested resolution.

Coordinates are QuPath's: level-0 pixels, floating point, origin top-left. A region is read by
snapping the requested rectangle outward to the pixel grid of the raster it is read from (the
chosen pyramid level, or the uploaded array), reading those pixels and resizing them once;
`RegionImage.rect` is the level-0 rectangle the returned pixels exactly cover.
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

import cv2
import numpy as np
import openslide

from slidesam.server.errors import DataLoss, InvalidArgument, NotFound, PermissionDenied, ResourceExhausted

MAX_REGION_PIXELS = 4096 * 4096
"""Default limit on the pixels of one returned region."""

MAX_READ_PIXELS = 8192 * 8192
"""Default limit on the pixels read from a pyramid level for one region (before resizing)."""

EDGE_TOLERANCE = 1.0
"""Level-0 pixels a rectangle may stick out of the image (rounding) before it is refused."""

LEVEL_TOLERANCE = 0.01
"""A pyramid level whose downsample exceeds the request by at most this fraction is still used
(real slides report level downsamples such as 4.0003 where the request says 4)."""

SLIDE_EXTENSIONS = frozenset(
    {".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide"}
)

_SNAP_EPSILON = 1e-6


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
            if not _is_finite_number(value):
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

    def plan_region(self, rect: Rect, downsample: float) -> tuple[Rect, tuple[int, int]]: ...


def plan_region(
    source: ImageSource, rect: Rect, downsample: float
) -> tuple[Rect, tuple[int, int]]:
    """What `source.read_region(rect, downsample)` would return, without reading pixels: the
    level-0 rectangle covered and the (height, width) of the pixels. Raises the same errors."""
    return source.plan_region(rect, downsample)


def resolve_downsample(
    source: ImageSource, rect: Rect, resolution: Resolution, fit_size: int
) -> float:
    """The level-0 downsample that `resolution` asks for when reading `rect` of `source`."""
    if resolution.kind == "fit":
        rect.validate()
        if not isinstance(fit_size, int) or fit_size <= 0:
            raise InvalidArgument(f"fit size must be a positive integer, got {fit_size!r}")
        return max(1.0, max(rect.width, rect.height) / fit_size)
    value = resolution.value
    if not _is_finite_number(value) or value <= 0:
        raise InvalidArgument(
            f"resolution {resolution.kind} must be a positive finite number, got {value!r}"
        )
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
    raise InvalidArgument(
        f"unknown resolution kind {resolution.kind!r}; use mpp, magnification, downsample or fit"
    )


@dataclass(frozen=True)
class _Grid:
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
        col0, row0, col1, row1 = window
        return Rect(
            self.origin_x + col0 * self.step,
            self.origin_y + row0 * self.step,
            (col1 - col0) * self.step,
            (row1 - row0) * self.step,
        )


def _snap(start: float, end: float, origin: float, step: float, count: int) -> tuple[int, int]:
    first = math.floor((start - origin) / step + _SNAP_EPSILON)
    last = math.ceil((end - origin) / step - _SNAP_EPSILON)
    first = min(max(first, 0), count - 1)
    return first, max(min(last, count), first + 1)


@dataclass(frozen=True)
class _ReadPlan:
    window: tuple[int, int, int, int]  # (col0, row0, col1, row1) in the grid read
    rect: Rect  # level-0 rectangle the window covers
    output_size: tuple[int, int]  # (width, height)
    level: int = 0

    @property
    def rect_and_shape(self) -> tuple[Rect, tuple[int, int]]:
        return self.rect, (self.output_size[1], self.output_size[0])


def _check_request(rect: Rect, downsample: float) -> None:
    rect.validate()
    if not _is_finite_number(downsample) or downsample <= 0:
        raise InvalidArgument(f"downsample must be a positive finite number, got {downsample!r}")


def _plan_read(
    rect: Rect,
    downsample: float,
    bounds: Rect,
    grid: _Grid,
    what: str,
    max_region_pixels: int,
    level: int = 0,
) -> _ReadPlan:
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
    return _ReadPlan(window, covered, (max(1, round(exact_width)), max(1, round(exact_height))), level)


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize HxWx3 pixels to size (width, height): area averaging when shrinking, else linear."""
    height, width = pixels.shape[:2]
    if (width, height) == size:
        return np.array(pixels, dtype=np.uint8, copy=True)
    shrinking = size[0] * size[1] < width * height
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(pixels, size, interpolation=interpolation)


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """HxWx4 uint8 RGBA (straight alpha) to HxWx3 RGB over a white background."""
    rgb, alpha = rgba[..., :3], rgba[..., 3:]
    if np.all(alpha == 255):
        return np.ascontiguousarray(rgb)
    alpha16 = alpha.astype(np.uint16)
    blended = (rgb.astype(np.uint16) * alpha16 + 255 * (255 - alpha16) + 127) // 255
    return blended.astype(np.uint8)


def _region(pixels: np.ndarray, plan: _ReadPlan) -> RegionImage:
    resized = _resize(pixels, plan.output_size)
    return RegionImage(resized, plan.rect, plan.rect.width / resized.shape[1])


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
        self.mpp = _mean_property(
            slide.properties, openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y
        )
        self.objective_power = _mean_property(
            slide.properties, openslide.PROPERTY_NAME_OBJECTIVE_POWER
        )
        self.vendor: str | None = slide.properties.get(openslide.PROPERTY_NAME_VENDOR)
        self.level_downsamples: tuple[float, ...] = tuple(slide.level_downsamples)
        self._max_region_pixels = max_region_pixels
        self._max_read_pixels = max_read_pixels

    @property
    def bounds(self) -> Rect:
        return Rect(0.0, 0.0, float(self.width), float(self.height))

    def plan_region(self, rect: Rect, downsample: float) -> tuple[Rect, tuple[int, int]]:
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
        return _region(composite_on_white(np.asarray(image)), plan)

    def _plan(self, rect: Rect, downsample: float) -> _ReadPlan:
        _check_request(rect, downsample)
        level = self._slide.get_best_level_for_downsample(downsample * (1 + LEVEL_TOLERANCE))
        level_downsample = self.level_downsamples[level]
        columns, rows = self._slide.level_dimensions[level]
        grid = _Grid(0.0, 0.0, level_downsample, columns, rows)
        bounds = Rect(0.0, 0.0, self.width, self.height)
        what = f"the slide ({self.width} x {self.height})"
        plan = _plan_read(rect, downsample, bounds, grid, what, self._max_region_pixels, level)
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
            raise InvalidArgument(
                f"image pixels must be HxWx3 uint8 RGB, got shape {pixels.shape} of {pixels.dtype}"
            )
        for name, value in (("origin x", origin_x), ("origin y", origin_y)):
            if not _is_finite_number(value):
                raise InvalidArgument(f"image {name} must be a finite number, got {value!r}")
        if not _is_finite_number(downsample) or downsample <= 0:
            raise InvalidArgument(f"image downsample must be a positive finite number, got {downsample!r}")
        for name, value in (("mpp", mpp), ("objective power", objective_power)):
            if value is not None and (not _is_finite_number(value) or value <= 0):
                raise InvalidArgument(f"image {name} must be a positive finite number, got {value!r}")
        self._pixels = pixels
        self.cache_key = cache_key
        self.store_identity = f"{cache_key}@{origin_x:.17g},{origin_y:.17g},{downsample:.17g}"
        rows, columns = pixels.shape[:2]
        self._grid = _Grid(float(origin_x), float(origin_y), float(downsample), columns, rows)
        self._bounds = self._grid.covered((0, 0, columns, rows))
        self.width = math.ceil(self._bounds.right - _SNAP_EPSILON)
        self.height = math.ceil(self._bounds.bottom - _SNAP_EPSILON)
        self.mpp = mpp
        self.objective_power = objective_power
        self._max_region_pixels = max_region_pixels

    @property
    def bounds(self) -> Rect:
        return self._bounds

    def plan_region(self, rect: Rect, downsample: float) -> tuple[Rect, tuple[int, int]]:
        """The level-0 rectangle and (height, width) that read_region would return; checks only."""
        return self._plan(rect, downsample).rect_and_shape

    def read_region(self, rect: Rect, downsample: float) -> RegionImage:
        """Crop the array pixels covering `rect` and resize them to `downsample`."""
        plan = self._plan(rect, downsample)
        col0, row0, col1, row1 = plan.window
        return _region(self._pixels[row0:row1, col0:col1], plan)

    def _plan(self, rect: Rect, downsample: float) -> _ReadPlan:
        _check_request(rect, downsample)
        b = self._bounds
        what = (
            f"the uploaded image, which covers x from {b.x:g} to {b.right:g} "
            f"and y from {b.y:g} to {b.bottom:g} in level-0 pixels"
        )
        return _plan_read(rect, downsample, b, self._grid, what, self._max_region_pixels)


class SlideStore:
    """Slides under one root directory, opened on demand, with an LRU of open handles.

    Evicted handles are not closed explicitly: a reader may still hold them, and OpenSlide closes
    a handle when its last reference goes.
    """

    def __init__(
        self,
        root: Path,
        max_open: int = 16,
        max_region_pixels: int = MAX_REGION_PIXELS,
        max_read_pixels: int = MAX_READ_PIXELS,
    ) -> None:
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self._root = Path(root).resolve()
        self._max_open = max_open
        self._max_region_pixels = max_region_pixels
        self._max_read_pixels = max_read_pixels
        self._open: OrderedDict[Path, OpenSlideSource] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        return self._root

    def resolve(self, slide_id: str) -> Path:
        """The real path of a slide id: a relative POSIX path that must stay inside the root."""
        _check_slide_id(slide_id)
        try:
            path = (self._root / slide_id).resolve()
            if not path.is_relative_to(self._root):
                raise PermissionDenied(f"slide id {slide_id!r} leads outside the slide root")
            exists, is_file = path.exists(), path.is_file()
        except (OSError, RuntimeError) as error:  # name too long, symlink loop, ...
            reason = error.strerror if isinstance(error, OSError) else "symlink loop"
            raise InvalidArgument(f"slide id {slide_id!r} cannot be resolved: {reason}") from None
        if not exists:
            raise NotFound(
                f"no slide {slide_id!r} on this server (slide ids are paths relative to the server's slide root)"
            )
        if not is_file:
            kind = "a directory" if path.is_dir() else "a special file (FIFO, socket or device)"
            raise InvalidArgument(f"slide id {slide_id!r} names {kind}, not a slide file")
        return path

    def open(self, slide_id: str) -> OpenSlideSource:
        """The slide as an ImageSource, reusing an open handle while the file is unchanged."""
        path = self.resolve(slide_id)
        stat = path.stat()
        cache_key = f"{path}:{stat.st_size}:{stat.st_mtime_ns}"
        with self._lock:
            source = self._open.get(path)
            if source is not None and source.cache_key == cache_key and not source.damaged:
                self._open.move_to_end(path)
                return source
        source = self._open_source(slide_id, path, cache_key)
        with self._lock:
            self._open[path] = source
            self._open.move_to_end(path)
            while len(self._open) > self._max_open:
                self._open.popitem(last=False)
        return source

    def list_slides(self) -> list[str]:
        """Ids of the files under the root whose extension OpenSlide typically reads, sorted."""
        ids = []
        for directory, _, files in os.walk(self._root):
            for name in files:
                path = Path(directory, name)
                if path.suffix.lower() in SLIDE_EXTENSIONS and self._leads_inside(path):
                    ids.append(path.relative_to(self._root).as_posix())
        return sorted(ids)

    def _leads_inside(self, path: Path) -> bool:
        try:
            return path.resolve().is_relative_to(self._root) and path.is_file()
        except (OSError, RuntimeError):
            return False

    def _open_source(self, slide_id: str, path: Path, cache_key: str) -> OpenSlideSource:
        try:
            slide = openslide.OpenSlide(path)
        except openslide.OpenSlideError as error:
            raise InvalidArgument(f"not a slide OpenSlide can read: {slide_id!r} ({error})") from None
        return OpenSlideSource(slide, cache_key, self._max_region_pixels, self._max_read_pixels)


def _check_slide_id(slide_id: str) -> None:
    if not isinstance(slide_id, str) or not slide_id:
        raise InvalidArgument("slide id is empty; give a path relative to the server's slide root")
    if "\\" in slide_id or "\0" in slide_id:
        raise InvalidArgument(
            f"slide id {slide_id!r} contains a backslash or NUL; use '/' to separate directories"
        )
    path = PurePosixPath(slide_id)
    if path.is_absolute():
        raise InvalidArgument(
            f"slide id {slide_id!r} is absolute; give a path relative to the server's slide root"
        )
    if ".." in path.parts:
        raise InvalidArgument(f"slide id {slide_id!r} contains '..'; ids may not leave the slide root")


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


def _is_finite_number(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return math.isfinite(value)
