"""How the pixels of a field of view reach the server: by slide id, or read here and uploaded.

Where the server shares the slide storage, `--slide-map LOCAL_PREFIX=SERVER_PREFIX` turns a QuPath
image path into a server slide id (`/mnt/slides/a/b.svs` with `/mnt/slides=cases` becomes
`cases/a/b.svs`); the server reads the region itself. Otherwise the bridge reads the region here with
OpenSlide, at the downsample the settings ask for, and uploads it as PNG (content-addressed by
SHA-256, so a region crosses the wire once).
"""

from __future__ import annotations

import math
import posixpath
import threading
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Sequence

import cv2
import numpy as np
import openslide

from slidesam.qupath_bridge.fov import MODEL_INPUT, FovSettings
from slidesam.qupath_bridge.project import ImageEntry
from slidesam.qupath_bridge.wire_requests import FieldOfView, SlideImage, UploadedRegion

_LEVEL_TOLERANCE = 1e-6


class SlideUnreadable(Exception):
    """The slide is missing or OpenSlide cannot read it; the message names it."""


@dataclass(frozen=True)
class SlideMap:
    """Rules LOCAL_PREFIX -> SERVER_PREFIX; the longest matching local prefix wins."""

    rules: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, specs: Sequence[str]) -> "SlideMap":
        rules = []
        for spec in specs:
            local, separator, server = spec.partition("=")
            if not separator or not local:
                raise ValueError(f"--slide-map expects LOCAL_PREFIX=SERVER_PREFIX, got {spec!r}")
            rules.append((local, server.strip("/")))
        return cls(tuple(sorted(rules, key=lambda rule: -len(rule[0]))))

    def slide_id(self, image: ImageEntry) -> str | None:
        candidates = [PurePath(image.path).as_posix() if image.path is not None else None, image.uri]
        for local, server in self.rules:
            for candidate in candidates:
                if candidate and candidate.startswith(local):
                    rest = candidate[len(local):].lstrip("/")
                    return posixpath.join(server, rest) if server else rest
        return None


class LocalSlides:
    """OpenSlide handles by path, opened once and shared by threads (OpenSlide reads are thread-safe)."""

    def __init__(self) -> None:
        self._handles: dict[str, openslide.OpenSlide] = {}
        self._lock = threading.Lock()

    def open(self, path: PurePath) -> openslide.OpenSlide:
        key = str(path)
        with self._lock:
            if key not in self._handles:
                if not Path(key).is_file():
                    raise SlideUnreadable(f"the slide {key} does not exist")
                try:
                    self._handles[key] = openslide.OpenSlide(key)
                except (openslide.OpenSlideError, OSError) as error:
                    raise SlideUnreadable(f"OpenSlide cannot read {key}: {error}") from None
            return self._handles[key]

    def size(self, path: PurePath) -> tuple[int, int]:
        return self.open(path).dimensions

    def thumbnail(self, path: PurePath, max_side: int) -> tuple[np.ndarray, float]:
        """RGB thumbnail whose longer side is about max_side, and its level-0 pixels per thumbnail pixel."""
        slide = self.open(path)
        image = np.asarray(slide.get_thumbnail((max_side, max_side)).convert("RGB"))
        return image, slide.dimensions[0] / image.shape[1]

    def downsample(self, path: PurePath, rect: tuple[int, int, int, int], settings: FovSettings) -> float:
        """The level-0 downsample the settings ask for over rect, from the slide's µm/px and objective power."""
        slide = self.open(path)
        if settings.downsample is not None:
            return settings.downsample
        if settings.mpp is not None:
            return settings.mpp / _property(slide, openslide.PROPERTY_NAME_MPP_X, path, "µm per pixel (use --downsample)")
        if settings.magnification is not None:
            return _property(slide, openslide.PROPERTY_NAME_OBJECTIVE_POWER, path, "objective power (use --downsample)") / settings.magnification
        return max(1.0, max(rect[2], rect[3]) / MODEL_INPUT)

    def pixel_size(self, path: PurePath) -> tuple[float | None, float | None]:
        """The slide's level-0 µm per pixel and objective power (None where it does not record them)."""
        slide = self.open(path)
        return _optional_property(slide, openslide.PROPERTY_NAME_MPP_X), _optional_property(slide, openslide.PROPERTY_NAME_OBJECTIVE_POWER)

    def read(self, path: PurePath, origin: tuple[int, int], size: tuple[int, int], downsample: float) -> np.ndarray:
        """RGB pixels (rows x columns x 3) whose pixel (c, r) covers level-0 origin + [c, c+1) * downsample (same for
        rows), from the pyramid level nearest below that downsample; beyond the slide's edge it is white."""
        slide = self.open(path)
        columns, rows = size
        level = slide.get_best_level_for_downsample(downsample * (1 + _LEVEL_TOLERANCE))
        level_downsample = slide.level_downsamples[level]
        read = (math.ceil(columns * downsample / level_downsample), math.ceil(rows * downsample / level_downsample))
        rgb = _on_white(np.asarray(slide.read_region(origin, level, read)))
        if read != (columns, rows):
            rgb = cv2.resize(rgb, (columns, rows), interpolation=cv2.INTER_AREA)
        return rgb

    def region(self, path: PurePath, rect: tuple[int, int, int, int], downsample: float) -> UploadedRegion:
        """The level-0 rect read at downsample, as PNG placed at its level-0 origin.

        The image is ceil(w / downsample) x ceil(h / downsample) pixels, so it covers the whole rect;
        what lies beyond the slide's edge is white."""
        x, y, width, height = rect
        rgb = self.read(path, (x, y), (math.ceil(width / downsample), math.ceil(height / downsample)), downsample)
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if not ok:
            raise SlideUnreadable(f"could not encode the region {rect} of {path} as PNG")
        mpp, objective_power = self.pixel_size(path)
        return UploadedRegion(png.tobytes(), origin_x=x, origin_y=y, downsample=downsample, mpp=mpp, objective_power=objective_power)

    def close(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                handle.close()
            self._handles.clear()


class PixelSource:
    """Turns an image and a level-0 region into the field of view the server is sent."""

    def __init__(self, slide_map: SlideMap, local: LocalSlides):
        self.slide_map = slide_map
        self.local = local

    def size(self, image: ImageEntry) -> tuple[int, int]:
        """The image's level-0 size: from the project, else from the slide file."""
        if image.width and image.height:
            return int(image.width), int(image.height)
        if image.path is None:
            raise SlideUnreadable(f"{image.name}: its size is unknown and {image.uri} is not a local file")
        return self.local.size(image.path)

    def field_of_view(self, image: ImageEntry, rect: tuple[int, int, int, int], settings: FovSettings) -> FieldOfView:
        slide_id = self.slide_map.slide_id(image)
        if slide_id is not None:
            return FieldOfView(
                SlideImage(slide_id), *map(float, rect),
                mpp=settings.mpp, magnification=settings.magnification, downsample=settings.downsample,
                windows=settings.windows, align_to_grid=settings.align_to_grid,
            )
        if image.path is None:
            raise SlideUnreadable(f"{image.name}: {image.uri} is not a local file, and no --slide-map names it on the server")
        downsample = self.local.downsample(image.path, rect, settings)
        return FieldOfView(
            self.local.region(image.path, rect, downsample), *map(float, rect), downsample=downsample,
            windows=settings.windows, align_to_grid=settings.align_to_grid,
        )


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """OpenSlide's RGBA (transparent outside the slide) composited on white."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    return np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def _optional_property(slide: openslide.OpenSlide, name: str) -> float | None:
    try:
        value = float(slide.properties[name])
    except (KeyError, ValueError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _property(slide: openslide.OpenSlide, name: str, path: PurePath, what: str) -> float:
    value = _optional_property(slide, name)
    if value is None:
        raise SlideUnreadable(f"{path} does not record its {what}")
    return value
