"""Per-user limits: concurrent Interact streams and uploaded bytes per minute."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from slidesam.server.edge.auth import User
from slidesam.server.errors import ResourceExhausted

WINDOW_SECONDS = 60.0


class UserLimiter:
    """Counts what each user holds now (streams) and used lately (upload bytes in a sliding minute)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._streams: dict[str, int] = {}
        self._uploads: dict[str, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()

    def streams_of(self, user: str) -> int:
        with self._lock:
            return self._streams.get(user, 0)

    def open_stream(self, user: User) -> None:
        """Takes one of the user's stream slots; refuses when all are taken. Pair with close_stream."""
        with self._lock:
            held = self._streams.get(user.name, 0)
            if held >= user.max_streams:
                raise ResourceExhausted(
                    f"user {user.name!r} already has {held} interactive streams open (the limit is {user.max_streams}); "
                    "finish or close one first",
                    retry_after_s=1.0,
                )
            self._streams[user.name] = held + 1

    def close_stream(self, user: User) -> None:
        """Gives back a slot taken by open_stream."""
        with self._lock:
            self._streams[user.name] -= 1
            if not self._streams[user.name]:
                del self._streams[user.name]

    def charge_upload(self, user: User, size: int) -> None:
        """Counts size bytes against the user's minute; refuses (counting nothing) when over the limit."""
        now = self._clock()
        with self._lock:
            window = self._uploads.setdefault(user.name, deque())
            while window and window[0][0] <= now - WINDOW_SECONDS:
                window.popleft()
            used = sum(size for _, size in window)
            if used + size > user.upload_bytes_per_minute:
                retry = (window[0][0] + WINDOW_SECONDS - now) if window else WINDOW_SECONDS
                raise ResourceExhausted(
                    f"user {user.name!r} may upload {user.upload_bytes_per_minute / 2**20:.1f} MiB per minute "
                    f"and has sent {used / 2**20:.1f} MiB in the last minute; this image is {size / 2**20:.1f} MiB",
                    retry_after_s=max(0.1, retry),
                )
            window.append((now, size))
