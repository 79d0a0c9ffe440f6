"""The engine: resolve a field of view, embed it once (cached), decode prompts, draw polygons.

Everything here is blocking and runs on the model worker thread; the gRPC layer never calls torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import shapely
import torch

from slidesam.server.engine.cache import EmbeddingCache, EmbeddingKey
from slidesam.server.engine.embedding_store import EmbeddingStore, StoreKey
from slidesam.server.engine.frames import low_res_frame, outline_logits, outline_points
from slidesam.server.engine.geometry import PolygonLimits, mask_to_geometry
from slidesam.server.engine.prompts import (
    WINDOW_MODES, Box, Click, Outline, PolygonRequest, RegionRequest, SlideRef, UploadRef, validate_polygon_request,
)
from slidesam.server.engine.results import ChosenMask, Prediction, Timings, WindowResult
from slidesam.server.engine.strategies import strategy_named
from slidesam.server.engine.views import GridWindow, ModelResolution, TiledView, View
from slidesam.server.engine.window_grid import DEFAULT_OVERLAP, WindowGrid, WindowIndex
from slidesam.server.errors import InvalidArgument, ResourceExhausted
from slidesam.server.models.preemption import yield_point
from slidesam.server.models.registry import ModelRegistry, ModelSpec
from slidesam.server.models.served import Candidates, DecodeInput, ImageEmbedding, ServedModel
from slidesam.server.slides.array_source import ArrayImageSource
from slidesam.server.slides.read_plan import resolve_downsample
from slidesam.server.slides.regions import ImageSource, Rect
from slidesam.server.slides.store import SlideStore
from slidesam.server.uploads.store import UploadStore

CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class EngineConfig:
    fit_size: int = 1024                 # 'fit' resolution: longest side of the region read
    default_strategy: str = "plain"      # which candidate mask a step keeps (strategies.py)
    default_max_vertices: int = 4000     # vertex budget when a request sets none
    cache_dtype: str = "float32"         # how cached embeddings are stored: float32 or float16 (half the bytes)
    window_overlap: int = DEFAULT_OVERLAP  # pixels adjacent grid windows share (multi-window objects, precompute)
    max_object_pixels: int = 10240 * 10240  # largest multi-window field of view, in pixels at the resolution asked for
    max_step_encodes: int = 64           # fine-window encodes one step of a multi-window object may need


@dataclass
class Engine:
    """Turns fields of view and prompts into polygons, reusing embeddings across clicks."""

    models: ModelRegistry
    slides: SlideStore
    uploads: UploadStore
    cache: EmbeddingCache
    config: EngineConfig = field(default_factory=EngineConfig)
    store: EmbeddingStore | None = None   # precomputed grid-window embeddings on disk (read only here)

    def open_source(self, image: SlideRef | UploadRef) -> ImageSource:
        if isinstance(image, SlideRef):
            return self.slides.open(image.slide_id)
        uploaded = self.uploads.get(image.sha256)
        return ArrayImageSource(
            uploaded.pixels,
            cache_key=f"sha256:{uploaded.sha256}",
            origin_x=image.origin_x,
            origin_y=image.origin_y,
            downsample=image.downsample,
            mpp=image.mpp,
            objective_power=image.objective_power,
        )

    def resolve(self, fov: RegionRequest, model_name: str) -> View | TiledView:
        """The field of view as one window, or as a multi-window view when it is larger than one
        encoder window at the resolution asked for (and the request allows it). No pixels are read."""
        if fov.windows not in WINDOW_MODES:
            raise InvalidArgument(f"unknown window mode {fov.windows!r}; use one of {', '.join(WINDOW_MODES)}")
        spec, model = self.models.get(model_name)
        source = self.open_source(fov.image)
        fov.region.validate()
        downsample = resolve_downsample(source, fov.region, fov.resolution, self.config.fit_size)
        if fov.resolution.kind != "fit":
            larger = _pixels_at(fov.region, downsample) > model.input_size + 1
            if larger and fov.windows != "single":
                return self._tiled_view(spec, model, source, fov, downsample)
            if fov.align_to_grid and not larger:
                grid = self.grid(source, downsample, model.input_size)
                centre = (fov.region.x + fov.region.width / 2, fov.region.y + fov.region.height / 2)
                index = grid.nearest(*centre)
                return self._view(spec, model, source, grid.window(index), downsample, GridWindow(grid, index))
        return self._view(spec, model, source, fov.region, downsample)

    def resolve_view(self, fov: RegionRequest, model_name: str) -> View:
        """The field of view as one window (whatever its size)."""
        return self.resolve(replace(fov, windows="single"), model_name)

    def grid(self, source: ImageSource, downsample: float, window: int) -> WindowGrid:
        """The image's fixed grid of encoder windows at this resolution."""
        return WindowGrid(source.bounds, downsample, window, self.config.window_overlap)

    def window_view(self, tiled: TiledView, index: WindowIndex) -> View:
        """One fine window of a multi-window view."""
        grid = tiled.grid
        return self._view(tiled.spec, tiled.model, tiled.source, grid.window(index), grid.downsample, GridWindow(grid, index))

    @staticmethod
    def window_region(tiled: TiledView, index: WindowIndex) -> tuple[Rect, tuple[int, int]]:
        """The level-0 rectangle and (H, W) a fine window is read as (without reading it)."""
        return tiled.source.plan_read(tiled.grid.window(index), tiled.grid.downsample)

    def _view(
        self, spec: ModelSpec, model: ServedModel, source: ImageSource, rect: Rect, downsample: float,
        grid_window: GridWindow | None = None,
    ) -> View:
        region, shape = source.plan_read(rect, downsample)
        key = EmbeddingKey(spec.model_id, source.cache_key, (region.x, region.y, region.width, region.height), downsample)
        return View(spec, model, source, region, downsample, shape, key, grid_window)

    def _tiled_view(self, spec: ModelSpec, model: ServedModel, source: ImageSource, fov: RegionRequest, downsample: float) -> TiledView:
        exact_height, exact_width = fov.region.height / downsample, fov.region.width / downsample
        if not math.isfinite(exact_height * exact_width) or exact_height * exact_width > self.config.max_object_pixels:
            raise ResourceExhausted(
                f"region {fov.region.describe()} at downsample {downsample:g} would be {exact_width:.0f} x {exact_height:.0f} pixels, more "
                f"than this server segments as one object ({self.config.max_object_pixels} pixels); choose a coarser "
                "resolution or a smaller region"
            )
        height, width = math.ceil(exact_height - 1e-9), math.ceil(exact_width - 1e-9)
        coarse_downsample = max(downsample, max(fov.region.width, fov.region.height) / model.input_size)
        coarse = self._view(spec, model, source, fov.region, coarse_downsample)
        grid = self.grid(source, downsample, model.input_size)
        return TiledView(spec, model, source, fov.region, downsample, (height, width), grid, coarse)

    def is_cached(self, fov: RegionRequest, model_name: str) -> bool:
        """Whether opening fov needs no encode (its model is loaded and its embedding cached).

        Cheap and thread-safe: lets the scheduler treat such an open as light work. Invalid input
        raises the same error the open would.
        """
        if not self.models.is_loaded(self.models.spec(model_name).name):
            return False
        view = self.resolve(fov, model_name)
        view = view.coarse if isinstance(view, TiledView) else view
        return view.key in self.cache

    def embedding(self, view: View, timings: Timings) -> ImageEmbedding:
        """The view's embedding: from the cache, else from the precomputed store (grid windows), else
        read + encode; kept in the cache."""
        cached = self.cache.get(view.key)
        if cached is not None:
            timings.cache_hit = True
            return cached
        stored = self._from_store(view)
        if stored is not None:
            timings.windows_from_store += 1
            self.cache.put(view.key, stored.with_dtype(CACHE_DTYPES[self.config.cache_dtype]))
            return stored
        started = time.perf_counter()
        image = view.source.read_region(view.region, view.downsample)
        yield_point()
        read_done = time.perf_counter()
        embedding = view.model.encode(image.pixels)
        timings.read_ms += (read_done - started) * 1e3
        timings.encode_ms += (time.perf_counter() - read_done) * 1e3
        timings.windows_encoded += 1
        self.cache.put(view.key, embedding.with_dtype(CACHE_DTYPES[self.config.cache_dtype]))
        return embedding

    def has_embedding(self, view: View) -> bool:
        """Whether the view's embedding needs no encode: it is cached, or precomputed in the store (the file is
        there; it is read and checked only when used)."""
        if view.key in self.cache:
            return True
        key = self._store_key(view)
        return key is not None and self.store.has_file(key)

    def _store_key(self, view: View) -> StoreKey | None:
        if self.store is None or view.grid_window is None:
            return None
        grid, index = view.grid_window.grid, view.grid_window.index
        return StoreKey(
            view.spec.model_id, view.spec.sha256 or "", view.source.store_identity, grid.key, index,
            (view.region.x, view.region.y, view.region.width, view.region.height), view.downsample,
        )

    def _from_store(self, view: View) -> ImageEmbedding | None:
        key = self._store_key(view)
        if key is None:
            return None
        stored = self.store.get(key)
        if stored is None:
            return None
        return stored.to(view.model.device)

    def resolution(self, view: View, windows_decoded: int) -> ModelResolution:
        """The resolution a single-window result was made at."""
        return ModelResolution(view.downsample, view.encoder_downsample, view.source.mpp, 1, windows_decoded)

    def decode_input(
        self,
        view: View,
        clicks: tuple[Click, ...],
        box: Box | None,
        previous_logits: torch.Tensor | None,
        timings: Timings,
        outline: Outline | None = None,
    ) -> DecodeInput:
        """The decoder pass for these prompts: the view's embedding (read + encoded on a cache miss)
        and the prompts in SAM's coordinates.

        An outline adds points inside it before the clicks, its box when no box is given, and, on its
        first step (no previous logits), its mask as SAM's mask input."""
        embedding = self.embedding(view, timings)
        points, labels = list(clicks), []
        if outline is not None:
            frame = low_res_frame(view.region, embedding)
            points = [Click(x, y, True) for x, y in outline_points(outline.geometry, frame)] + points
            box = box or _outline_box(outline, view.region)
            if previous_logits is None:
                previous_logits = torch.as_tensor(outline_logits(outline.geometry, frame), device=view.model.device)[None, None]
        sam_points = None
        if points:
            sam_points = view.to_sam_coordinates(np.array([(c.x, c.y) for c in points], dtype=np.float64))
            labels = np.array([1 if c.positive else 0 for c in points], dtype=np.int64)
        sam_box = None
        if box is not None:
            sam_box = view.to_sam_coordinates(np.array(box.corners, dtype=np.float64).reshape(2, 2)).ravel()
        return DecodeInput(embedding, sam_points, labels if points else None, sam_box, previous_logits)

    def choose(
        self, view: View, decode: DecodeInput, candidates: Candidates, new_clicks: int, strategy: str, timings: Timings,
    ) -> ChosenMask:
        """Keeps one candidate mask by the named strategy (see strategies.py) and upscales it on the model's
        device (model thread: it runs the model)."""
        labels = decode.labels if decode.labels is not None else np.zeros(0, np.int64)
        first_single_click = decode.previous_logits is None and decode.box is None and len(labels) == 1
        started = time.perf_counter()
        index = strategy_named(strategy)(candidates, labels, new_clicks, decode.previous_logits, first_single_click)
        logits = candidates.logits[index].clone()  # a copy: a view would keep all the candidates' logits alive
        crop = view.model.upscale(decode.embedding, logits)
        timings.decode_ms += (time.perf_counter() - started) * 1e3
        return ChosenMask(crop, float(candidates.scores[index]), logits[None, None])

    def polygons_of(self, view: View, chosen: ChosenMask, polygons: PolygonLimits, timings: Timings) -> Prediction:
        """The chosen mask's polygons and areas (host work: runs on any thread, not only the model's)."""
        started = time.perf_counter()
        geometry = mask_to_geometry(chosen.crop.mask, view.transform, polygons, chosen.crop.origin)
        timings.postprocess_ms = (time.perf_counter() - started) * 1e3
        return self.assemble(view.source, geometry, chosen.score, chosen.logits, self.resolution(view, 1))

    @staticmethod
    def assemble(
        source: ImageSource, geometry: shapely.MultiPolygon, score: float, logits: torch.Tensor | None,
        resolution: ModelResolution, windows: Mapping[WindowIndex, WindowResult] | None = None,
    ) -> Prediction:
        """A Prediction with its areas in level-0 px² and µm²."""
        area_px = float(geometry.area)
        mpp = source.mpp
        return Prediction(geometry, score, logits, area_px, area_px * mpp * mpp if mpp else None, resolution, windows or {})

    def polygon_limits(self, view: View, request: PolygonRequest) -> PolygonLimits:
        """Client polygon settings in level-0 pixels; µm settings need the image's mpp."""
        validate_polygon_request(request)
        mpp = view.source.mpp
        if (request.simplify_tolerance_um or request.min_area_um2) and not mpp:
            raise InvalidArgument(
                "simplify_tolerance_um and min_area_um2 need a known µm per pixel, and this image has none; "
                "use simplify_tolerance_px / min_area_px instead"
            )
        tolerance = request.simplify_tolerance_px or (request.simplify_tolerance_um / mpp if mpp else 0.0)
        min_area = request.min_area_px or (request.min_area_um2 / (mpp * mpp) if mpp else 0.0)
        max_vertices = request.max_vertices or self.config.default_max_vertices
        if not (math.isfinite(tolerance) and math.isfinite(min_area)):
            raise InvalidArgument("polygon options overflow: choose smaller values")
        return PolygonLimits(tolerance_level0=tolerance, max_vertices=max_vertices, min_area_level0=min_area)


def _pixels_at(region: Rect, downsample: float) -> float:
    """The longer side of a region in pixels at a downsample."""
    return max(region.width, region.height) / downsample


OUTLINE_BOX_MARGIN = 0.1
"""An outline's box prompt is its bounds grown by this share of their size on each side: a crude outline
drawn inside the object, or beside it, must not cap where the object may reach."""


def _outline_box(outline: Outline, region: Rect) -> Box:
    """The outline's bounds grown by OUTLINE_BOX_MARGIN per side, clamped to the region."""
    x0, y0, x1, y1 = outline.bounds
    grow_x, grow_y = OUTLINE_BOX_MARGIN * (x1 - x0), OUTLINE_BOX_MARGIN * (y1 - y0)
    x0, y0 = max(region.x, x0 - grow_x), max(region.y, y0 - grow_y)
    x1, y1 = min(region.right, x1 + grow_x), min(region.bottom, y1 + grow_y)
    return Box(x0, y0, x1 - x0, y1 - y0)

