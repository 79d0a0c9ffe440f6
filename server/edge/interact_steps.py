"""The steps of an Interact stream: open an object, then clicks, box, outline, undo, redo, reset and
finish on it, each answered on the stream. A refused step is answered with its error and the stream
goes on; the stream holds at most one open object, claimed for its user."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any, Awaitable, Callable

import grpc

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.server import errors
from slidesam.server.edge.auth import User
from slidesam.server.edge.metrics import ServerMetrics
from slidesam.server.edge.ownership import Claim, ObjectOwnership
from slidesam.server.edge.registration import Undecodable
from slidesam.server.edge.request_log import cache_outcome, log_fields, ms_since, observe
from slidesam.server.edge.status import retry_after_ms, status_of
from slidesam.server.edge.wire import (
    box_from_pb, clicks_from_pb, field_of_view_from_pb, outcome_to_pb, outline_from_pb, polygon_request_from_pb,
    strategy_from_pb, validate_object_id,
)
from slidesam.server.engine.devices import DevicePool, DeviceWorker
from slidesam.server.engine.scheduler import Priority
from slidesam.server.engine.session import EngineObject, Outcome, check_click_count

log = logging.getLogger(__name__)

PROMPT_ACTIONS = ("clicks", "box", "outline")


@dataclass(eq=False)
class StreamState:
    """What one Interact stream holds: its user and at most one open object."""

    user: User
    deadline: float | None
    session: EngineObject | None = None
    worker: DeviceWorker | None = None  # the device the open object lives on
    claim: Claim | None = None
    detached: str = ""  # why the last object was taken away (expired, reopened elsewhere)

    def detach(self, reason: str) -> None:
        self.session, self.worker, self.claim, self.detached = None, None, None, reason


class InteractSteps:
    """Answers the steps of Interact streams on the devices, keeping object ownership and metrics."""

    def __init__(self, devices: DevicePool, ownership: ObjectOwnership, metrics: ServerMetrics) -> None:
        self.devices = devices
        self.ownership = ownership
        self.metrics = metrics

    async def answer(self, stream: StreamState, request: pb.InteractRequest | Undecodable) -> pb.InteractResponse:
        """The response to one request of the stream: a result, or the error that refused the step."""
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
            error_pb = pb.StepError(code=code.value[0], message=message, retry_after_ms=retry_after_ms(error))
            return pb.InteractResponse(request_id=request.request_id, error=error_pb)
        observe(self.metrics, f"Interact.{action}", outcome, queue_ms, Priority.INTERACTIVE)
        if action in PROMPT_ACTIONS:
            self.metrics.click_seconds.observe(ms_since(started) / 1e3)
        total_ms = ms_since(started)
        log.info(
            "Interact %s user=%s model=%s object=%s step=%d total=%.1f ms queue=%.1f ms decode=%.1f ms cache=%s",
            action, stream.user.name, outcome.view.spec.model_id, outcome.object_id[:8], outcome.step_index,
            total_ms, queue_ms, outcome.timings.decode_ms, cache_outcome(outcome),
            extra=log_fields(f"Interact.{action}", stream.user.name, outcome, total_ms, queue_ms),
        )
        return pb.InteractResponse(request_id=request.request_id, result=outcome_to_pb(outcome, queue_ms))

    def release(self, stream: StreamState) -> None:
        """Frees the stream's open object, if any."""
        if stream.claim is not None:
            self.ownership.release(stream.claim)
        stream.detach("")
        self.metrics.open_objects.set(len(self.ownership))

    async def _apply(self, stream: StreamState, request: pb.InteractRequest, action: str | None) -> tuple[Outcome, float]:
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
            self.release(stream)
            return session.finish(), 0.0
        run = partial(_runner(stream, stream.worker), light=session.light_steps, batchable=session.light_steps)
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

    async def _open(self, stream: StreamState, opening: pb.OpenObject) -> tuple[Outcome, float]:
        fov = field_of_view_from_pb(opening.field_of_view, opening.HasField("field_of_view"))
        polygons = polygon_request_from_pb(opening.polygon_options)
        strategy = strategy_from_pb(opening.strategy)
        object_id = validate_object_id(opening.object_id) or uuid.uuid4().hex
        worker, cached = await asyncio.to_thread(self.devices.choose, fov, opening.model)
        claim = self.ownership.claim(object_id, stream.user.name, stream.detach)
        try:
            with self.ownership.using(claim):
                (session, outcome), queue_ms = await _runner(stream, worker)(
                    partial(EngineObject.open, worker.engine, fov, opening.model, polygons, strategy, object_id), light=cached
                )
        except BaseException:
            self.ownership.release(claim)
            raise
        if stream.claim is not None and stream.claim is not claim:
            self.ownership.release(stream.claim)
        stream.session, stream.worker, stream.claim, stream.detached = session, worker, claim, ""
        self.metrics.open_objects.set(len(self.ownership))
        return outcome, queue_ms


def _runner(stream: StreamState, worker: DeviceWorker) -> Callable[..., Awaitable[tuple[Any, float]]]:
    """Schedules a stream's work on a device as interactive work of its user, within its deadline."""
    return partial(worker.scheduler.run, user=stream.user.name, priority=Priority.INTERACTIVE, deadline=stream.deadline)
