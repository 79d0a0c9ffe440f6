"""What a call to the slidesam server can end in besides an answer: a refusal, or no server at all."""

from __future__ import annotations

import grpc

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1.conventions import RETRY_AFTER_METADATA

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServerError(Exception):
    """The server refused a request; `code` is the gRPC status, `message` says what to change.

    retry_after: with RESOURCE_EXHAUSTED, the seconds the server asks to wait before retrying (or None).
    """

    def __init__(self, code: grpc.StatusCode, message: str, retry_after: float | None = None):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def __reduce__(self):
        """Pickled with its fields (a batch worker on a Ray cluster sends it back to the driver)."""
        return type(self), (self.code, self.message, self.retry_after)

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> "ServerError":
        """From a failed call, with the retry hint of its trailing metadata."""
        trailing = dict(error.trailing_metadata() or ())
        retry_ms = trailing.get(RETRY_AFTER_METADATA)
        return cls(error.code(), error.details() or "", int(retry_ms) / 1e3 if retry_ms else None)

    @classmethod
    def from_step(cls, error: pb.StepError) -> "ServerError":
        """From a refused step of an interactive stream (the stream itself stays open)."""
        code = _CODE_BY_NUMBER.get(error.code, grpc.StatusCode.UNKNOWN)
        return cls(code, error.message, error.retry_after_ms / 1e3 if error.retry_after_ms else None)


class ConnectionLost(Exception):
    """The server stayed unreachable through every reconnect attempt."""
