"""Names both sides of the wire agree on beyond the .proto messages: metadata keys and the names of
enum values as the command lines and settings spell them."""

from __future__ import annotations

import hashlib

from slidesam.v1 import slidesam_pb2 as pb

RETRY_AFTER_METADATA = "retry-after-ms"
"""Trailing metadata of a RESOURCE_EXHAUSTED answer: milliseconds to wait before retrying."""

AFFINITY_METADATA = "slidesam-affinity"
"""Request metadata naming the image a call works on, so that a load balancer in front of several servers
sends every call on one image to the server holding its embeddings (HAProxy: `balance hdr()` on it
with `hash-type consistent`, deploy/haproxy/slidesam.cfg). Optional: a call without it is served, and that
balancer routes it by the client's address instead. A routing hint only: the server never checks that it
names the request's image, only that it is well formed (AFFINITY_KEY_PATTERN)."""

AFFINITY_KEY_PATTERN = r"[0-9a-f]{64}"
"""The form of an affinity key: 64 lowercase hex digits, the SHA-256 naming the image (an uploaded image's
own SHA-256; for a server slide, that of "slide:" + its slide id, see `affinity_key`)."""


def affinity_key(slide_id: str | None = None, upload_sha256: str | None = None) -> str:
    """The affinity key of a server slide (by slide id) or of uploaded pixels (by their SHA-256)."""
    if (slide_id is None) == (upload_sha256 is None):
        raise ValueError("name either a slide id or an upload's SHA-256")
    if upload_sha256 is not None:
        return upload_sha256.lower()
    return hashlib.sha256(f"slide:{slide_id}".encode()).hexdigest()

STRATEGIES: dict[str, int] = {
    "": pb.PROMPT_STRATEGY_UNSPECIFIED,
    "plain": pb.PROMPT_STRATEGY_PLAIN,
    "consistent": pb.PROMPT_STRATEGY_CONSISTENT,
}
"""Prompt strategy names ('' = the server's default) and their wire values."""

STRATEGY_NAMES: dict[int, str] = {value: name for name, value in STRATEGIES.items()}

WINDOW_MODES: dict[str, int] = {
    "auto": pb.WINDOW_MODE_UNSPECIFIED,
    "multi": pb.WINDOW_MODE_MULTI,
    "single": pb.WINDOW_MODE_SINGLE,
}
"""How a field of view larger than one encoder window (1024 px at the resolution asked for) is segmented:
"auto" (the server's choice: multi-window when it is larger), "multi" (coarse to fine over windows at the
resolution asked for) or "single" (shrunk into one window, coarser than asked for; the result says so)."""
