"""The affinity key a client sends so that a load balancer routes every call on one image to one server
(`slidesam.v1.conventions.AFFINITY_METADATA`): optional, but when present it must be well formed, so
that a client or proxy that mangles it learns so at once instead of silently losing its cache."""

from __future__ import annotations

import re
from collections.abc import Iterable

from slidesam.server.errors import InvalidArgument
from slidesam.v1.conventions import AFFINITY_KEY_PATTERN, AFFINITY_METADATA

_KEY = re.compile(AFFINITY_KEY_PATTERN)
_SHOWN = 80  # characters of a bad key quoted back


def check_affinity_key(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The call's affinity key, or None without one; InvalidArgument when it is sent twice or malformed."""
    keys = [value for key, value in metadata or () if key == AFFINITY_METADATA]
    if not keys:
        return None
    if len(keys) > 1:
        raise InvalidArgument(f"the request carries {len(keys)} '{AFFINITY_METADATA}' metadata entries: send at most one")
    key = keys[0].decode("latin-1") if isinstance(keys[0], bytes) else keys[0]
    if not _KEY.fullmatch(key):
        shown = key if len(key) <= _SHOWN else key[:_SHOWN] + "..."
        raise InvalidArgument(
            f"malformed '{AFFINITY_METADATA}' metadata {shown!r}: expected 64 lowercase hex digits, the SHA-256 "
            "naming the image (an upload's own SHA-256, or SHA-256 of 'slide:' + the slide id); or send none"
        )
    return key
