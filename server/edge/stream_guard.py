"""Keeps an Interact stream within its credentials while it lives: the token is checked again before
every step and while a step waits or works, and a stream ends at the server's maximum stream age."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import TypeVar

from slidesam.server import errors
from slidesam.server.edge.auth import Authenticator

RECHECK_SECONDS = 0.5
"""How often an open Interact stream checks its token while it waits for or works on a step."""

T = TypeVar("T")


class StreamGuard:
    """The caller's token is checked again before every step and every RECHECK_SECONDS while the stream
    waits or works, so a revoked or expired token ends the stream (UNAUTHENTICATED) within that time;
    with a maximum age, the stream ends then (UNAVAILABLE)."""

    def __init__(self, auth: Authenticator, metadata: Sequence[tuple[str, str | bytes]] | None, max_seconds: float | None) -> None:
        self._auth = auth
        self._metadata = metadata
        self._ends = time.monotonic() + max_seconds if max_seconds else None
        self._max_seconds = max_seconds

    def check(self) -> None:
        """Raises Unauthenticated when the token no longer holds, Unavailable past the stream's maximum age."""
        self._auth.identify(self._metadata)
        if self._ends is not None and time.monotonic() >= self._ends:
            raise errors.Unavailable(
                f"this stream reached the server's maximum stream age ({self._max_seconds:g} s); open a new stream"
            )

    async def watch(self, awaitable: Awaitable[T]) -> T:
        """awaitable's result; it is cancelled (and the check's error raised) as soon as a check fails."""
        task = asyncio.ensure_future(awaitable)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=RECHECK_SECONDS)
                if done:
                    return task.result()
                self.check()
        finally:
            if not task.done():
                task.cancel()
