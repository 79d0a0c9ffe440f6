"""Where uploaded images are decoded: a few low-priority threads of their own, a few decodes per user.

Decoding never runs on asyncio's default thread pool, which the server needs for choosing a device and
opening slides: a flood of uploads once held other users' opens for a minute. The threads run at the
lowest CPU priority (nice 19 on Linux, where a thread's nice value is its own), so on a busy CPU the
model's work goes first. Each user may run `per_user` decodes at once and have `max_waiting` more
waiting; beyond that an upload is refused with RESOURCE_EXHAUSTED and a retry hint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from slidesam.server.errors import ResourceExhausted

log = logging.getLogger(__name__)
T = TypeVar("T")

LOWEST_PRIORITY = 19


def _lower_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
    except (OSError, AttributeError) as error:  # not permitted, or no such call: decodes run at normal priority
        log.warning("cannot lower the priority of an image decoding thread: %s", error)


class DecodePool:
    """Runs decodes on `workers` low-priority threads, at most `per_user` at once for each user."""

    def __init__(self, workers: int = 2, per_user: int = 1, max_waiting: int = 4):
        if workers < 1 or per_user < 1 or max_waiting < 0:
            raise ValueError("a decode pool needs at least one worker and one decode per user")
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="slidesam-decode", initializer=_lower_priority)
        self.per_user = per_user
        self.max_waiting = max_waiting
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._queued: dict[str, int] = {}  # decodes of each user running or waiting

    async def run(self, user: str, function: Callable[[], T]) -> T:
        """function() on a decoding thread, in turn with the user's other decodes (call on the event loop)."""
        queued = self._queued.get(user, 0)
        if queued >= self.per_user + self.max_waiting:
            raise ResourceExhausted(
                f"user {user!r} already has {queued} uploads being decoded or waiting; wait for their answers",
                retry_after_s=1.0,
            )
        self._queued[user] = queued + 1
        slot = self._slots.setdefault(user, asyncio.Semaphore(self.per_user))
        try:
            async with slot:
                decoding = asyncio.get_running_loop().run_in_executor(self._executor, function)
                try:
                    return await asyncio.shield(decoding)
                except asyncio.CancelledError:  # the caller went away: the decode keeps the user's slot until it ends
                    await asyncio.wait({decoding})
                    raise
        finally:
            self._queued[user] -= 1
            if not self._queued[user]:
                del self._queued[user], self._slots[user]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
