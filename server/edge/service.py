"""The gRPC servicer: identify the caller, validate, schedule the work on the model, map errors to status codes."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, replace
from functools import partial

import grpc
from google.protobuf.message import DecodeError
from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc

from slidesam.server import errors
from slidesam.server.edge.auth import Authenticator, User
from slidesam.server.uploads.decode_pool import DecodePool
from slidesam.server.engine.engine import Engine, Timings
from slidesam.server.engine.devices import DevicePool, DeviceWorker
from slidesam.server.engine.scheduler import Priority
from slidesam.server.engine.prompts import validate_box, validate_click, validate_outline
from slidesam.server.engine.session import ObjectSession, Outcome, check_click_count
from slidesam.server.edge.limits import UserLimiter
from slidesam.server.edge.metrics import ServerMetrics
from slidesam.server.models.preemption import yield_point
from slidesam.server.edge.ownership import Claim, ObjectOwnership
from slidesam.server.slides import Rect
from slidesam.server.edge.wire import (
    box_from_pb,
    clicks_from_pb,
    field_of_view_from_pb,
    model_infos_to_pb,
    outcome_to_pb,
    outline_from_pb,
    polygon_request_from_pb,
    strategy_from_pb,
    validate_object_id,
)

log = logging.getLogger(__name__)

_STATUS_OF = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelUnavailable: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    errors.Cancelled: grpc.StatusCode.CANCELLED,
    errors.DataLoss: grpc.StatusCode.DATA_LOSS,
}
_INTERNAL_MESSAGE = "internal error while serving this request; the server log has the details"
RETRY_AFTER_METADATA = "retry-after-ms"
RECHECK_SECONDS = 0.5
"""How often an open Interact stream checks its token while it waits for or works on a step."""


def status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for an exception."""
    for kind, code in _STATUS_OF.items():
        if isinstance(error, kind):
            return code, str(error)
    return grpc.StatusCode.INTERNAL, _INTERNAL_MESSAGE


def _retry_after_ms(error: Exception) -> int:
    seconds = getattr(error, "retry_after_s", None)
    return max(1, round(seconds * 1e3)) if seconds else 0


@dataclass(eq=False)
class _Stream:
    """What one Interact stream holds: its user and at most one open object."""

    user: User
    deadline: float | None
    session: ObjectSession | None = None
    worker: DeviceWorker | None = None  # the device the open object lives on
    claim: Claim | None = None
    detached: str = ""  # why the last object was taken away (expired, reopened elsewhere)

    def detach(self, reason: str) -> None:
        self.session, self.worker, self.claim, self.detached = None, None, None, reason


@dataclass
class ServiceParts:
    """What the servicer works with besides the engine."""

    authenticator: Authenticator
    limiter: UserLimiter
    ownership: ObjectOwnership
    metrics: ServerMetrics
    decoding: DecodePool


class SegmentationService(pb_grpc.SegmentationServicer):
    def __init__(self, devices: DevicePool, parts: ServiceParts, max_stream_seconds: float | None = None):
        self.devices = devices
        self.max_stream_seconds = max_stream_seconds
        self.auth = parts.authenticator
        self.limiter = parts.limiter
        self.ownership = parts.ownership
        self.metrics = parts.metrics
        self.decoding = parts.decoding

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        try:
            self._identify(context)
            _decoded(request)
        except Exception as error:  # noqa: BLE001
            await self._abort(context, "ListModels", error)
        self.metrics.requests.labels("ListModels").inc()
        return model_infos_to_pb(self.devices.models, [worker.device for worker in self.devices])

    async def UploadImage(self, request: pb.UploadImageRequest, context) -> pb.UploadImageResponse:
        started = time.perf_counter()
        try:
            user = self._identify(context)
            _decoded(request)
            self.limiter.charge_upload(user, len(request.data))  # the bytes received, whatever the hash claims
            present = bool(request.sha256) and request.sha256.lower() in self.devices.uploads
            image = await self.decoding.run(
                user.name, partial(self.devices.uploads.put, request.data, request.sha256 or None, user.name)
            )
        except Exception as error:  # noqa: BLE001 - every failure becomes a status
            await self._abort(context, "UploadImage", error)
        height, width = image.pixels.shape[:2]
        self.metrics.requests.labels("UploadImage").inc()
        log.info("UploadImage user=%s sha256=%s %dx%d %.1f ms", user.name, image.sha256[:12], width, height, _ms_since(started))
        return pb.UploadImageResponse(sha256=image.sha256, width=width, height=height, already_present=present)

    async def Segment(self, request: pb.SegmentRequest, context) -> pb.SegmentResponse:
        started = time.perf_counter()
        try:
            user = self._identify(context)
            _decoded(request)
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
            await self._abort(context, "Segment", error)
        self._observe("Segment", outcome, queue_ms, Priority.BATCH)
        total_ms = _ms_since(started)
        log.info(
            "Segment user=%s model=%s object=%s clicks=%d total=%.1f ms queue=%.1f ms cache=%s",
            user.name, outcome.view.spec.model_id, outcome.object_id[:8], len(clicks), total_ms, queue_ms, _hit(outcome),
            extra=_fields("Segment", user.name, outcome, total_ms, queue_ms),
        )
        return pb.SegmentResponse(result=outcome_to_pb(outcome, queue_ms))

    async def Interact(self, request_iterator, context):
        try:
            user = self._identify(context)
            self.limiter.open_stream(user)
        except Exception as error:  # noqa: BLE001
            await self._abort(context, "Interact", error)
        stream = _Stream(user, _deadline(context))
        self.metrics.active_streams.inc()
        guard = _StreamGuard(self.auth, context.invocation_metadata(), self.max_stream_seconds)
        try:
            requests = aiter(request_iterator)
            while (request := await guard.watch(anext(requests, None))) is not None:
                guard.check()
                yield await guard.watch(self._interact_step(stream, request))
        except (errors.Unauthenticated, errors.Unavailable) as error:
            log.info("Interact stream of %s ended: %s", user.name, error)
            await self._abort(context, "Interact", error)
        finally:
            self.metrics.active_streams.dec()
            self.limiter.close_stream(user)
            if stream.claim is not None:
                log.info("Interact stream of %s closed with object %s open; freed", user.name, stream.claim.object_id[:8])
                self._release(stream)

    async def _interact_step(self, stream: _Stream, request: pb.InteractRequest | Undecodable) -> pb.InteractResponse:
        started = time.perf_counter()
        if isinstance(request, Undecodable):  # answered with request_id 0: its own id could not be read
            self.metrics.errors.labels("Interact", "INVALID_ARGUMENT").inc()
            error = pb.StepError(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=str(request.error()))
            return pb.InteractResponse(request_id=0, error=error)
        action = request.WhichOneof("action")
        try:
            outcome, queue_ms = await self._apply(stream, request, action)
        except Exception as error:  # noqa: BLE001 - a bad step must not end the stream
            code, message = status_of(error)
            self.metrics.errors.labels(f"Interact.{action}", code.name).inc()
            if code is grpc.StatusCode.INTERNAL:
                log.exception("Interact %s failed", action)
            else:
                log.info("Interact %s user=%s refused (%s): %s", action, stream.user.name, code.name, message,
                         extra={"method": f"Interact.{action}", "user": stream.user.name, "code": code.name})
            error_pb = pb.StepError(code=code.value[0], message=message, retry_after_ms=_retry_after_ms(error))
            return pb.InteractResponse(request_id=request.request_id, error=error_pb)
        self._observe(f"Interact.{action}", outcome, queue_ms, Priority.INTERACTIVE)
        if action in ("clicks", "box", "outline"):
            self.metrics.click_seconds.observe(_ms_since(started) / 1e3)
        total_ms = _ms_since(started)
        log.info(
            "Interact %s user=%s model=%s object=%s step=%d total=%.1f ms queue=%.1f ms decode=%.1f ms cache=%s",
            action, stream.user.name, outcome.view.spec.model_id, outcome.object_id[:8], outcome.step_index,
            total_ms, queue_ms, outcome.timings.decode_ms, _hit(outcome),
            extra=_fields(f"Interact.{action}", stream.user.name, outcome, total_ms, queue_ms),
        )
        return pb.InteractResponse(request_id=request.request_id, result=outcome_to_pb(outcome, queue_ms))

    async def _apply(self, stream: _Stream, request: pb.InteractRequest, action: str | None) -> tuple[Outcome, float]:
        if action is None:
            raise errors.InvalidArgument("an InteractRequest needs an action: open, clicks, box, outline, undo, redo, reset or finish")
        if action == "open":
            return await self._open(stream, request.open)
        session = stream.session
        if session is None:
            if stream.detached:
                raise errors.FailedPrecondition(stream.detached)
            raise errors.FailedPrecondition(f"no object is open on this stream: send `open` with a field of view before `{action}`")
        if action == "finish":
            self._release(stream)
            return session.finish(), 0.0
        run = partial(self._runner(stream, stream.worker), light=session.light_steps, batchable=session.light_steps)
        with self.ownership.using(stream.claim):
            if action == "clicks":
                check_click_count(len(request.clicks.clicks))
                clicks = clicks_from_pb(request.clicks.clicks)
                return await run(partial(session.pending_clicks, clicks))
            if action == "box":
                if not request.box.HasField("box"):
                    raise errors.InvalidArgument("a box message needs a box (level-0 x, y, width, height)")
                return await run(partial(session.pending_box, box_from_pb(request.box.box)))
            if action == "outline":
                return await run(partial(session.pending_outline, outline_from_pb(request.outline.polygons)))
            return {"undo": session.undo, "redo": session.redo, "reset": session.reset}[action](), 0.0

    @staticmethod
    def _runner(stream: _Stream, worker: DeviceWorker):
        """Schedules a stream's work on a device as interactive work of its user, within its deadline."""
        return partial(worker.scheduler.run, user=stream.user.name, priority=Priority.INTERACTIVE, deadline=stream.deadline)

    async def _open(self, stream: _Stream, opening: pb.OpenObject) -> tuple[Outcome, float]:
        fov = field_of_view_from_pb(opening.field_of_view, opening.HasField("field_of_view"))
        polygons = polygon_request_from_pb(opening.polygon_options)
        strategy = strategy_from_pb(opening.strategy)
        object_id = validate_object_id(opening.object_id) or uuid.uuid4().hex
        worker, cached = await asyncio.to_thread(self.devices.choose, fov, opening.model)
        claim = self.ownership.claim(object_id, stream.user.name, stream.detach)
        try:
            with self.ownership.using(claim):
                (session, outcome), queue_ms = await self._runner(stream, worker)(
                    partial(ObjectSession.open, worker.engine, fov, opening.model, polygons, strategy, object_id), light=cached
                )
        except BaseException:
            self.ownership.release(claim)
            raise
        if stream.claim is not None and stream.claim is not claim:
            self.ownership.release(stream.claim)
        stream.session, stream.worker, stream.claim, stream.detached = session, worker, claim, ""
        self.metrics.open_objects.set(len(self.ownership))
        return outcome, queue_ms

    def _release(self, stream: _Stream) -> None:
        if stream.claim is not None:
            self.ownership.release(stream.claim)
        stream.detach("")
        self.metrics.open_objects.set(len(self.ownership))

    def expire_idle_objects(self) -> list[str]:
        """Frees objects nobody used for the idle timeout (called periodically by the app)."""
        expired = self.ownership.expire_idle()
        if expired:
            self.metrics.expired_objects.inc(len(expired))
            self.metrics.open_objects.set(len(self.ownership))
            log.info("expired %d idle objects: %s", len(expired), ", ".join(object_id[:8] for object_id in expired))
        return expired

    def _identify(self, context: grpc.aio.ServicerContext) -> User:
        return self.auth.identify(context.invocation_metadata())

    def _observe(self, method: str, outcome: Outcome, queue_ms: float, priority: Priority) -> None:
        self.metrics.requests.labels(method).inc()
        self.metrics.queue_seconds.labels(priority.name.lower()).observe(queue_ms / 1e3)
        if outcome.timings.encode_ms:
            self.metrics.encode_seconds.observe(outcome.timings.encode_ms / 1e3)

    async def _abort(self, context: grpc.aio.ServicerContext, method: str, error: Exception) -> None:
        code, message = status_of(error)
        self.metrics.errors.labels(method, code.name).inc()
        if code is grpc.StatusCode.INTERNAL:
            log.exception("%s failed", method)
        else:
            log.info("%s refused (%s): %s", method, code.name, message, extra={"method": method, "code": code.name})
        retry_after = _retry_after_ms(error)
        if retry_after:
            context.set_trailing_metadata(((RETRY_AFTER_METADATA, str(retry_after)),))
        await context.abort(code, message)


class _StreamGuard:
    """Keeps an Interact stream within its credentials: the caller's token is checked again before every
    step and every RECHECK_SECONDS while the stream waits or works, so a revoked or expired token ends the
    stream (UNAUTHENTICATED) within that time; with a maximum age, the stream ends then (UNAVAILABLE)."""

    def __init__(self, auth: Authenticator, metadata, max_seconds: float | None):
        self._auth = auth
        self._metadata = metadata
        self._ends = time.monotonic() + max_seconds if max_seconds else None
        self._max_seconds = max_seconds

    def check(self) -> None:
        """Raises Unauthenticated when the token no longer holds, Unavailable past the stream's maximum age."""
        self._auth.identify(self._metadata)
        if self._ends is not None and time.monotonic() >= self._ends:
            raise errors.Unavailable(
                f"this stream reached the server's maximum stream age ({self._max_seconds:g} s); open a new stream"
            )

    async def watch(self, awaitable):
        """awaitable's result; it is cancelled (and the check's error raised) as soon as a check fails."""
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=RECHECK_SECONDS)
                if done:
                    return task.result()
                self.check()
        finally:
            if not task.done():
                task.cancel()


@dataclass(frozen=True)
class Undecodable:
    """Request bytes that do not parse as the method's message (answered INVALID_ARGUMENT, not UNKNOWN)."""

    message_type: str
    reason: str

    def error(self) -> errors.InvalidArgument:
        return errors.InvalidArgument(f"the request is not a valid {self.message_type} message: {self.reason}")


def _tolerant_parser(message_class):
    def parse(data: bytes):
        try:
            return message_class.FromString(data)
        except DecodeError as error:
            return Undecodable(message_class.DESCRIPTOR.full_name, str(error))

    return parse


def add_to_server(service: SegmentationService, server: grpc.aio.Server) -> None:
    """Registers the service like the generated add_SegmentationServicer_to_server, except that request
    bytes which do not parse reach the service (as Undecodable) instead of failing inside grpc as UNKNOWN."""
    descriptor = pb.DESCRIPTOR.services_by_name["Segmentation"]
    handlers = {}
    for method in descriptor.methods:
        streaming = method.client_streaming and method.server_streaming
        make = grpc.stream_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        handlers[method.name] = make(
            getattr(service, method.name),
            request_deserializer=_tolerant_parser(getattr(pb, method.input_type.name)),
            response_serializer=lambda message: message.SerializeToString(),
        )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(descriptor.full_name, handlers),))


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline on time.monotonic()'s clock, when the client set one."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _segment(engine: Engine, fov, model: str, polygons, strategy: str, clicks, box, outline=None) -> Outcome:
    """Batch segmentation: the outline first, then the box, then each click as its own step, as an
    interactive user would.

    The timings of the answer add up every step (each window is read and encoded at most once).
    """
    started = time.perf_counter()

    def check_prompts(region: Rect) -> None:
        for click in clicks:
            validate_click(click, region)
        if box is not None:
            validate_box(box, region)
        if outline is not None:
            validate_outline(outline, region)

    session, outcome = ObjectSession.open(engine, fov, model, polygons, strategy, check_prompts=check_prompts)
    steps = [outcome]
    if outline is not None:
        steps.append(session.set_outline(outline))
    if box is not None:
        steps.append(session.set_box(box))
    for click in clicks:
        yield_point()
        steps.append(session.add_clicks([click]))
    total = Timings(cache_hit=steps[0].timings.cache_hit, total_ms=_ms_since(started))
    for step in steps:
        for stage in ("read_ms", "encode_ms", "decode_ms", "postprocess_ms", "windows_encoded", "windows_from_store"):
            setattr(total, stage, getattr(total, stage) + getattr(step.timings, stage))
    return replace(steps[-1], timings=total)


def _fields(method: str, user: str, outcome: Outcome, total_ms: float, queue_ms: float) -> dict:
    """The structured fields of a request's log line (JSON logs carry them as keys)."""
    return {
        "method": method, "user": user, "code": "OK", "model": outcome.view.spec.model_id, "object": outcome.object_id,
        "step": outcome.step_index, "total_ms": round(total_ms, 2), "queue_ms": round(queue_ms, 2),
        "encode_ms": round(outcome.timings.encode_ms, 2), "decode_ms": round(outcome.timings.decode_ms, 2),
        "cache_hit": outcome.timings.cache_hit, "windows": outcome.resolution.windows,
        "windows_encoded": outcome.timings.windows_encoded, "encoder_downsample": round(outcome.resolution.encoder_downsample, 4),
        "downsampled": outcome.resolution.downsampled,
    }


def _decoded(request) -> None:
    if isinstance(request, Undecodable):
        raise request.error()


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1e3


def _hit(outcome: Outcome) -> str:
    """Cache outcome for the log: hit, miss (read + encode ran) or '-' (no embedding needed)."""
    if outcome.timings.cache_hit:
        return "hit"
    return "miss" if outcome.timings.encode_ms else "-"
