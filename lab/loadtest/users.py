"""The load test's simulated users: interactive users who open objects on their field of view and click
with a think time before each click (now and then undoing one), batch users running `Segment` calls on
fresh fields of view, and the measured phase that runs them all against one server."""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
from tqdm import tqdm

from slidesam.lab.loadtest.targets import Slides, Target
from slidesam.lab.server_probes import RssSampler, memory_mib, scrape_metrics
from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.errors import ConnectionLost, ServerError

T = TypeVar("T")
POSITIVE_SHARE = 0.6        # after the first (always positive) click
UNDO_SHARE = 0.1            # chance of an undo after a click that is not an object's first
BATCH_CLICKS = 3
READY_TIMEOUT_S = 300.0     # how long the warm-up waits for the server to answer


@dataclass
class Recorder:
    """What the simulated users measured; shared by their threads."""

    progress: tqdm
    click_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    open_ms: list[float] = field(default_factory=list)
    open_hits: int = 0
    undo_ms: list[float] = field(default_factory=list)
    segment_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def clicked(self, ms: float, queue_ms: float, decode_ms: float) -> None:
        with self._lock:
            self.click_ms.append(ms)
            self.queue_ms.append(queue_ms)
            self.decode_ms.append(decode_ms)
            self.progress.update()

    def opened(self, ms: float, cache_hit: bool) -> None:
        with self._lock:
            self.open_ms.append(ms)
            self.open_hits += cache_hit

    def undone(self, ms: float) -> None:
        with self._lock:
            self.undo_ms.append(ms)

    def segmented(self, ms: float) -> None:
        with self._lock:
            self.segment_ms.append(ms)

    def failed(self, code: str, what: str, message: str) -> None:
        with self._lock:
            self.errors[code] += 1
            self.error_examples.setdefault(code, f"{what}: {message}")


@dataclass(frozen=True)
class Phase:
    """The measured phase: over at its deadline, or earlier when stopped."""

    deadline: float
    stopped: threading.Event = field(default_factory=threading.Event)

    def over(self) -> bool:
        return self.stopped.is_set() or time.monotonic() >= self.deadline

    def pause(self, seconds: float) -> None:
        self.stopped.wait(max(0.0, min(seconds, self.deadline - time.monotonic())))


def timed(recorder: Recorder, phase: Phase, what: str, action: Callable[..., T], *args: Any) -> tuple[T, float] | None:
    """(action(*args), its wall time in ms), or None after a refusal, which is recorded by status code; waits
    the server's retry hint (RESOURCE_EXHAUSTED). ConnectionLost is recorded and raised."""
    started = time.perf_counter()
    try:
        result = action(*args)
    except ServerError as error:
        recorder.failed(error.code.name, what, error.message)
        if error.retry_after:
            phase.pause(error.retry_after)
        return None
    except ConnectionLost as error:
        recorder.failed("CONNECTION_LOST", what, str(error))
        raise
    return result, (time.perf_counter() - started) * 1e3


@dataclass(frozen=True)
class Workload:
    """What each interactive user does: objects x clicks, a think time before each click."""

    clicks: int
    objects: int
    think_ms: float

    def think(self, rng: np.random.Generator) -> float:
        """A think time in seconds: think_ms jittered by ±50 %."""
        return self.think_ms * rng.uniform(0.5, 1.5) / 1e3


@dataclass(frozen=True)
class User:
    """A simulated user: its own token, random generator and (interactive users) field of view."""

    name: str
    token: str | None
    seed: tuple[int, ...]  # seeds the user's own random generator
    target: Target | None = None  # interactive users click on one field of view; batch users take fresh ones


def annotate_object(client: SlidesamClient, user: User, work: Workload, rng: np.random.Generator,
                    phase: Phase, recorder: Recorder) -> None:
    """Open, click (with an occasional undo), finish: one object."""
    opened = timed(recorder, phase, "open", client.open_object, user.target.fov)
    if opened is None:
        return
    session, ms = opened
    recorder.opened(ms, session.result.cache_hit)
    with session:
        for index in range(work.clicks):
            phase.pause(work.think(rng))
            if phase.over():
                break
            click = user.target.click(index == 0 or rng.random() < POSITIVE_SHARE, rng)
            clicked = timed(recorder, phase, "click", session.click, click.x, click.y, click.positive)
            if clicked is None:
                continue
            result, ms = clicked
            recorder.clicked(ms, result.timings.queue_ms, result.timings.decode_ms)
            if index and rng.random() < UNDO_SHARE:
                phase.pause(work.think(rng))
                undone = timed(recorder, phase, "undo", session.undo)
                if undone is not None:
                    recorder.undone(undone[1])
        timed(recorder, phase, "finish", session.finish)


def interactive_user(address: str, user: User, work: Workload, phase: Phase, recorder: Recorder) -> None:
    """One pathologist: --objects objects on the user's field of view, until the phase is over."""
    rng = np.random.default_rng(user.seed)
    with SlidesamClient(address, token=user.token) as client:
        phase.pause(work.think(rng))  # users do not all arrive in the same instant
        with contextlib.suppress(ConnectionLost):  # recorded; the server is gone for this user
            for _ in range(work.objects):
                if phase.over():
                    break
                annotate_object(client, user, work, rng, phase, recorder)


def batch_user(address: str, user: User, slides: Slides, phase: Phase, recorder: Recorder) -> None:
    """Pre-annotation: Segment calls with a few clicks on fresh fields of view until the phase is over."""
    rng = np.random.default_rng(user.seed)
    with SlidesamClient(address, token=user.token) as client:
        while not phase.over():
            target = slides.fresh_target()
            clicks = [target.click(index == 0 or rng.random() < POSITIVE_SHARE, rng) for index in range(BATCH_CLICKS)]
            segmented = timed(recorder, phase, "segment", client.segment, target.fov, clicks)
            if segmented is not None:
                recorder.segmented(segmented[1])


class Threads:
    """Functions running on daemon threads (Ctrl-C never waits for them); join() re-raises the first failure."""

    def __init__(self, functions: list[Callable[[], None]]):
        self._failures: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, args=(function,), daemon=True) for function in functions]
        for thread in self._threads:
            thread.start()

    def _run(self, function: Callable[[], None]) -> None:
        try:
            function()
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            self._failures.append(error)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()
        if self._failures:
            raise self._failures[0]


def warm_up(address: str, user: User, slides: Slides) -> None:
    """One open and click on a field of view nobody else uses, so first-use costs stay out of the figures."""
    target = slides.fresh_target()
    with SlidesamClient(address, token=user.token) as client:
        client.wait_ready(timeout=READY_TIMEOUT_S)
        with client.open_object(target.fov) as session:
            click = target.click(True, np.random.default_rng(user.seed))
            session.click(click.x, click.y, click.positive)
            session.finish()


@dataclass(frozen=True)
class Measurement:
    """The measured phase: what the users recorded, its wall time, and the server before and after it."""

    recorder: Recorder
    seconds: float
    memory_before: dict[str, float | None]
    memory_after: dict[str, float | None]
    rss_highest: float | None
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]


def shared_count(users: int, shared_fraction: float) -> int:
    """How many of `users` interactive users share the two shared fields of view."""
    return round(users * shared_fraction)


def make_users(slides: Slides, tokens: Callable[[str], str | None], users: int, shared: int, batch_users: int,
               seed: int) -> tuple[list[User], list[User], User]:
    """Interactive users (the first `shared` on two shared fields of view), batch users, the warm-up user;
    `tokens` gives each user's token by name."""
    shared_targets = [slides.cmu_target(), slides.fresh_target()]
    interactive = []
    for index in range(users):
        target = shared_targets[index % len(shared_targets)] if index < shared else slides.fresh_target()
        name = f"loadtest-{index:03d}"
        interactive.append(User(name, tokens(name), (seed, 0, index), target))
    batch = [User(f"loadtest-batch-{i:03d}", tokens(f"loadtest-batch-{i:03d}"), (seed, 1, i)) for i in range(batch_users)]
    return interactive, batch, User("loadtest-warmup", tokens("loadtest-warmup"), (seed, 2))


def measure(address: str, slides: Slides, users: list[User], batch: list[User], work: Workload, duration: float,
            pid: int | None, metrics_port: int | None) -> Measurement:
    """Runs the users until they are done or `duration` seconds are over (batch users stop with them); the
    server's memory and metrics are read when `pid` and `metrics_port` are known."""
    memory_before, metrics_before, sampler = memory_mib(pid), scrape_metrics(metrics_port), RssSampler(pid)
    phase = Phase(time.monotonic() + duration)
    with tqdm(total=len(users) * work.objects * work.clicks, unit="click", desc="clicks", file=sys.stderr) as progress:
        recorder = Recorder(progress)
        started = time.perf_counter()
        batch_threads = Threads([lambda u=u: batch_user(address, u, slides, phase, recorder) for u in batch])
        try:
            Threads([lambda u=u: interactive_user(address, u, work, phase, recorder) for u in users]).join()
            seconds = time.perf_counter() - started
        finally:
            phase.stopped.set()
        batch_threads.join()  # each finishes the call it has in flight
    return Measurement(recorder, seconds, memory_before, memory_mib(pid), sampler.stop(), metrics_before, scrape_metrics(metrics_port))
