"""The model scheduler: one worker thread per device runs every model call, chosen fairly from a
bounded queue.

- Interactive work (a pathologist's clicks) goes before batch work (pre-annotation).
- Within a priority, users take turns (round robin), so one user's flood does not starve another.
- Long work (an image encode) pauses at preemption points between encoder blocks; waiting clicks,
  and interactive work waiting behind batch work, run in those pauses.
- Decoder passes that wait together (several users' clicks) run as one batch.
- Once a click's mask is upscaled, its polygons are traced on a small host pool (HostStage), so the
  model's thread goes on to the next decode meanwhile.
- A full queue is refused with RESOURCE_EXHAUSTED and a retry hint; work whose client went away or
  whose deadline passed is dropped, also in the middle of an encode.
- A CUDA out-of-memory error empties the embedding cache and retries once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from functools import partial
from typing import Any, Callable, TypeVar

import torch

from slidesam.server.fair_share import run_as
from slidesam.server.errors import Cancelled, DeadlineExceeded, FailedPrecondition, ResourceExhausted
from slidesam.server.models.preemption import preemption_hook
from slidesam.server.models.served import HostStage, PendingDecode

log = logging.getLogger(__name__)
T = TypeVar("T")

HOST_THREADS = 2
"""Threads tracing polygons off the model's thread (OpenCV and shapely release the GIL while they work)."""

class Priority(IntEnum):
    INTERACTIVE = 0
    BATCH = 1


@dataclass(frozen=True)
class SchedulerConfig:
    max_pending: int = 64            # jobs waiting, all users together
    max_pending_per_user: int = 16   # jobs one user may have waiting
    batch_share: float = 0.5         # the share of max_pending that batch work may fill
    max_batch: int = 8               # decoder passes run together; 1 turns batching off


@dataclass(eq=False)
class Job:
    """One call to run on the worker thread, and the future its caller awaits."""

    function: Callable[[], Any]
    user: str
    priority: Priority
    light: bool                      # cheap (a decoder pass, no encode): may run inside a pause of longer work
    batchable: bool                  # returns a PendingDecode that may share a decoder batch
    deadline: float | None           # time.monotonic() by which the work must be done
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    submitted: float = field(default_factory=time.perf_counter)
    started: float | None = None
    cancelled: bool = False

    @property
    def urgency(self) -> int:
        """Lower runs first at a preemption point: interactive before batch, light before heavy."""
        return 2 * self.priority + (0 if self.light else 1)

    @property
    def queue_ms(self) -> float:
        return ((self.started or time.perf_counter()) - self.submitted) * 1e3

    def check_alive(self) -> None:
        """Raises when the job should stop: its client went away or its deadline passed."""
        if self.cancelled:
            raise Cancelled("the client cancelled the request or disconnected")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlineExceeded("the request's deadline passed before the model could finish it")


class FairQueue:
    """Jobs by priority, then round robin over users, first in first out for each user. Not locked."""

    def __init__(self) -> None:
        self._lanes: dict[Priority, OrderedDict[str, deque[Job]]] = {priority: OrderedDict() for priority in Priority}
        self._per_user: dict[str, int] = {}
        self._depth = {priority: 0 for priority in Priority}

    def __len__(self) -> int:
        return sum(self._depth.values())

    def depth(self, priority: Priority) -> int:
        return self._depth[priority]

    def pending_of(self, user: str) -> int:
        return self._per_user.get(user, 0)

    def push(self, job: Job) -> None:
        self._lanes[job.priority].setdefault(job.user, deque()).append(job)
        self._per_user[job.user] = self._per_user.get(job.user, 0) + 1
        self._depth[job.priority] += 1

    def pop(self, wanted: Callable[[Job], bool] = lambda job: True) -> Job | None:
        """The next wanted job: the highest priority first, then the user whose turn it is."""
        for priority in Priority:
            lane = self._lanes[priority]
            for user in list(lane):
                jobs = lane[user]
                if not wanted(jobs[0]):
                    continue
                job = jobs.popleft()
                if jobs:
                    lane.move_to_end(user)
                else:
                    del lane[user]
                self._per_user[user] -= 1
                if not self._per_user[user]:
                    del self._per_user[user]
                self._depth[priority] -= 1
                return job
        return None


class Scheduler:
    """Runs blocking model work one job at a time on its own thread, for many async callers."""

    def __init__(
        self,
        config: SchedulerConfig = SchedulerConfig(),
        on_out_of_memory: Callable[[], None] = lambda: None,
        observe_batch: Callable[[int], None] = lambda size: None,
    ):
        self.config = config
        self._on_out_of_memory = on_out_of_memory
        self._observe_batch = observe_batch
        self._queue = FairQueue()
        self._wakeup = threading.Condition()
        self._closing = False
        self._outstanding = 0                        # admitted and not yet answered (queued or running)
        self._service_seconds = 0.1                  # moving average of a job's run time (for retry hints)
        self._host = ThreadPoolExecutor(max_workers=HOST_THREADS, thread_name_prefix="slidesam-polygons")
        self._thread = threading.Thread(target=self._serve, name="slidesam-model", daemon=True)
        self._thread.start()

    @property
    def outstanding(self) -> int:
        """Jobs admitted and not yet answered: waiting or running."""
        return self._outstanding

    def depth(self, priority: Priority | None = None) -> int:
        """Jobs waiting (of one priority, or all)."""
        with self._wakeup:
            return len(self._queue) if priority is None else self._queue.depth(priority)

    async def run(
        self,
        function: Callable[[], T],
        *,
        user: str,
        priority: Priority = Priority.INTERACTIVE,
        light: bool = False,
        batchable: bool = False,
        deadline: float | None = None,
    ) -> tuple[T, float]:
        """function()'s result (a PendingDecode is decoded first) and the milliseconds it queued.

        Cancelling the awaiting task (the client went away) drops the job, even mid-encode.
        """
        loop = asyncio.get_running_loop()
        job = Job(function, user, priority, light, batchable, deadline, loop, loop.create_future())
        with self._wakeup:
            self._admit(job)
            self._queue.push(job)
            self._outstanding += 1
            self._wakeup.notify()
        try:
            result = await job.future
        except asyncio.CancelledError:
            job.cancelled = True
            raise
        finally:
            with self._wakeup:
                self._outstanding -= 1
        return result, job.queue_ms

    def shutdown(self) -> None:
        """Finishes the jobs already queued, then stops the worker thread and the host pool."""
        with self._wakeup:
            self._closing = True
            self._wakeup.notify()
        self._thread.join()
        self._host.shutdown(wait=True)

    def _admit(self, job: Job) -> None:
        if self._closing:
            raise FailedPrecondition("the server is shutting down; retry on another server or later")
        queued = len(self._queue)
        limit = self.config.max_pending
        if job.priority is Priority.BATCH:
            limit = max(1, int(self.config.max_pending * self.config.batch_share))
            queued = self._queue.depth(Priority.BATCH)
        if queued >= limit:
            raise ResourceExhausted(
                f"the server is busy ({queued} {job.priority.name.lower()} requests queued); retry in a moment",
                self._retry_after(queued),
            )
        if self._queue.pending_of(job.user) >= self.config.max_pending_per_user:
            raise ResourceExhausted(
                f"user {job.user!r} already has {self.config.max_pending_per_user} requests queued; "
                "wait for answers before sending more",
                self._retry_after(self._queue.pending_of(job.user)),
            )

    def _retry_after(self, queued: int) -> float:
        """Seconds until the queue has likely drained enough: its length times the mean job time."""
        return min(30.0, max(0.05, queued * self._service_seconds))

    def _serve(self) -> None:
        while True:
            with self._wakeup:
                while not len(self._queue) and not self._closing:
                    self._wakeup.wait()
                job = self._queue.pop()
                if job is None:
                    return
            self._execute(job)

    def _execute(self, job: Job) -> None:
        """Runs one job (and, when it is a decoder pass, any waiting passes that can share its batch)."""
        job.started = time.perf_counter()
        try:
            job.check_alive()
            with preemption_hook(lambda: self._pause(job)):
                result = self._with_memory_retry(partial(run_as, job.user, job.function))
        except BaseException as error:  # noqa: BLE001 - every failure goes to the caller
            self._settle(job, error=error)
            return
        if isinstance(result, PendingDecode):
            with preemption_hook(None):  # a decoder batch and its completions run through, never paused
                self._decode([(job, result)] + self._waiting_decodes())
        else:
            self._settle(job, result=result)
        elapsed = time.perf_counter() - job.started
        self._service_seconds = 0.8 * self._service_seconds + 0.2 * elapsed

    def _pause(self, current: Job) -> None:
        """A preemption point inside current: stop if it is dead, else run the work that may overtake it.

        Work overtakes when it is more urgent: interactive light < interactive heavy < batch light <
        batch heavy. What runs here may pause in turn for still more urgent work, so nesting is at
        most three deep.
        """
        current.check_alive()
        while True:
            with self._wakeup:
                urgent = self._queue.pop(lambda job: job.urgency < current.urgency)
            if urgent is None:
                return
            self._execute(urgent)

    def _waiting_decodes(self) -> list[tuple[Job, PendingDecode]]:
        """Prepares waiting batchable jobs (up to max_batch - 1) so their decoder passes join this batch."""
        gathered: list[tuple[Job, PendingDecode]] = []
        while len(gathered) < self.config.max_batch - 1:
            with self._wakeup:
                job = self._queue.pop(lambda waiting: waiting.batchable)
            if job is None:
                break
            job.started = time.perf_counter()
            try:
                job.check_alive()
                pending = self._with_memory_retry(partial(run_as, job.user, job.function))
            except BaseException as error:  # noqa: BLE001
                self._settle(job, error=error)
                continue
            gathered.append((job, pending))
        return gathered

    def _decode(self, work: list[tuple[Job, PendingDecode]]) -> None:
        """One batched decoder pass per model, then each job's own completion."""
        by_model: dict[int, list[tuple[Job, PendingDecode]]] = {}
        for item in work:
            by_model.setdefault(id(item[1].model), []).append(item)
        for group in by_model.values():
            model = group[0][1].model
            started = time.perf_counter()
            try:
                candidates = self._with_memory_retry(lambda: model.candidates_many([pending.input for _, pending in group]))
            except BaseException as error:  # noqa: BLE001
                for job, _ in group:
                    self._settle(job, error=error)
                continue
            decode_ms = (time.perf_counter() - started) * 1e3
            self._observe_batch(len(group))
            for (job, pending), result in zip(group, candidates):
                try:
                    completed = pending.complete(result, decode_ms)
                except BaseException as error:  # noqa: BLE001
                    self._settle(job, error=error)
                    continue
                if isinstance(completed, HostStage):
                    self._host.submit(completed.run).add_done_callback(partial(self._settle_from, job))
                else:
                    self._settle(job, result=completed)

    def _with_memory_retry(self, function: Callable[[], T]) -> T:
        try:
            return function()
        except torch.cuda.OutOfMemoryError:
            log.warning("CUDA out of memory: emptying the embedding cache and retrying once")
            self._on_out_of_memory()
        try:
            return function()
        except torch.cuda.OutOfMemoryError as error:
            raise ResourceExhausted(
                "the GPU ran out of memory for this request even after the embedding cache was emptied; "
                "try a smaller field of view or a lower resolution",
                retry_after_s=5.0,
            ) from error

    @classmethod
    def _settle_from(cls, job: Job, done: Future) -> None:
        """Settles job with a host stage's outcome."""
        error = done.exception()
        cls._settle(job, result=None if error else done.result(), error=error)

    @staticmethod
    def _settle(job: Job, result: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if job.future.done():
                return
            if error is None:
                job.future.set_result(result)
            else:
                job.future.set_exception(error)

        job.loop.call_soon_threadsafe(settle)
