"""Conversion between the wire contract (slidesam.v1) and the engine's types, validating every field."""

from __future__ import annotations

import math

import numpy as np
import shapely

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1.conventions import STRATEGIES, STRATEGY_NAMES, WINDOW_MODES
from slidesam.server.engine.prompts import (
    MAX_OUTLINE_VERTICES, Box, Click, Outline, PolygonRequest, RegionRequest, SlideRef, UploadRef, require_finite,
)
from slidesam.server.engine.results import Timings
from slidesam.server.engine.session import Outcome
from slidesam.server.engine.views import ModelResolution
from slidesam.server.errors import InvalidArgument
from slidesam.server.models.registry import ModelRegistry
from slidesam.server.slides.regions import Rect, Resolution
from slidesam.server.uploads.store import normalise_image_sha256

MAX_SCALE = 1e6
"""Largest downsample, µm/px or magnification accepted: far beyond any slide, far below float overflow."""
MAX_COORDINATE = 2.0**31
"""Largest level-0 coordinate (absolute) accepted: slides are at most a few hundred thousand pixels wide."""


def _optional_positive(name: str, value: float) -> float | None:
    """0 means unknown; anything else must be finite, positive and at most MAX_SCALE."""
    require_finite(name, value)
    if value < 0 or value > MAX_SCALE:
        raise InvalidArgument(f"{name} must be positive and at most {MAX_SCALE:g} (or 0 for unknown), got {value:g}")
    return value or None


def _coordinate(name: str, value: float) -> float:
    require_finite(name, value)
    if abs(value) > MAX_COORDINATE:
        raise InvalidArgument(f"{name} must lie within ±{MAX_COORDINATE:g} level-0 pixels, got {value:g}")
    return value


def image_from_pb(message: pb.ImageSource) -> SlideRef | UploadRef:
    kind = message.WhichOneof("source")
    if kind == "slide_id":
        if not message.slide_id:
            raise InvalidArgument("field_of_view.image.slide_id is empty")
        return SlideRef(message.slide_id)
    if kind == "uploaded":
        uploaded = message.uploaded
        downsample = _optional_positive("uploaded.downsample", uploaded.downsample) or 1.0
        return UploadRef(
            sha256=normalise_image_sha256(uploaded.sha256),
            origin_x=_coordinate("uploaded.origin_x", uploaded.origin_x),
            origin_y=_coordinate("uploaded.origin_y", uploaded.origin_y),
            downsample=downsample,
            mpp=_optional_positive("uploaded.mpp", uploaded.mpp),
            objective_power=_optional_positive("uploaded.objective_power", uploaded.objective_power),
        )
    raise InvalidArgument("field_of_view.image must name a slide_id or an uploaded image")


def resolution_from_pb(message: pb.Resolution) -> Resolution:
    kind = message.WhichOneof("value")
    if kind is None:
        return Resolution("fit")
    value = getattr(message, kind)
    if not math.isfinite(value) or value <= 0 or value > MAX_SCALE:
        raise InvalidArgument(f"field_of_view.resolution.{kind} must be a positive number of at most {MAX_SCALE:g}, got {value}")
    return Resolution(kind, value)


def field_of_view_from_pb(message: pb.FieldOfView, present: bool = True) -> RegionRequest:
    if not present:
        raise InvalidArgument("a field_of_view is required: an image, a level-0 region and optionally a resolution")
    if not message.HasField("region"):
        raise InvalidArgument("field_of_view.region is required (level-0 x, y, width, height)")
    region = Rect(message.region.x, message.region.y, message.region.width, message.region.height)
    region.validate()
    for name in ("x", "y", "width", "height"):
        _coordinate(f"region {name}", getattr(region, name))
    if message.windows not in _WINDOW_MODE_NAMES:
        raise InvalidArgument(f"unknown window mode {message.windows}; this server knows {sorted(_WINDOW_MODE_NAMES)}")
    return RegionRequest(
        image_from_pb(message.image), region, resolution_from_pb(message.resolution),
        windows=_WINDOW_MODE_NAMES[message.windows], align_to_grid=message.align_to_grid,
    )


_WINDOW_MODE_NAMES = {value: name for name, value in WINDOW_MODES.items()}


def outline_from_pb(polygons) -> Outline:
    """Wire polygons -> an outline prompt (validity and placement are checked against the field of view later)."""
    if not len(polygons):
        raise InvalidArgument("an outline needs at least one polygon (level-0 exterior ring with 3 or more points)")
    vertices = sum(len(ring.xy) // 2 for polygon in polygons for ring in (polygon.exterior, *polygon.holes))
    if vertices > MAX_OUTLINE_VERTICES:
        raise InvalidArgument(f"an outline takes at most {MAX_OUTLINE_VERTICES} vertices, got {vertices}")
    parts = []
    for number, polygon in enumerate(polygons):
        rings = [polygon.exterior, *polygon.holes]
        for ring in rings:
            if len(ring.xy) % 2 or len(ring.xy) < 6:
                raise InvalidArgument(
                    f"outline polygon {number}: a ring needs an even number of coordinates and at least 3 points, got {len(ring.xy)} values"
                )
            if not all(math.isfinite(value) for value in ring.xy):
                raise InvalidArgument(f"outline polygon {number}: coordinates must be finite numbers")
        exterior, *holes = (np.asarray(ring.xy, dtype=np.float64).reshape(-1, 2) for ring in rings)
        parts.append(shapely.Polygon(exterior, holes))
    return Outline(shapely.MultiPolygon(parts))


def clicks_from_pb(messages) -> list[Click]:
    return [Click(m.x, m.y, m.positive) for m in messages]


def box_from_pb(message: pb.Box) -> Box:
    return Box(message.x, message.y, message.width, message.height)


def polygon_request_from_pb(message: pb.PolygonOptions) -> PolygonRequest:
    return PolygonRequest(
        simplify_tolerance_um=message.simplify_tolerance_um,
        simplify_tolerance_px=message.simplify_tolerance_px,
        max_vertices=message.max_vertices,
        min_area_um2=message.min_area_um2,
        min_area_px=message.min_area_px,
    )


def strategy_from_pb(value: int) -> str:
    """The engine's strategy name ('' = server default); InvalidArgument for values this server lacks."""
    if value not in STRATEGY_NAMES:
        raise InvalidArgument(f"unknown prompt strategy {value}; this server knows {sorted(STRATEGY_NAMES)}")
    return STRATEGY_NAMES[value]


def _ring(coordinates: np.ndarray) -> pb.Ring:
    return pb.Ring(xy=coordinates[:-1].ravel().tolist())


def polygons_to_pb(geometry: shapely.MultiPolygon) -> list[pb.Polygon]:
    """Level-0 MultiPolygon -> wire polygons (rings without the repeated closing point)."""
    return [
        pb.Polygon(
            exterior=_ring(shapely.get_coordinates(part.exterior)),
            holes=[_ring(shapely.get_coordinates(hole)) for hole in part.interiors],
        )
        for part in geometry.geoms
    ]


def timings_to_pb(timings: Timings, queue_ms: float) -> pb.Timings:
    return pb.Timings(
        read_ms=timings.read_ms,
        encode_ms=timings.encode_ms,
        decode_ms=timings.decode_ms,
        postprocess_ms=timings.postprocess_ms,
        total_ms=timings.total_ms + queue_ms,
        cache_hit=timings.cache_hit,
        queue_ms=queue_ms,
        windows_encoded=timings.windows_encoded,
        windows_from_store=timings.windows_from_store,
    )


def resolution_to_pb(resolution: ModelResolution) -> pb.ModelResolution:
    return pb.ModelResolution(
        requested_downsample=resolution.requested_downsample,
        requested_mpp=resolution.mpp_at(resolution.requested_downsample) or 0.0,
        encoder_downsample=resolution.encoder_downsample,
        encoder_mpp=resolution.mpp_at(resolution.encoder_downsample) or 0.0,
        downsampled=resolution.downsampled,
        windows=resolution.windows,
        windows_decoded=resolution.windows_decoded,
        coarse_downsample=resolution.coarse_downsample,
    )


def outcome_to_pb(outcome: Outcome, queue_ms: float) -> pb.SegmentationResult:
    step, view = outcome.step, outcome.view
    prediction = step.prediction
    result = pb.SegmentationResult(
        object_id=outcome.object_id,
        polygons=polygons_to_pb(prediction.geometry),
        score=prediction.score,
        area_px=prediction.area_px,
        area_um2=prediction.area_um2 or 0.0,
        mpp_known=view.source.mpp is not None,
        model_id=view.spec.model_id,
        timings=timings_to_pb(outcome.timings, queue_ms),
        clicks=[pb.Click(x=c.x, y=c.y, positive=c.positive) for c in step.clicks],
        step=outcome.step_index,
        can_undo=outcome.can_undo,
        can_redo=outcome.can_redo,
        region=pb.Rect(x=view.region.x, y=view.region.y, width=view.region.width, height=view.region.height),
        downsample=view.downsample,
        strategy=STRATEGIES[outcome.strategy],
        resolution=resolution_to_pb(outcome.resolution),
        outline=polygons_to_pb(step.outline.geometry) if step.outline is not None else [],
    )
    if step.box is not None:
        result.box.CopyFrom(pb.Box(x=step.box.x, y=step.box.y, width=step.box.width, height=step.box.height))
    return result


def model_infos_to_pb(registry: ModelRegistry, devices: list[str] | None = None) -> pb.ListModelsResponse:
    """The registry's models; devices names every device the server runs them on (default: the registry's)."""
    device = ",".join(devices) if devices else str(registry.device)
    models = []
    for name in registry.names():
        spec = registry.spec(name)
        models.append(
            pb.ModelInfo(
                name=spec.name,
                architecture=spec.architecture,
                input_size=spec.input_size,
                checkpoint_sha256=spec.sha256 or "",
                device=device,
                loaded=registry.is_loaded(name),
                is_default=name == registry.default,
                available=registry.is_available(name),
                description=spec.description,
            )
        )
    return pb.ListModelsResponse(models=models)


MAX_OBJECT_ID_LENGTH = 128


def validate_object_id(object_id: str) -> str:
    """A client-chosen object id: up to 128 printable characters (QuPath's UUIDs fit); empty means 'pick one'."""
    if len(object_id) > MAX_OBJECT_ID_LENGTH or not object_id.isprintable():
        raise InvalidArgument(f"object_id must be at most {MAX_OBJECT_ID_LENGTH} printable characters")
    return object_id
