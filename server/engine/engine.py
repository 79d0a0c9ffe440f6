"""The engine: resolve a field of view, embed it once (cached), decode prompts, draw polygons.

Everything here is blocking and runs on the model worker thread; the gRPC layer never calls torch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import shapely
import torch

from server.engine.cache import EmbeddingCache, EmbeddingKey
from server.engine.prompts import Box, Click, FieldOfView, PolygonRequest, SlideRef, UploadRef, validate_polygon_request
from server.errors import InvalidArgument
from server.geometry import PolygonOptions, RegionTransform, mask_to_geometry
from server.models.preemption import yield_point
from server.models.registry import ModelRegistry, ModelSpec
from server.engine.strategies import strategy_named
from server.models.sam import Candidates, DecodeInput, ImageEmbedding, SamModel
from server.slides import ArrayImageSource, ImageSource, Rect, SlideStore, plan_region, resolve_downsample
from server.uploads import UploadStore


@dataclass
class Timings:
    """Milliseconds spent in each stage of one request (server side)."""

    read_ms: float = 0.0
    encode_ms: float = 0.0
    decode_ms: float = 0.0
    postprocess_ms: float = 0.0
    queue_ms: float = 0.0
    total_ms: float = 0.0
    cache_hit: bool = False


@dataclass(frozen=True)
class View:
    """A field of view resolved against one image and one model: everything a click needs."""

    spec: ModelSpec
    model: SamModel
    source: ImageSource
    region: Rect                  # level-0 rectangle actually read (snapped to whole pixels)
    downsample: float
    shape: tuple[int, int]        # (H, W) of the region as read
    key: EmbeddingKey

    @property
    def transform(self) -> RegionTransform:
        height, width = self.shape
        return RegionTransform(self.region.x, self.region.y, self.region.width / width, self.region.height / height)

    def to_sam_coordinates(self, points: np.ndarray) -> np.ndarray:
        """N x 2 level-0 points -> SAM's pixel-index coordinates in the region (SAM adds 0.5 for the centre)."""
        return self.transform.to_region(points) - 0.5


@dataclass(frozen=True)
class Prediction:
    """One decoded mask, as polygons in level-0 space."""

    geometry: shapely.MultiPolygon
    score: float
    logits: torch.Tensor | None
    area_px: float
    area_um2: float | None


EMPTY_PREDICTION = Prediction(shapely.MultiPolygon(), 0.0, None, 0.0, None)


CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class EngineConfig:
    fit_size: int = 1024                 # 'fit' resolution: longest side of the region read
    default_strategy: str = "plain"      # which candidate mask a step keeps (strategies.py)
    default_max_vertices: int = 4000     # vertex budget when a request sets none
    cache_dtype: str = "float32"         # how cached embeddings are stored: float32 or float16 (half the bytes)


@dataclass
class Engine:
    """Turns fields of view and prompts into polygons, reusing embeddings across clicks."""

    models: ModelRegistry
    slides: SlideStore
    uploads: UploadStore
    cache: EmbeddingCache
    config: EngineConfig = field(default_factory=EngineConfig)

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

    def resolve_view(self, fov: FieldOfView, model_name: str) -> View:
        """Validates the field of view against its image and picks the model (no pixels read yet)."""
        spec, model = self.models.get(model_name)
        source = self.open_source(fov.image)
        fov.region.validate()
        downsample = resolve_downsample(source, fov.region, fov.resolution, self.config.fit_size)
        region, shape = plan_region(source, fov.region, downsample)
        key = EmbeddingKey(spec.model_id, source.cache_key, (region.x, region.y, region.width, region.height), downsample)
        return View(spec, model, source, region, downsample, shape, key)

    def is_cached(self, fov: FieldOfView, model_name: str) -> bool:
        """Whether opening fov needs no encode (its model is loaded and its embedding cached).

        Cheap and thread-safe: lets the scheduler treat such an open as light work. Invalid input
        raises the same error the open would.
        """
        if not self.models.is_loaded(self.models.spec(model_name).name):
            return False
        return self.resolve_view(fov, model_name).key in self.cache

    def embedding(self, view: View, timings: Timings) -> ImageEmbedding:
        """The view's embedding from the cache, or read + encode + store on a miss."""
        cached = self.cache.get(view.key)
        if cached is not None:
            timings.cache_hit = True
            return cached
        started = time.perf_counter()
        image = view.source.read_region(view.region, view.downsample)
        yield_point()
        read_done = time.perf_counter()
        embedding = view.model.encode(image.pixels)
        timings.read_ms = (read_done - started) * 1e3
        timings.encode_ms = (time.perf_counter() - read_done) * 1e3
        self.cache.put(view.key, embedding.with_dtype(CACHE_DTYPES[self.config.cache_dtype]))
        return embedding

    def decode_input(
        self, view: View, clicks: tuple[Click, ...], box: Box | None, previous_logits: torch.Tensor | None, timings: Timings
    ) -> DecodeInput:
        """The decoder pass for these prompts: the view's embedding (read + encoded on a cache miss)
        and the prompts in SAM's coordinates."""
        embedding = self.embedding(view, timings)
        points = labels = None
        if clicks:
            points = view.to_sam_coordinates(np.array([(c.x, c.y) for c in clicks], dtype=np.float64))
            labels = np.array([1 if c.positive else 0 for c in clicks], dtype=np.int64)
        sam_box = None
        if box is not None:
            sam_box = view.to_sam_coordinates(np.array(box.corners, dtype=np.float64).reshape(2, 2)).ravel()
        return DecodeInput(embedding, points, labels, sam_box, previous_logits)

    def prediction(
        self,
        view: View,
        decode: DecodeInput,
        candidates: Candidates,
        new_clicks: int,
        strategy: str,
        polygons: PolygonOptions,
        timings: Timings,
    ) -> Prediction:
        """Keeps one candidate mask by the named strategy (see strategies.py), upscales it and draws its polygons."""
        labels = decode.labels if decode.labels is not None else np.zeros(0, np.int64)
        first_single_click = decode.previous_logits is None and decode.box is None and len(labels) == 1
        started = time.perf_counter()
        index = strategy_named(strategy)(candidates, labels, new_clicks, decode.previous_logits, first_single_click)
        logits = candidates.logits[index]
        mask = view.model.upscale(decode.embedding, logits)
        upscaled_at = time.perf_counter()
        yield_point()
        geometry = mask_to_geometry(mask, view.transform, polygons)
        timings.decode_ms += (upscaled_at - started) * 1e3
        timings.postprocess_ms = (time.perf_counter() - upscaled_at) * 1e3
        area_px = float(geometry.area)
        mpp = view.source.mpp
        score = float(candidates.scores[index])
        return Prediction(geometry, score, logits[None, None], area_px, area_px * mpp * mpp if mpp else None)

    def polygon_options(self, view: View, request: PolygonRequest) -> PolygonOptions:
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
        return PolygonOptions(tolerance_level0=tolerance, max_vertices=max_vertices, min_area_level0=min_area)
