"""The gRPC servicer, one method per RPC: identify the caller, validate, schedule the work on a device,
answer or abort with the status the error maps to."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from functools import partial

import grpc

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc
from slidesam.server import errors
from slidesam.server.edge.affinity import check_affinity_key
from slidesam.server.edge.auth import Authenticator, User
from slidesam.server.edge.interact_steps import InteractSteps, StreamState
from slidesam.server.edge.limits import UserLimiter
from slidesam.server.edge.metrics import ServerMetrics
from slidesam.server.edge.ownership import ObjectOwnership
from slidesam.server.edge.registration import Undecodable, check_decoded
from slidesam.server.edge.request_log import cache_outcome, log_fields, ms_since, observe
from slidesam.server.edge.status import abort
from slidesam.server.edge.stream_guard import StreamGuard
from slidesam.server.edge.wire import (
    box_from_pb, clicks_from_pb, field_of_view_from_pb, model_infos_to_pb, outcome_to_pb, outline_from_pb,
    polygon_request_from_pb, strategy_from_pb,
)
from slidesam.server.engine.devices import DevicePool
from slidesam.server.engine.engine import Engine
from slidesam.server.engine.prompts import Box, Click, Outline, PolygonRequest, RegionRequest, validate_box, validate_click, validate_outline
from slidesam.server.engine.results import Timings
from slidesam.server.engine.scheduler import Priority
from slidesam.server.engine.session import EngineObject, Outcome, check_click_count
from slidesam.server.models.preemption import yield_point
from slidesam.server.slides.regions import Rect
from slidesam.server.uploads.decode_pool import DecodePool

log = logging.getLogger(__name__)


@dataclass
class ServiceParts:
    """What the servicer works with besides the engine."""

    authenticator: Authenticator
    limiter: UserLimiter
    ownership: ObjectOwnership
    metrics: ServerMetrics
    decoding: DecodePool


class SegmentationService(pb_grpc.SegmentationServicer):
    def __init__(self, devices: DevicePool, parts: ServiceParts, max_stream_seconds: float | None = None) -> None:
        self.devices = devices
        self.max_stream_seconds = max_stream_seconds
        self.auth = parts.authenticator
        self.limiter = parts.limiter
        self.ownership = parts.ownership
        self.metrics = parts.metrics
        self.decoding = parts.decoding
        self.steps = InteractSteps(devices, parts.ownership, parts.metrics)

    async def ListModels(self, request: pb.ListModelsRequest | Undecodable, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:
        try:
            self._identify(context)
            check_decoded(request)
        except Exception as error:  # noqa: BLE001
            await abort(context, self.metrics, "ListModels", error)
        self.metrics.requests.labels("ListModels").inc()
        return model_infos_to_pb(self.devices.models, [worker.device for worker in self.devices])

    async def UploadImage(self, request: pb.UploadImageRequest | Undecodable, context: grpc.aio.ServicerContext) -> pb.UploadImageResponse:
        started = time.perf_counter()
        try:
            user = self._identify(context)
            check_decoded(request)
            self.limiter.charge_upload(user, len(request.data))  # the bytes received, whatever the hash claims
            present = bool(request.sha256) and request.sha256.lower() in self.devices.uploads
            image = await self.decoding.run(
                user.name, partial(self.devices.uploads.put, request.data, request.sha256 or None, user.name)
            )
        except Exception as error:  # noqa: BLE001 - every failure becomes a status
            await abort(context, self.metrics, "UploadImage", error)
        height, width = image.pixels.shape[:2]
        self.metrics.requests.labels("UploadImage").inc()
        log.info("UploadImage user=%s sha256=%s %dx%d %.1f ms", user.name, image.sha256[:12], width, height, ms_since(started))
        return pb.UploadImageResponse(sha256=image.sha256, width=width, height=height, already_present=present)

    async def Segment(self, request: pb.SegmentRequest | Undecodable, context: grpc.aio.ServicerContext) -> pb.SegmentResponse:
        started = time.perf_counter()
        try:
            user = self._identify(context)
            check_decoded(request)
            fov = field_of_view_from_pb(request.field_of_view, request.HasField("field_of_view"))
            clicks = clicks_from_pb(request.clicks)
            box = box_from_pb(request.box) if request.HasField("box") else None
            outline = outline_from_pb(request.outline) if len(request.outline) else None
            if not clicks and box is None and outline is None:
                raise errors.InvalidArgument("Segment needs at least one click, a box or an outline")
            check_click_count(len(clicks))
            polygons = polygon_request_from_pb(request.polygon_options)
            strategy = strategy_from_pb(request.strategy)
            worker, _ = await asyncio.to_thread(self.devices.choose, fov, request.model)
            outcome, queue_ms = await worker.scheduler.run(
                partial(_segment, worker.engine, fov, request.model, polygons, strategy, clicks, box, outline),
                user=user.name, priority=Priority.BATCH, deadline=_deadline(context),
            )
        except Exception as error:  # noqa: BLE001
            await abort(context, self.metrics, "Segment", error)
        observe(self.metrics, "Segment", outcome, queue_ms, Priority.BATCH)
        total_ms = ms_since(started)
        log.info(
            "Segment user=%s model=%s object=%s clicks=%d total=%.1f ms queue=%.1f ms cache=%s",
            user.name, outcome.view.spec.model_id, outcome.object_id[:8], len(clicks), total_ms, queue_ms, cache_outcome(outcome),
            extra=log_fields("Segment", user.name, outcome, total_ms, queue_ms),
        )
        return pb.SegmentResponse(result=outcome_to_pb(outcome, queue_ms))

    async def Interact(
        self, request_iterator: AsyncIterator[pb.InteractRequest | Undecodable], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.InteractResponse]:
        try:
            user = self._identify(context)
            self.limiter.open_stream(user)
        except Exception as error:  # noqa: BLE001
            await abort(context, self.metrics, "Interact", error)
        stream = StreamState(user, _deadline(context))
        self.metrics.active_streams.inc()
        guard = StreamGuard(self.auth, context.invocation_metadata(), self.max_stream_seconds)
        try:
            requests = aiter(request_iterator)
            while (request := await guard.watch(anext(requests, None))) is not None:
                guard.check()
                yield await guard.watch(self.steps.answer(stream, request))
        except (errors.Unauthenticated, errors.Unavailable) as error:
            log.info("Interact stream of %s ended: %s", user.name, error)
            await abort(context, self.metrics, "Interact", error)
        finally:
            self.metrics.active_streams.dec()
            self.limiter.close_stream(user)
            if stream.claim is not None:
                log.info("Interact stream of %s closed with object %s open; freed", user.name, stream.claim.object_id[:8])
                self.steps.release(stream)

    def expire_idle_objects(self) -> list[str]:
        """Frees objects nobody used for the idle timeout (called periodically by the app)."""
        expired = self.ownership.expire_idle()
        if expired:
            self.metrics.expired_objects.inc(len(expired))
            self.metrics.open_objects.set(len(self.ownership))
            log.info("expired %d idle objects: %s", len(expired), ", ".join(object_id[:8] for object_id in expired))
        return expired

    def _identify(self, context: grpc.aio.ServicerContext) -> User:
        """The caller, once their token and their affinity key (if they send one) are checked."""
        user = self.auth.identify(context.invocation_metadata())
        check_affinity_key(context.invocation_metadata())
        return user


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline on time.monotonic()'s clock, when the client set one."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _segment(
    engine: Engine, fov: RegionRequest, model: str, polygons: PolygonRequest, strategy: str, clicks: list[Click],
    box: Box | None, outline: Outline | None = None,
) -> Outcome:
    """Segment's work on the device: the outline first, then the box, then each click as its own step, as an
    interactive user would. The timings of the answer add up every step (each window is read and encoded at most once)."""
    started = time.perf_counter()

    def check_prompts(region: Rect) -> None:
        for click in clicks:
            validate_click(click, region)
        if box is not None:
            validate_box(box, region)
        if outline is not None:
            validate_outline(outline, region)

    session, outcome = EngineObject.open(engine, fov, model, polygons, strategy, check_prompts=check_prompts)
    steps = [outcome]
    if outline is not None:
        steps.append(session.set_outline(outline))
    if box is not None:
        steps.append(session.set_box(box))
    for click in clicks:
        yield_point()
        steps.append(session.add_clicks([click]))
    total = Timings(cache_hit=steps[0].timings.cache_hit, total_ms=ms_since(started))
    for step in steps:
        for stage in ("read_ms", "encode_ms", "decode_ms", "postprocess_ms", "windows_encoded", "windows_from_store"):
            setattr(total, stage, getattr(total, stage) + getattr(step.timings, stage))
    return replace(steps[-1], timings=total)
