"""The gRPC servicer: validate, hand the work to the model worker, map errors to status codes."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, replace

import grpc
from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc

from server import errors
from server.engine.engine import Engine, Timings
from server.engine.session import ObjectSession, Outcome
from server.engine.worker import ModelWorker
from server.wire import (
    box_from_pb,
    clicks_from_pb,
    field_of_view_from_pb,
    model_infos_to_pb,
    outcome_to_pb,
    polygon_request_from_pb,
    strategy_from_pb,
)

log = logging.getLogger(__name__)

_STATUS_OF = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.ModelUnavailable: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}
_INTERNAL_MESSAGE = "internal error while serving this request; the server log has the details"


def status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for an exception."""
    for kind, code in _STATUS_OF.items():
        if isinstance(error, kind):
            return code, str(error)
    return grpc.StatusCode.INTERNAL, _INTERNAL_MESSAGE


@dataclass
class _Stream:
    """What one Interact stream holds: at most one open object."""

    session: ObjectSession | None = None


class SegmentationService(pb_grpc.SegmentationServicer):
    def __init__(self, engine: Engine, worker: ModelWorker):
        self.engine = engine
        self.worker = worker

    async def ListModels(self, request: pb.ListModelsRequest, context) -> pb.ListModelsResponse:
        return model_infos_to_pb(self.engine.models)

    async def UploadImage(self, request: pb.UploadImageRequest, context) -> pb.UploadImageResponse:
        started = time.perf_counter()
        try:
            present = bool(request.sha256) and request.sha256 in self.engine.uploads
            image = await asyncio.to_thread(self.engine.uploads.put, request.data, request.sha256 or None)
        except Exception as error:  # noqa: BLE001 - every failure becomes a status
            await self._abort(context, "UploadImage", error)
        height, width = image.pixels.shape[:2]
        log.info("UploadImage sha256=%s %dx%d %.1f ms", image.sha256[:12], width, height, _ms_since(started))
        return pb.UploadImageResponse(sha256=image.sha256, width=width, height=height, already_present=present)

    async def Segment(self, request: pb.SegmentRequest, context) -> pb.SegmentResponse:
        started = time.perf_counter()
        try:
            fov = field_of_view_from_pb(request.field_of_view, request.HasField("field_of_view"))
            clicks = clicks_from_pb(request.clicks)
            box = box_from_pb(request.box) if request.HasField("box") else None
            if not clicks and box is None:
                raise errors.InvalidArgument("Segment needs at least one click or a box")
            polygons = polygon_request_from_pb(request.polygon_options)
            strategy = strategy_from_pb(request.strategy)
            outcome, queue_ms = await self.worker.run(_segment, self.engine, fov, request.model, polygons, strategy, clicks, box)
        except Exception as error:  # noqa: BLE001
            await self._abort(context, "Segment", error)
        log.info(
            "Segment model=%s object=%s clicks=%d total=%.1f ms cache=%s",
            outcome.view.spec.model_id, outcome.object_id[:8], len(clicks), _ms_since(started), _hit(outcome),
        )
        return pb.SegmentResponse(result=outcome_to_pb(outcome, queue_ms))

    async def Interact(self, request_iterator, context):
        stream = _Stream()
        try:
            async for request in request_iterator:
                yield await self._interact_step(stream, request)
        finally:
            if stream.session is not None:
                log.info("Interact stream closed with object %s still open; dropped", stream.session.object_id[:8])

    async def _interact_step(self, stream: _Stream, request: pb.InteractRequest) -> pb.InteractResponse:
        started = time.perf_counter()
        action = request.WhichOneof("action")
        try:
            outcome, queue_ms = await self._apply(stream, request, action)
        except Exception as error:  # noqa: BLE001 - a bad step must not end the stream
            code, message = status_of(error)
            if code is grpc.StatusCode.INTERNAL:
                log.exception("Interact %s failed", action)
            else:
                log.info("Interact %s refused (%s): %s", action, code.name, message)
            return pb.InteractResponse(request_id=request.request_id, error=pb.StepError(code=code.value[0], message=message))
        log.info(
            "Interact %s model=%s object=%s step=%d total=%.1f ms decode=%.1f ms cache=%s",
            action, outcome.view.spec.model_id, outcome.object_id[:8], outcome.step_index,
            _ms_since(started), outcome.timings.decode_ms, _hit(outcome),
        )
        return pb.InteractResponse(request_id=request.request_id, result=outcome_to_pb(outcome, queue_ms))

    async def _apply(self, stream: _Stream, request: pb.InteractRequest, action: str | None) -> tuple[Outcome, float]:
        if action is None:
            raise errors.InvalidArgument("an InteractRequest needs an action: open, clicks, box, undo, redo, reset or finish")
        if action == "open":
            opening = request.open
            fov = field_of_view_from_pb(opening.field_of_view, opening.HasField("field_of_view"))
            polygons = polygon_request_from_pb(opening.polygon_options)
            strategy = strategy_from_pb(opening.strategy)
            (session, outcome), queue_ms = await self.worker.run(
                ObjectSession.open, self.engine, fov, opening.model, polygons, strategy, opening.object_id
            )
            stream.session = session
            return outcome, queue_ms
        session = stream.session
        if session is None:
            raise errors.FailedPrecondition(f"no object is open on this stream: send `open` with a field of view before `{action}`")
        if action == "clicks":
            return await self.worker.run(session.add_clicks, clicks_from_pb(request.clicks.clicks))
        if action == "box":
            if not request.box.HasField("box"):
                raise errors.InvalidArgument("a box message needs a box (level-0 x, y, width, height)")
            return await self.worker.run(session.set_box, box_from_pb(request.box.box))
        if action == "finish":
            stream.session = None
            return session.finish(), 0.0
        return {"undo": session.undo, "redo": session.redo, "reset": session.reset}[action](), 0.0

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext, method: str, error: Exception) -> None:
        code, message = status_of(error)
        if code is grpc.StatusCode.INTERNAL:
            log.exception("%s failed", method)
        else:
            log.info("%s refused (%s): %s", method, code.name, message)
        await context.abort(code, message)


def _segment(engine: Engine, fov, model: str, polygons, strategy: str, clicks, box) -> Outcome:
    """Batch segmentation: the box first, then each click as its own step, as an interactive user would.

    The timings of the answer add up every step (read and encode happen at most once).
    """
    started = time.perf_counter()
    session, outcome = ObjectSession.open(engine, fov, model, polygons, strategy)
    steps = [outcome]
    if box is not None:
        steps.append(session.set_box(box))
    for click in clicks:
        steps.append(session.add_clicks([click]))
    total = Timings(cache_hit=steps[0].timings.cache_hit, total_ms=_ms_since(started))
    for step in steps:
        for stage in ("read_ms", "encode_ms", "decode_ms", "postprocess_ms"):
            setattr(total, stage, getattr(total, stage) + getattr(step.timings, stage))
    return replace(steps[-1], timings=total)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1e3


def _hit(outcome: Outcome) -> str:
    """Cache outcome for the log: hit, miss (read + encode ran) or '-' (no embedding needed)."""
    if outcome.timings.cache_hit:
        return "hit"
    return "miss" if outcome.timings.encode_ms else "-"
