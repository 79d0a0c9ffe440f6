"""A raw Interact call for hostile-user tests and scripts: requests fed from a queue, answers and the
call's final status collected by a reader thread, so a caller can see a stream end while it is idle."""

from __future__ import annotations

import queue
import threading
import time

import grpc

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc


class InteractStream:
    """One Interact call; `ended` is set (and `status`, `ended_at` known) when the server ends it."""

    def __init__(self, stub: pb_grpc.SegmentationStub, metadata: tuple = ()):
        self._requests: queue.Queue = queue.Queue()
        self._answers: queue.Queue = queue.Queue()
        self.ended = threading.Event()
        self.status: grpc.StatusCode | None = None
        self.ended_at = 0.0
        self._call = stub.Interact(iter(self._requests.get, None), metadata=metadata)
        threading.Thread(target=self._read, name="interact-reader", daemon=True).start()

    def _read(self) -> None:
        try:
            for answer in self._call:
                self._answers.put(answer)
        except grpc.RpcError as error:
            self.status = error.code()
        self.ended_at = time.monotonic()
        self.ended.set()

    def send(self, request: pb.InteractRequest) -> None:
        """Sends one request without waiting for its answer."""
        self._requests.put(request)

    def step(self, request: pb.InteractRequest, timeout: float = 300.0) -> pb.InteractResponse:
        """Sends one request and waits for its answer."""
        self.send(request)
        return self._answers.get(timeout=timeout)

    def close(self) -> None:
        """Ends the requests (the server then ends the call)."""
        self._requests.put(None)
