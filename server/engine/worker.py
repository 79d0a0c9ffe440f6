"""The model worker: one thread owns the model and runs every engine call, fed by a bounded queue."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

from server.errors import ResourceExhausted

T = TypeVar("T")


class ModelWorker:
    """Runs blocking engine calls one at a time off the event loop; refuses work beyond max_pending."""

    def __init__(self, max_pending: int = 64):
        self.max_pending = max_pending
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slidesam-model")
        self._pending = 0
        self._lock = threading.Lock()

    @property
    def pending(self) -> int:
        return self._pending

    async def run(self, function: Callable[..., T], *args) -> tuple[T, float]:
        """Result of function(*args) and the milliseconds it waited in the queue."""
        with self._lock:
            if self._pending >= self.max_pending:
                raise ResourceExhausted(
                    f"the server is busy ({self._pending} requests queued); retry in a moment"
                )
            self._pending += 1
        submitted = time.perf_counter()
        waited: list[float] = []

        def timed() -> T:
            waited.append((time.perf_counter() - submitted) * 1e3)
            return function(*args)

        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, timed)
        finally:
            with self._lock:
                self._pending -= 1
        return result, waited[0]

    def shutdown(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
