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
    """A limit was reached: region too large, store full, queue full (RESOURCE_EXHAUSTED)."""


class ModelUnavailable(SlidesamError):
    """A model's checkpoint is missing or does not verify (FAILED_PRECONDITION at request time)."""
