"""Errors the engine raises; the service maps each kind to one gRPC status code."""


class SlidesamError(Exception):
    """Base class: a request that cannot be served, with a message a person can act on."""


class InvalidArgument(SlidesamError):
    """Malformed, out-of-bounds or non-finite input (INVALID_ARGUMENT)."""


class NotFound(SlidesamError):
    """Unknown slide, image, model or object (NOT_FOUND)."""


class FailedPrecondition(SlidesamError):
    """The request is valid but not now, e.g. a click before an object is open (FAILED_PRECONDITION)."""


class PermissionDenied(SlidesamError):
    """The request reaches outside what the server allows, e.g. a slide outside the root (PERMISSION_DENIED)."""


class ResourceExhausted(SlidesamError):
    """A limit was reached: region too large, store full, queue full (RESOURCE_EXHAUSTED).

    retry_after_s, when set, tells the client how long to wait before trying again.
    """

    def __init__(self, message: str, retry_after_s: float | None = None):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelUnavailable(SlidesamError):
    """A model's checkpoint is missing or does not verify (FAILED_PRECONDITION at request time)."""


class Unauthenticated(SlidesamError):
    """No valid credentials: a missing, unknown or revoked token (UNAUTHENTICATED)."""


class DeadlineExceeded(SlidesamError):
    """The request's deadline passed before its work could finish (DEADLINE_EXCEEDED)."""


class Cancelled(SlidesamError):
    """The client went away; its queued or running work was dropped (CANCELLED)."""


class Unavailable(SlidesamError):
    """The server cannot serve now but may later, e.g. its token file is unreadable (UNAVAILABLE)."""


class DataLoss(SlidesamError):
    """The image file is damaged: some of its pixels cannot be decoded (DATA_LOSS)."""
