"""An object being segmented in the engine (EngineObject): its prompts, previous logits, and an undo/redo history."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, replace
from typing import Callable

from slidesam.server.engine.engine import Engine
from slidesam.server.engine.geometry import PolygonLimits
from slidesam.server.engine.multiwindow import tiled_step
from slidesam.server.engine.prompts import Box, Click, Outline, PolygonRequest, RegionRequest, validate_box, validate_click, validate_outline
from slidesam.server.engine.results import EMPTY_PREDICTION, Prediction, Timings
from slidesam.server.engine.strategies import strategy_named
from slidesam.server.engine.views import ModelResolution, TiledView, View
from slidesam.server.errors import FailedPrecondition, InvalidArgument
from slidesam.server.models.preemption import yield_point
from slidesam.server.models.served import Candidates, HostStage, PendingDecode
from slidesam.server.slides.regions import Rect

log = logging.getLogger(__name__)

MAX_CLICKS_PER_OBJECT = 256
MAX_HISTORY_STEPS = 100
"""Undo depth: steps an object keeps besides its current one (older ones are dropped first)."""
MAX_HISTORY_BYTES = 48 * 2**20
"""Memory the steps kept for undo and redo may hold per object, beside the current step."""


@dataclass(frozen=True)
class Step:
    """The state of an object after one action; kept whole so undo returns it exactly."""

    clicks: tuple[Click, ...]
    box: Box | None
    prediction: Prediction
    outline: Outline | None = None


@dataclass(frozen=True)
class Outcome:
    """What a request answers: the current step, where it sits in the history, and what it cost."""

    object_id: str
    view: View | TiledView
    step: Step
    step_index: int
    can_undo: bool
    can_redo: bool
    timings: Timings
    strategy: str

    @property
    def resolution(self) -> ModelResolution:
        """The resolution the model saw for this step's mask (for an empty step: what a decode would see)."""
        if self.step.prediction.resolution is not None:
            return self.step.prediction.resolution
        view = self.view
        if isinstance(view, TiledView):
            coarse = view.coarse.encoder_downsample
            return ModelResolution(view.downsample, view.downsample, view.source.mpp, 0, 0, coarse)
        return ModelResolution(view.downsample, view.encoder_downsample, view.source.mpp, 1, 0)


class EngineObject:
    """One object being segmented on one field of view. Call from the model worker thread only; a step's
    polygons may be traced on another thread (HostStage), and every call waits for them first."""

    def __init__(self, engine: Engine, view: View | TiledView, polygons: PolygonLimits, strategy: str, object_id: str = ""):
        self.engine = engine
        self.view = view
        self.polygons = polygons
        self.strategy = strategy
        self.object_id = object_id or uuid.uuid4().hex
        self._history: list[Step] = [Step((), None, EMPTY_PREDICTION)]
        self._cursor = 0
        self._dropped = 0   # oldest steps forgotten (bounded history); step numbers go on counting
        self._version = 0   # changes with every step, undo and redo
        self._traced = threading.Event()  # clear while a step's polygons are being traced off the model thread
        self._traced.set()

    @classmethod
    def open(
        cls, engine: Engine, fov: RegionRequest, model: str, polygons: PolygonRequest, strategy: str = "", object_id: str = "",
        check_prompts: Callable[[Rect], None] = lambda region: None,
    ) -> tuple["EngineObject", Outcome]:
        """Resolves the field of view and computes (or finds) its embedding, so the first click is fast.

        strategy: which candidate mask each step keeps; empty = the server's default.
        check_prompts: validates prompts to come against the region actually used, before any model work.
        """
        started = time.perf_counter()
        strategy = strategy or engine.config.default_strategy
        strategy_named(strategy)
        view = engine.resolve(fov, model)
        check_prompts(view.region)
        session = cls(engine, view, engine.polygon_limits(view, polygons), strategy, object_id)
        timings = Timings()
        engine.embedding(view.coarse if isinstance(view, TiledView) else view, timings)
        resolution = session._outcome(timings, started).resolution
        if isinstance(view, TiledView):
            log.info("object %s: region %s at downsample %g is segmented coarse to fine over encoder windows",
                     session.object_id[:8], view.region.describe(), view.downsample)
        elif resolution.downsampled:
            log.warning("object %s: region %s is larger than one encoder window at downsample %g; the model sees it at "
                        "downsample %.3g (ask for multi-window or a smaller region)",
                        session.object_id[:8], view.region.describe(), view.downsample, resolution.encoder_downsample)
        return session, session._outcome(timings, started)

    @property
    def light_steps(self) -> bool:
        """Whether a click is one decoder pass (batchable, never an encode): false for multi-window objects."""
        return not isinstance(self.view, TiledView)

    @property
    def current(self) -> Step:
        self._traced.wait()
        return self._history[self._cursor]

    def add_clicks(self, clicks: list[Click]) -> Outcome:
        """Adds one or several clicks as one step (one decode with all prompts so far)."""
        return _decode_now(self.pending_clicks(clicks))

    def set_box(self, box: Box) -> Outcome:
        """Sets (or replaces) the box prompt as one step."""
        return _decode_now(self.pending_box(box))

    def set_outline(self, outline: Outline) -> Outcome:
        """Makes an existing outline the prompt (clearing clicks and box) as one step."""
        return _decode_now(self.pending_outline(outline))

    def pending_clicks(self, clicks: list[Click]) -> PendingDecode[Outcome] | Outcome:
        """add_clicks, stopped before the decoder pass so that a scheduler can batch it with others
        (a multi-window object runs its whole step: it needs several passes, maybe encodes)."""
        if not clicks:
            raise InvalidArgument("a clicks message needs at least one click")
        check_click_count(len(self.current.clicks) + len(clicks))
        checked = tuple(validate_click(click, self.view.region) for click in clicks)
        current = self.current
        return self._pending(current.clicks + checked, current.box, current.outline, new_clicks=len(checked))

    def pending_box(self, box: Box) -> PendingDecode[Outcome] | Outcome:
        """set_box, stopped before the decoder pass."""
        current = self.current
        return self._pending(current.clicks, validate_box(box, self.view.region), current.outline, new_clicks=0)

    def pending_outline(self, outline: Outline) -> PendingDecode[Outcome] | Outcome:
        """set_outline, stopped before the decoder pass: a fresh start from the outline alone."""
        return self._pending((), None, validate_outline(outline, self.view.region), new_clicks=0, fresh=True)

    def reset(self) -> Outcome:
        """Clears every prompt; undoable like any other step."""
        started = time.perf_counter()
        self._traced.wait()
        self._push(Step((), None, EMPTY_PREDICTION))
        return self._outcome(Timings(), started)

    def undo(self) -> Outcome:
        started = time.perf_counter()
        self._traced.wait()
        if self._cursor == 0:
            if self._dropped:
                raise FailedPrecondition(f"nothing more to undo: an object keeps its last {len(self._history) - 1} steps")
            raise FailedPrecondition("nothing to undo: the object has no earlier step")
        self._cursor -= 1
        self._version += 1
        return self._outcome(Timings(), started)

    def redo(self) -> Outcome:
        started = time.perf_counter()
        self._traced.wait()
        if self._cursor == len(self._history) - 1:
            raise FailedPrecondition("nothing to redo: no step was undone since the last change")
        self._cursor += 1
        self._version += 1
        return self._outcome(Timings(), started)

    def finish(self) -> Outcome:
        """The final result; the caller forgets the session afterwards."""
        started = time.perf_counter()
        self._traced.wait()
        return self._outcome(Timings(), started)

    def _pending(
        self, clicks: tuple[Click, ...], box: Box | None, outline: Outline | None, new_clicks: int, fresh: bool = False
    ) -> PendingDecode[Outcome] | Outcome:
        started = time.perf_counter()
        timings = Timings()
        previous = EMPTY_PREDICTION if fresh else self.current.prediction
        if isinstance(self.view, TiledView):
            prediction = tiled_step(
                self.engine, self.view, clicks, box, outline, previous, new_clicks, self.strategy, self.polygons, timings
            )
            self._push(Step(clicks, box, prediction, outline))
            return self._outcome(timings, started)
        decode = self.engine.decode_input(self.view, clicks, box, previous.logits, timings, outline)
        version = self._version

        def complete(candidates: Candidates, decode_ms: float) -> HostStage[Outcome]:
            if self._version != version:
                raise FailedPrecondition("the object changed while this step waited for the decoder; send it again")
            timings.decode_ms = decode_ms
            chosen = self.engine.choose(self.view, decode, candidates, new_clicks, self.strategy, timings)
            self._version += 1  # any other step prepared against the old state is now stale
            self._traced.clear()

            def trace() -> Outcome:
                try:
                    prediction = self.engine.polygons_of(self.view, chosen, self.polygons, timings)
                    self._push(Step(clicks, box, prediction, outline))
                    return self._outcome(timings, started)
                finally:
                    self._traced.set()

            return HostStage(trace)

        return PendingDecode(self.view.model, decode, complete)

    def _push(self, step: Step) -> None:
        """Makes step current, forgetting the redo steps and the oldest steps beyond the history's bounds."""
        del self._history[self._cursor + 1 :]
        self._history.append(step)
        start, older_bytes = len(self._history) - 1, 0
        while start > 0 and len(self._history) - start <= MAX_HISTORY_STEPS:
            older_bytes += self._history[start - 1].prediction.nbytes
            if older_bytes > MAX_HISTORY_BYTES:
                break
            start -= 1
        del self._history[:start]
        self._dropped += start
        self._cursor = len(self._history) - 1
        self._version += 1

    @property
    def history_bytes(self) -> int:
        """Memory held by every step this object keeps (for undo, redo and the current one)."""
        self._traced.wait()
        return sum(step.prediction.nbytes for step in self._history)

    def _outcome(self, timings: Timings, started: float) -> Outcome:
        timings = replace(timings, total_ms=(time.perf_counter() - started) * 1e3)
        return Outcome(
            self.object_id,
            self.view,
            self._history[self._cursor],
            self._dropped + self._cursor,
            can_undo=self._cursor > 0,
            can_redo=self._cursor < len(self._history) - 1,
            timings=timings,
            strategy=self.strategy,
        )


def check_click_count(count: int) -> None:
    """InvalidArgument when an object would hold more clicks than it takes."""
    if count > MAX_CLICKS_PER_OBJECT:
        raise InvalidArgument(f"an object takes at most {MAX_CLICKS_PER_OBJECT} clicks, got {count}")


def _decode_now(pending: PendingDecode[Outcome] | Outcome) -> Outcome:
    """Runs a pending step's decoder pass and its polygons at once, on this thread (no batching)."""
    if isinstance(pending, Outcome):
        return pending
    item = pending.input
    started = time.perf_counter()
    candidates = pending.model.candidates(item.embedding, item.points, item.labels, item.box, item.previous_logits)
    decode_ms = (time.perf_counter() - started) * 1e3
    yield_point()
    result = pending.complete(candidates, decode_ms)
    return result.run() if isinstance(result, HostStage) else result
