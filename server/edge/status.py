"""How errors become gRPC status codes: the code and message a client gets, the retry hint of a
RESOURCE_EXHAUSTED answer, and aborting a call with both (counted and logged)."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from slidesam.v1.conventions import RETRY_AFTER_METADATA
from slidesam.server import errors
from slidesam.server.edge.metrics import ServerMetrics

log = logging.getLogger(__name__)

_STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
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


def status_of(error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client gets for an exception."""
    for kind, code in _STATUS_OF.items():
        if isinstance(error, kind):
            return code, str(error)
    return grpc.StatusCode.INTERNAL, _INTERNAL_MESSAGE


def retry_after_ms(error: Exception) -> int:
    """Milliseconds the client should wait before retrying (errors that say so), else 0."""
    seconds = getattr(error, "retry_after_s", None)
    return max(1, round(seconds * 1e3)) if seconds else 0


async def abort(context: grpc.aio.ServicerContext, metrics: ServerMetrics, method: str, error: Exception) -> NoReturn:
    """Ends the call with the error's status (and retry hint), counted and logged."""
    code, message = status_of(error)
    metrics.errors.labels(method, code.name).inc()
    if code is grpc.StatusCode.INTERNAL:
        log.error("%s failed", method, exc_info=error)
    else:
        log.info("%s refused (%s): %s", method, code.name, message, extra={"method": method, "code": code.name})
    retry_after = retry_after_ms(error)
    if retry_after:
        context.set_trailing_metadata(((RETRY_AFTER_METADATA, str(retry_after)),))
    await context.abort(code, message)
