"""Python client of the slidesam server: batch calls and streaming object sessions that survive reconnects.

No torch here: a pathologist's laptop installs `slidesam[bridge]` only.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import queue
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Iterator, Sequence

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
import shapely
from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}
_CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 2**20),
    ("grpc.max_send_message_length", 64 * 2**20),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
_STRATEGIES = {"": pb.PROMPT_STRATEGY_UNSPECIFIED, "plain": pb.PROMPT_STRATEGY_PLAIN, "consistent": pb.PROMPT_STRATEGY_CONSISTENT}
WINDOW_MODES = {"auto": pb.WINDOW_MODE_UNSPECIFIED, "multi": pb.WINDOW_MODE_MULTI, "single": pb.WINDOW_MODE_SINGLE}
"""How a field of view larger than one encoder window (1024 px at the resolution asked for) is segmented:
"auto" (the server's choice: multi-window when it is larger), "multi" (coarse to fine over windows at the
resolution asked for) or "single" (shrunk into one window, coarser than asked for; the result says so)."""
TOKEN_ENV = "SLIDESAM_TOKEN"
RETRY_AFTER_METADATA = "retry-after-ms"
_RECONNECTABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}


class ServerError(Exception):
    """The server refused a request; `code` is the gRPC status, `message` says what to change.

    retry_after: with RESOURCE_EXHAUSTED, the seconds the server asks to wait before retrying (or None).
    """

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: float | None = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> "ServerError":
        """From a failed call, with the retry hint of its trailing metadata."""
        trailing = dict(error.trailing_metadata() or ())
        retry_ms = trailing.get(RETRY_AFTER_METADATA)
        return cls(error.code(), error.details() or "", int(retry_ms) / 1e3 if retry_ms else None)


class ConnectionLost(Exception):
    """The server stayed unreachable through every reconnect attempt."""


# ------------------------------------------------------------------------------------------------
# Requests


@dataclass(frozen=True)
class SlideImage:
    """A slide the server reads itself, named relative to its slide root."""

    slide_id: str


@dataclass(frozen=True)
class UploadedRegion:
    """Encoded pixels (PNG/JPEG) sent by the client, placed in level-0 space.

    The image covers level-0 [origin_x, origin_x + width * downsample) and likewise in y.
    """

    data: bytes
    origin_x: float = 0.0
    origin_y: float = 0.0
    downsample: float = 1.0
    mpp: float | None = None
    objective_power: float | None = None

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class FieldOfView:
    """What SAM sees: an image, a level-0 rectangle and at most one resolution (none: fit the model input).

    windows: "auto" | "multi" | "single", how a region larger than one encoder window at that resolution
    is segmented (see WINDOW_MODES). align_to_grid: let the server move a region that fits one window onto
    its embedding grid (a precomputed embedding then serves it); the result's `region` says where.
    """

    image: SlideImage | UploadedRegion
    x: float
    y: float
    width: float
    height: float
    mpp: float | None = None
    magnification: float | None = None
    downsample: float | None = None
    windows: str = "auto"
    align_to_grid: bool = False

    def __post_init__(self) -> None:
        if self.windows not in WINDOW_MODES:
            raise ValueError(f"unknown window mode {self.windows!r}; choose one of {', '.join(map(repr, WINDOW_MODES))}")

    def to_pb(self) -> pb.FieldOfView:
        message = pb.FieldOfView(
            region=pb.Rect(x=self.x, y=self.y, width=self.width, height=self.height),
            windows=WINDOW_MODES[self.windows],
            align_to_grid=self.align_to_grid,
        )
        if isinstance(self.image, SlideImage):
            message.image.slide_id = self.image.slide_id
        else:
            up = self.image
            message.image.uploaded.CopyFrom(
                pb.UploadedImageRef(
                    sha256=up.sha256, origin_x=up.origin_x, origin_y=up.origin_y, downsample=up.downsample,
                    mpp=up.mpp or 0.0, objective_power=up.objective_power or 0.0,
                )
            )
        chosen = [(k, v) for k, v in (("mpp", self.mpp), ("magnification", self.magnification), ("downsample", self.downsample)) if v is not None]
        if len(chosen) > 1:
            raise ValueError("give at most one of mpp, magnification and downsample")
        if chosen:
            setattr(message.resolution, chosen[0][0], chosen[0][1])
        return message


@dataclass(frozen=True)
class Click:
    x: float
    y: float
    positive: bool = True


@dataclass(frozen=True)
class PolygonOptions:
    simplify_tolerance_um: float = 0.0
    simplify_tolerance_px: float = 0.0
    max_vertices: int = 0
    min_area_um2: float = 0.0
    min_area_px: float = 0.0

    def to_pb(self) -> pb.PolygonOptions:
        return pb.PolygonOptions(**self.__dict__)


# ------------------------------------------------------------------------------------------------
# Results


def _ring(ring: pb.Ring) -> np.ndarray:
    return np.asarray(ring.xy, dtype=np.float64).reshape(-1, 2)


def polygons_from_pb(polygons: Sequence[pb.Polygon]) -> shapely.MultiPolygon:
    """Wire polygons -> a shapely MultiPolygon in level-0 coordinates."""
    parts = [shapely.Polygon(_ring(p.exterior), [_ring(h) for h in p.holes]) for p in polygons]
    return shapely.MultiPolygon(parts)


def outline_geometry(geometry: shapely.Geometry) -> shapely.MultiPolygon:
    """An outline prompt checked as the server will check it: polygonal (Polygon or MultiPolygon, or a
    collection of them), non-empty, finite, valid (no self-intersection) and with area. ValueError saying
    what is wrong otherwise."""
    if not isinstance(geometry, shapely.Geometry):
        raise ValueError(f"an outline must be a shapely Polygon or MultiPolygon, got {type(geometry).__name__}")
    if geometry.is_empty:
        raise ValueError("the outline is empty; it needs at least one polygon with area")
    if type(geometry) is shapely.GeometryCollection:
        kinds = sorted({part.geom_type for part in geometry.geoms if not part.is_empty})
        if set(kinds) - {"Polygon", "MultiPolygon"}:
            raise ValueError(f"an outline must be polygonal, got a collection of {', '.join(kinds)}")
        geometry = shapely.MultiPolygon([p for part in geometry.geoms for p in _polygons(part)])
    if not isinstance(geometry, (shapely.Polygon, shapely.MultiPolygon)):
        raise ValueError(f"an outline must be a polygon, got a {geometry.geom_type} (a point or a line has no inside to refine)")
    if not np.isfinite(shapely.get_coordinates(geometry)).all():
        raise ValueError("the outline's coordinates must be finite numbers")
    if not geometry.is_valid:
        raise ValueError(f"the outline is not a valid polygon ({shapely.is_valid_reason(geometry)}); "
                         "fix or redraw it (e.g. remove the self-intersection)")
    if not geometry.area > 0:
        raise ValueError("the outline has no area")
    return shapely.MultiPolygon(_polygons(geometry))


def _polygons(geometry: shapely.Geometry) -> list[shapely.Polygon]:
    if isinstance(geometry, shapely.Polygon):
        return [] if geometry.is_empty else [geometry]
    return [part for part in geometry.geoms if not part.is_empty]


def _ring_to_pb(ring: shapely.LinearRing) -> pb.Ring:
    coordinates = shapely.get_coordinates(ring)
    return pb.Ring(xy=coordinates[:-1].ravel().tolist())  # the wire's rings do not repeat the first vertex


def polygons_to_pb(geometry: shapely.Geometry) -> list[pb.Polygon]:
    """A polygonal shapely geometry (level-0) -> wire polygons, holes kept; validated by `outline_geometry`
    (ValueError when it is not a valid polygon with area)."""
    return [
        pb.Polygon(exterior=_ring_to_pb(part.exterior), holes=[_ring_to_pb(hole) for hole in part.interiors])
        for part in outline_geometry(geometry).geoms
    ]


def _positive_or_none(value: float) -> float | None:
    return value if value > 0 else None


@dataclass(frozen=True)
class ModelResolution:
    """The resolution the model actually saw, beside the one the field of view asked for.

    Downsamples are level-0 pixels per pixel; mpp is µm per pixel (None where the image's mpp is
    unknown). `downsampled`: the mask is coarser than asked for (one window over a region larger than
    the encoder's 1024 px). `windows`: encoder windows behind the mask; `windows_decoded`: those this
    step decoded. `coarse_downsample`: multi-window, the coarse window's downsample (else None).
    """

    requested_downsample: float
    requested_mpp: float | None
    encoder_downsample: float
    encoder_mpp: float | None
    downsampled: bool
    windows: int = 1
    windows_decoded: int = 1
    coarse_downsample: float | None = None

    @classmethod
    def from_pb(cls, message: pb.ModelResolution) -> "ModelResolution":
        return cls(
            message.requested_downsample, _positive_or_none(message.requested_mpp),
            message.encoder_downsample, _positive_or_none(message.encoder_mpp),
            message.downsampled, message.windows, message.windows_decoded, _positive_or_none(message.coarse_downsample),
        )

    @property
    def factor(self) -> float:
        """How many times coarser than asked for the model saw the image (1.0: as asked)."""
        return self.encoder_downsample / self.requested_downsample if self.requested_downsample > 0 else 1.0

    def to_json(self) -> dict:
        """For provenance: numbers rounded to 6 significant places, unknowns as null."""
        def rounded(value: float | None) -> float | None:
            return None if value is None else float(f"{value:.6g}")

        return {
            "requested_downsample": rounded(self.requested_downsample), "requested_mpp": rounded(self.requested_mpp),
            "encoder_downsample": rounded(self.encoder_downsample), "encoder_mpp": rounded(self.encoder_mpp),
            "downsampled": self.downsampled, "windows": self.windows,
            **({"coarse_downsample": rounded(self.coarse_downsample)} if self.coarse_downsample is not None else {}),
        }

    def describe_downsampling(self, magnification: float | None = None) -> str:
        """One line for a person: what the model saw and what was asked for. `magnification`: the
        magnification the field of view asked for, if it was given that way (then both are said as xN)."""
        seen_mpp = f" ({self.encoder_mpp:.3g} µm/px)" if self.encoder_mpp else ""
        if magnification:
            seen, asked = f"x{magnification / self.factor:.2g}{seen_mpp}", f"x{magnification:g}"
        elif self.requested_mpp and self.encoder_mpp:
            seen, asked = f"{self.encoder_mpp:.3g} µm/px", f"{self.requested_mpp:.3g} µm/px"
        else:
            seen, asked = f"downsample {self.encoder_downsample:.3g}{seen_mpp}", f"downsample {self.requested_downsample:.3g}"
        return (f"the model saw {seen}, not the {asked} asked for ({self.factor:.2g} times coarser); "
                "segment it over several windows (--windows multi, which auto picks for large regions) or ask for a smaller region")


@dataclass(frozen=True)
class ObjectResult:
    """The server's current answer for an object."""

    raw: pb.SegmentationResult = field(repr=False)

    @cached_property
    def geometry(self) -> shapely.MultiPolygon:
        return polygons_from_pb(self.raw.polygons)

    object_id = property(lambda self: self.raw.object_id)
    score = property(lambda self: self.raw.score)
    area_px = property(lambda self: self.raw.area_px)
    area_um2 = property(lambda self: self.raw.area_um2 if self.raw.mpp_known else None)
    model_id = property(lambda self: self.raw.model_id)
    timings = property(lambda self: self.raw.timings)
    cache_hit = property(lambda self: self.raw.timings.cache_hit)
    step = property(lambda self: self.raw.step)
    can_undo = property(lambda self: self.raw.can_undo)
    can_redo = property(lambda self: self.raw.can_redo)
    windows_encoded = property(lambda self: self.raw.timings.windows_encoded)
    """Encoder runs this step needed (multi-window: the fine windows that were not cached)."""
    windows_from_store = property(lambda self: self.raw.timings.windows_from_store)
    """Embeddings this step read from the server's precomputed (disk) store."""

    @cached_property
    def resolution(self) -> ModelResolution | None:
        """The resolution the model saw beside the one asked for (None from a server that does not say)."""
        return ModelResolution.from_pb(self.raw.resolution) if self.raw.HasField("resolution") else None

    @property
    def downsampled(self) -> bool:
        """The mask is coarser than the field of view asked for (see `resolution`)."""
        return self.resolution is not None and self.resolution.downsampled

    @cached_property
    def outline(self) -> shapely.MultiPolygon:
        """The outline prompt the object was given (empty when none)."""
        return polygons_from_pb(self.raw.outline)

    @property
    def clicks(self) -> list[Click]:
        return [Click(c.x, c.y, c.positive) for c in self.raw.clicks]


# ------------------------------------------------------------------------------------------------
# Client


@dataclass(frozen=True)
class TlsSettings:
    """How to reach a TLS server: the CA that signed its certificate (None: the system's roots) and,
    for mutual TLS, this client's certificate and key (PEM files)."""

    ca: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: Path | None) -> bytes | None:
            return Path(path).read_bytes() if path is not None else None

        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        return grpc.ssl_channel_credentials(read(self.ca), read(self.client_key), read(self.client_cert))


class SlidesamClient:
    """A connection to one slidesam server. Use as a context manager, or call close()."""

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

    def wait_ready(self, timeout: float | None = None) -> None:
        """Blocks until the server answers (a health check, which needs no token); ConnectionLost after
        timeout seconds. (grpc.channel_ready_future would poll from a thread that outlives a closed channel.)"""
        try:
            self._health.Check(health_pb2.HealthCheckRequest(), wait_for_ready=True, timeout=timeout or self.ready_timeout)
        except grpc.RpcError as error:
            if error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
                raise ConnectionLost(f"no slidesam server answered at {self.address}") from None

    def list_models(self) -> list[pb.ModelInfo]:
        return list(self._unary(self._stub.ListModels, pb.ListModelsRequest()).models)

    def upload(self, region: UploadedRegion) -> pb.UploadImageResponse:
        """Sends the encoded pixels; the server keeps them under their SHA-256."""
        return self._unary(self._stub.UploadImage, pb.UploadImageRequest(data=region.data, sha256=region.sha256))

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
            strategy=_strategy(strategy),
            clicks=[pb.Click(x=c.x, y=c.y, positive=c.positive) for c in clicks],
            polygon_options=(polygon_options or PolygonOptions()).to_pb(),
            outline=polygons_to_pb(outline) if outline is not None else [],
        )
        if box is not None:
            request.box.CopyFrom(pb.Box(x=box[0], y=box[1], width=box[2], height=box[3]))
        try:
            return ObjectResult(self._unary(self._stub.Segment, request).result)
        except ServerError as error:
            if not self._needs_upload(fov, error):
                raise
            self.upload(fov.image)
            return ObjectResult(self._unary(self._stub.Segment, request).result)

    def open_object(
        self, fov: FieldOfView, model: str = "", polygon_options: PolygonOptions | None = None, strategy: str = "",
        object_id: str = "",
    ) -> "ObjectSession":
        """Opens an object on a field of view (the server embeds the region now, so clicks are fast).

        object_id: the caller's own id (e.g. a QuPath annotation's UUID); empty lets the server pick one.
        """
        return ObjectSession(self, fov, model, polygon_options or PolygonOptions(), strategy, object_id)

    @staticmethod
    def _needs_upload(fov: FieldOfView, error: ServerError) -> bool:
        return isinstance(fov.image, UploadedRegion) and error.code is grpc.StatusCode.NOT_FOUND

    def _unary(self, method, request):
        try:
            return method(request, wait_for_ready=True, timeout=self.call_timeout, metadata=self._metadata)
        except grpc.RpcError as error:
            raise ServerError.from_rpc(error) from None

    def _open_stream(self) -> "_Stream":
        return _Stream(self._stub, self._metadata)


def _strategy(name: str) -> int:
    if name not in _STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(repr(k) for k in _STRATEGIES)}")
    return _STRATEGIES[name]


_CLOSE = object()


class _StreamBroken(Exception):
    pass


class _Stream:
    """One Interact call: requests go through a queue, each answered by exactly one response."""

    def __init__(self, stub: pb_grpc.SegmentationStub, metadata: tuple[tuple[str, str], ...]):
        self._requests: queue.Queue = queue.Queue()
        self._responses: Iterator[pb.InteractResponse] = stub.Interact(
            iter(self._requests.get, _CLOSE), wait_for_ready=True, metadata=metadata
        )
        self._ids = itertools.count(1)

    def send(self, request: pb.InteractRequest) -> pb.InteractResponse:
        request.request_id = next(self._ids)
        self._requests.put(request)
        try:
            response = next(self._responses)
        except StopIteration:
            raise _StreamBroken("the server closed the stream") from None
        except grpc.RpcError as error:
            if error.code() in _RECONNECTABLE:
                raise _StreamBroken(f"{error.code().name}: {error.details()}") from None
            raise ServerError.from_rpc(error) from None
        if response.request_id != request.request_id:
            raise _StreamBroken(f"reply {response.request_id} does not answer request {request.request_id}")
        return response

    def close(self) -> None:
        self._requests.put(_CLOSE)
        self._responses.cancel()


class ObjectSession:
    """An object being segmented by clicks. Keeps its history and replays it on a new stream
    when the connection drops, so a server restart or a network blip loses nothing.

    Not thread-safe: one session per thread.
    """

    def __init__(
        self, client: SlidesamClient, fov: FieldOfView, model: str, polygon_options: PolygonOptions, strategy: str = "",
        object_id: str = "",
    ):
        self.client = client
        self.fov = fov
        self._open = pb.OpenObject(
            field_of_view=fov.to_pb(), model=model, polygon_options=polygon_options.to_pb(), strategy=_strategy(strategy),
            object_id=object_id,
        )
        self._history: list[pb.InteractRequest] = []
        self._stream: _Stream | None = None
        self.reconnects = 0
        self.result: ObjectResult = self._retrying(self._connect)
        self._open.object_id = self.result.object_id

    @property
    def object_id(self) -> str:
        return self._open.object_id

    @property
    def history(self) -> list[pb.InteractRequest]:
        """Every accepted action after `open`, in order (what a replay sends)."""
        return list(self._history)

    def click(self, x: float, y: float, positive: bool = True) -> ObjectResult:
        return self.add_clicks([Click(x, y, positive)])

    def add_clicks(self, clicks: Sequence[Click]) -> ObjectResult:
        """Adds one or several clicks as one step."""
        message = pb.AddClicks(clicks=[pb.Click(x=c.x, y=c.y, positive=c.positive) for c in clicks])
        return self._do(pb.InteractRequest(clicks=message))

    def box(self, x: float, y: float, width: float, height: float) -> ObjectResult:
        return self._do(pb.InteractRequest(box=pb.SetBox(box=pb.Box(x=x, y=y, width=width, height=height))))

    def outline(self, geometry: shapely.Geometry) -> ObjectResult:
        """An existing outline (shapely Polygon or MultiPolygon, level-0, inside the field of view) as the
        prompt, replacing earlier prompts as one step (undoable, replayed like clicks). ValueError, before
        anything is sent, when it is not a valid polygon with area."""
        return self._do(pb.InteractRequest(outline=pb.SetOutline(polygons=polygons_to_pb(geometry))))

    def undo(self) -> ObjectResult:
        return self._do(pb.InteractRequest(undo=pb.Undo()))

    def redo(self) -> ObjectResult:
        return self._do(pb.InteractRequest(redo=pb.Redo()))

    def reset(self) -> ObjectResult:
        return self._do(pb.InteractRequest(reset=pb.Reset()))

    def finish(self) -> ObjectResult:
        """The final result; the stream is closed afterwards."""
        result = self._do(pb.InteractRequest(finish=pb.Finish()))
        self.close()
        return result

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __enter__(self) -> "ObjectSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _do(self, request: pb.InteractRequest) -> ObjectResult:
        def send() -> ObjectResult:
            if self._stream is None:
                self._connect()
            result = self._checked(self._stream.send(request))
            self._history.append(request)
            self.result = result
            return result

        return self._retrying(send)

    def _retrying(self, operation) -> ObjectResult:
        """Runs operation, reconnecting and replaying the history when the stream breaks."""
        for attempt in range(self.client.reconnect_attempts + 1):
            try:
                return operation()
            except _StreamBroken as broken:
                log.warning("stream to %s broke (%s); replaying %d steps", self.client.address, broken, len(self._history))
                self._drop_stream()
                time.sleep(min(0.2 * 2**attempt, 2.0))
        raise ConnectionLost(f"lost the server at {self.client.address} after {self.client.reconnect_attempts} reconnects")

    def _connect(self) -> ObjectResult:
        """Waits (at most ready_timeout) for the server, opens a stream, opens the object (uploading its
        pixels if the server lacks them), and replays the history."""
        self.client.wait_ready()
        self._stream = self.client._open_stream()
        try:
            result = self._open_object()
            for request in self._history:
                result = self._checked(self._stream.send(request))
        except _StreamBroken:
            self._drop_stream()
            raise
        if self._history:
            self.reconnects += 1
        return result

    def _open_object(self) -> ObjectResult:
        request = pb.InteractRequest(open=self._open)
        try:
            return self._checked(self._stream.send(request))
        except ServerError as error:
            if not SlidesamClient._needs_upload(self.fov, error):
                raise
            self.client.upload(self.fov.image)
            return self._checked(self._stream.send(pb.InteractRequest(open=self._open)))

    def _drop_stream(self) -> None:
        if self._stream is not None:
            try:
                self._stream.close()
            except Exception:  # noqa: BLE001 - the stream is already broken
                pass
            self._stream = None

    @staticmethod
    def _checked(response: pb.InteractResponse) -> ObjectResult:
        if response.HasField("error"):
            code = _CODE_BY_NUMBER.get(response.error.code, grpc.StatusCode.UNKNOWN)
            retry_ms = response.error.retry_after_ms
            raise ServerError(code, response.error.message, retry_ms / 1e3 if retry_ms else None)
        return ObjectResult(response.result)
