"""A connection to one slidesam server: the channel, its credentials, the unary calls, and the interactive
objects opened on it.

No torch here: a pathologist's laptop installs `slidesam[bridge]` only.
"""

from __future__ import annotations

import os
import time
from typing import Callable, Sequence, TypeVar

import grpc
import shapely
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc
from slidesam.v1.conventions import AFFINITY_METADATA
from slidesam.qupath_bridge.errors import ConnectionLost, ServerError
from slidesam.qupath_bridge.remote_object import RemoteObject
from slidesam.qupath_bridge.stream import InteractStream
from slidesam.qupath_bridge.tls import TlsSettings
from slidesam.qupath_bridge.wire_geometry import polygons_to_pb
from slidesam.qupath_bridge.wire_requests import Click, FieldOfView, PolygonOptions, UploadedRegion, prompt_strategy
from slidesam.qupath_bridge.wire_results import ObjectResult

TOKEN_ENV = "SLIDESAM_TOKEN"
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 2**20),
    ("grpc.max_send_message_length", 64 * 2**20),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
_Response = TypeVar("_Response", bound=Message)
_READY_RETRY_S = 0.25  # pause between health checks a balancer answered UNAVAILABLE


class SlidesamClient:
    """A connection to one slidesam server, or to a load balancer in front of several. Use as a context
    manager, or call close().

    Every call on an image carries its affinity key (metadata `slidesam-affinity`), so that a balancer
    sends all calls on one image to the server holding its embeddings.
    """

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        tls: TlsSettings | None = None,
        reconnect_attempts: int = 5,
        ready_timeout: float = 10.0,
        call_timeout: float = 300.0,
    ):
        """token: the bearer token the server's admin issued (default: $SLIDESAM_TOKEN; none for a server
        that allows anonymous access); tls: connect over TLS (see TlsSettings);
        ready_timeout: how long a (re)connection may wait for the server before ConnectionLost;
        call_timeout: deadline of each unary call (DEADLINE_EXCEEDED after it), so a dead server never hangs a run."""
        self.address = address
        self.reconnect_attempts = reconnect_attempts
        self.ready_timeout = ready_timeout
        self.call_timeout = call_timeout
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        if tls is None:
            self._channel = grpc.insecure_channel(address, options=_CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(address, tls.credentials(), options=_CHANNEL_OPTIONS)
        self._stub = pb_grpc.SegmentationStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def __enter__(self) -> "SlidesamClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def wait_ready(self, timeout: float | None = None, affinity: str = "") -> None:
        """Blocks until the server answers (a health check, which needs no token; through a balancer, the
        server that `affinity` routes to); ConnectionLost after timeout seconds. A balancer with no server
        up answers UNAVAILABLE at once: that is asked again until the timeout, as a server that is down is
        waited for. (grpc.channel_ready_future would poll from a thread that outlives a closed channel.)"""
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        while True:
            try:
                self._health.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, metadata=self._with(affinity),
                                   timeout=max(0.01, deadline - time.monotonic()))
                return
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                    return  # an answer: the server is there (e.g. a health service it does not run)
                if time.monotonic() + _READY_RETRY_S >= deadline:
                    raise ConnectionLost(
                        f"no slidesam server answered at {self.address}: {error.code().name}: {error.details()}"
                    ) from None
                time.sleep(_READY_RETRY_S)

    def list_models(self) -> list[pb.ModelInfo]:
        return list(self._unary(self._stub.ListModels, pb.ListModelsRequest()).models)

    def upload(self, region: UploadedRegion) -> pb.UploadImageResponse:
        """Sends the encoded pixels; the server keeps them under their SHA-256."""
        return self._unary(self._stub.UploadImage, pb.UploadImageRequest(data=region.data, sha256=region.sha256),
                           region.affinity_key)

    def upload_missing_pixels(self, fov: FieldOfView, error: ServerError) -> None:
        """After a refused request on `fov`: uploads its pixels when the server answered that it lacks them
        (NOT_FOUND for an UploadedRegion), so the request can be sent again; raises `error` otherwise."""
        if not (isinstance(fov.image, UploadedRegion) and error.code is grpc.StatusCode.NOT_FOUND):
            raise error
        self.upload(fov.image)

    def segment(
        self,
        fov: FieldOfView,
        clicks: Sequence[Click] = (),
        box: tuple[float, float, float, float] | None = None,
        model: str = "",
        polygon_options: PolygonOptions | None = None,
        strategy: str = "",
        outline: shapely.Geometry | None = None,
    ) -> ObjectResult:
        """One object from a complete set of prompts (outline first, then the box, then the clicks in order).

        strategy: "plain" (SAM as published), "consistent" (every click honoured) or "" (server default).
        outline: an existing outline as the prompt (a shapely Polygon or MultiPolygon in level-0 pixels,
        inside the field of view; ValueError here when it is not a valid polygon with area).
        """
        request = pb.SegmentRequest(
            field_of_view=fov.to_pb(),
            model=model,
            strategy=prompt_strategy(strategy),
            clicks=[c.to_pb() for c in clicks],
            polygon_options=(polygon_options or PolygonOptions()).to_pb(),
            outline=polygons_to_pb(outline) if outline is not None else [],
        )
        if box is not None:
            request.box.CopyFrom(pb.Box(x=box[0], y=box[1], width=box[2], height=box[3]))
        try:
            return ObjectResult(self._unary(self._stub.Segment, request, fov.image.affinity_key).result)
        except ServerError as error:
            self.upload_missing_pixels(fov, error)
            return ObjectResult(self._unary(self._stub.Segment, request, fov.image.affinity_key).result)

    def open_object(
        self, fov: FieldOfView, model: str = "", polygon_options: PolygonOptions | None = None, strategy: str = "",
        object_id: str = "",
    ) -> RemoteObject:
        """Opens an object on a field of view (the server embeds the region now, so clicks are fast).

        object_id: the caller's own id (e.g. a QuPath annotation's UUID); empty lets the server pick one.
        """
        return RemoteObject(self, fov, model, polygon_options or PolygonOptions(), strategy, object_id)

    def open_stream(self, affinity: str = "") -> InteractStream:
        """A new Interact stream (what a RemoteObject sends its steps through); `affinity`: the affinity key
        of the image its object is on."""
        return InteractStream(self._stub, self._with(affinity))

    def _with(self, affinity: str) -> tuple[tuple[str, str], ...]:
        """The call's metadata: the token and, for a call on an image, its affinity key."""
        return self._metadata + ((AFFINITY_METADATA, affinity),) if affinity else self._metadata

    def _unary(self, method: Callable[..., _Response], request: Message, affinity: str = "") -> _Response:
        try:
            return method(request, wait_for_ready=True, timeout=self.call_timeout, metadata=self._with(affinity))
        except grpc.RpcError as error:
            raise ServerError.from_rpc(error) from None
