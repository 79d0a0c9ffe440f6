"""The transport of an interactive object: one Interact stream, each request answered by exactly one response."""

from __future__ import annotations

import itertools
import queue
from typing import Iterator

import grpc

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc
from slidesam.qupath_bridge.errors import ServerError

_RECONNECTABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
_CLOSE = object()


class StreamBroken(Exception):
    """The stream ended or failed in a way a new stream may get past (the server restarted, the network blipped)."""


class InteractStream:
    """One Interact call: requests go through a queue, each answered by exactly one response."""

    def __init__(self, stub: pb_grpc.SegmentationStub, metadata: tuple[tuple[str, str], ...]):
        self._requests: queue.Queue = queue.Queue()
        self._responses: Iterator[pb.InteractResponse] = stub.Interact(
            iter(self._requests.get, _CLOSE), wait_for_ready=True, metadata=metadata
        )
        self._ids = itertools.count(1)

    def send(self, request: pb.InteractRequest) -> pb.InteractResponse:
        """The response to the request; StreamBroken when the stream is gone, ServerError when the call was refused."""
        request.request_id = next(self._ids)
        self._requests.put(request)
        try:
            response = next(self._responses)
        except StopIteration:
            raise StreamBroken("the server closed the stream") from None
        except grpc.RpcError as error:
            if error.code() in _RECONNECTABLE:
                raise StreamBroken(f"{error.code().name}: {error.details()}") from None
            raise ServerError.from_rpc(error) from None
        if response.request_id != request.request_id:
            raise StreamBroken(f"reply {response.request_id} does not answer request {request.request_id}")
        return response

    def close(self) -> None:
        self._requests.put(_CLOSE)
        self._responses.cancel()
