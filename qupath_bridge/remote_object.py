"""An object being segmented by clicks on the server, which survives reconnects by replaying its history."""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol, Sequence

import shapely

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.qupath_bridge.errors import ConnectionLost, ServerError
from slidesam.qupath_bridge.stream import InteractStream, StreamBroken
from slidesam.qupath_bridge.wire_geometry import polygons_to_pb
from slidesam.qupath_bridge.wire_requests import Click, FieldOfView, PolygonOptions, prompt_strategy
from slidesam.qupath_bridge.wire_results import ObjectResult

log = logging.getLogger(__name__)


class Connection(Protocol):
    """What a RemoteObject needs of its client (`client.SlidesamClient`)."""

    address: str
    reconnect_attempts: int

    def wait_ready(self, timeout: float | None = None, affinity: str = "") -> None: ...

    def open_stream(self, affinity: str = "") -> InteractStream: ...

    def upload_missing_pixels(self, fov: FieldOfView, error: ServerError) -> None: ...


class RemoteObject:
    """An object being segmented by clicks. Keeps its history and replays it on a new stream
    when the connection drops, so a server restart, a network blip or, behind a load balancer, the death
    of the server that held it loses nothing: the balancer sends the new stream to a server that is up.

    Not thread-safe: one object per thread.
    """

    def __init__(
        self, client: Connection, fov: FieldOfView, model: str, polygon_options: PolygonOptions, strategy: str = "",
        object_id: str = "",
    ):
        self.client = client
        self.fov = fov
        self._open = pb.OpenObject(
            field_of_view=fov.to_pb(), model=model, polygon_options=polygon_options.to_pb(),
            strategy=prompt_strategy(strategy), object_id=object_id,
        )
        self._history: list[pb.InteractRequest] = []
        self._stream: InteractStream | None = None
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
        return self._do(pb.InteractRequest(clicks=pb.AddClicks(clicks=[c.to_pb() for c in clicks])))

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

    def __enter__(self) -> "RemoteObject":
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

    def _retrying(self, operation: Callable[[], ObjectResult]) -> ObjectResult:
        """Runs operation, reconnecting and replaying the history when the stream breaks."""
        for attempt in range(self.client.reconnect_attempts + 1):
            try:
                return operation()
            except StreamBroken as broken:
                log.warning("stream to %s broke (%s); replaying %d steps", self.client.address, broken, len(self._history))
                self._drop_stream()
                time.sleep(min(0.2 * 2**attempt, 2.0))
        raise ConnectionLost(f"lost the server at {self.client.address} after {self.client.reconnect_attempts} reconnects")

    def _connect(self) -> ObjectResult:
        """Waits (at most ready_timeout) for the server, opens a stream, opens the object (uploading its
        pixels if the server lacks them), and replays the history."""
        affinity = self.fov.image.affinity_key
        self.client.wait_ready(affinity=affinity)
        self._stream = self.client.open_stream(affinity)
        try:
            result = self._open_object()
            for request in self._history:
                result = self._checked(self._stream.send(request))
        except StreamBroken:
            self._drop_stream()
            raise
        if self._history:
            self.reconnects += 1
        return result

    def _open_object(self) -> ObjectResult:
        try:
            return self._checked(self._stream.send(pb.InteractRequest(open=self._open)))
        except ServerError as error:
            self.client.upload_missing_pixels(self.fov, error)
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
            raise ServerError.from_step(response.error)
        return ObjectResult(response.result)
