"""Object sessions: the prompts of one object, its previous logits, and an undo/redo history."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, replace

from server.engine.engine import EMPTY_PREDICTION, Engine, Prediction, Timings, View
from server.engine.prompts import Box, Click, FieldOfView, PolygonRequest, validate_box, validate_click
from server.engine.strategies import strategy_named
from server.errors import FailedPrecondition, InvalidArgument
from server.geometry import PolygonOptions
from server.models.preemption import yield_point
from server.models.sam import Candidates, PendingDecode

MAX_CLICKS_PER_OBJECT = 256


@dataclass(frozen=True)
class Step:
    """The state of an object after one action; kept whole so undo returns it exactly."""

    clicks: tuple[Click, ...]
    box: Box | None
    prediction: Prediction


@dataclass(frozen=True)
class Outcome:
    """What a request answers: the current step, where it sits in the history, and what it cost."""

    object_id: str
    view: View
    step: Step
    step_index: int
    can_undo: bool
    can_redo: bool
    timings: Timings
    strategy: str


class ObjectSession:
    """One object being segmented on one field of view. Call from the model worker thread only."""

    def __init__(self, engine: Engine, view: View, polygons: PolygonOptions, strategy: str, object_id: str = ""):
        self.engine = engine
        self.view = view
        self.polygons = polygons
        self.strategy = strategy
        self.object_id = object_id or uuid.uuid4().hex
        self._history: list[Step] = [Step((), None, EMPTY_PREDICTION)]
        self._cursor = 0

    @classmethod
    def open(
        cls, engine: Engine, fov: FieldOfView, model: str, polygons: PolygonRequest, strategy: str = "", object_id: str = ""
    ) -> tuple["ObjectSession", Outcome]:
        """Resolves the field of view and computes (or finds) its embedding, so the first click is fast.

        strategy: which candidate mask each step keeps; empty = the server's default.
        """
        started = time.perf_counter()
        strategy = strategy or engine.config.default_strategy
        strategy_named(strategy)
        view = engine.resolve_view(fov, model)
        session = cls(engine, view, engine.polygon_options(view, polygons), strategy, object_id)
        timings = Timings()
        engine.embedding(view, timings)
        return session, session._outcome(timings, started)

    @property
    def current(self) -> Step:
        return self._history[self._cursor]

    def add_clicks(self, clicks: list[Click]) -> Outcome:
        """Adds one or several clicks as one step (one decode with all prompts so far)."""
        return _decode_now(self.pending_clicks(clicks))

    def set_box(self, box: Box) -> Outcome:
        """Sets (or replaces) the box prompt as one step."""
        return _decode_now(self.pending_box(box))

    def pending_clicks(self, clicks: list[Click]) -> PendingDecode[Outcome]:
        """add_clicks, stopped before the decoder pass so that a scheduler can batch it with others."""
        if not clicks:
            raise InvalidArgument("a clicks message needs at least one click")
        checked = tuple(validate_click(click, self.view.region) for click in clicks)
        if len(self.current.clicks) + len(checked) > MAX_CLICKS_PER_OBJECT:
            raise InvalidArgument(f"an object takes at most {MAX_CLICKS_PER_OBJECT} clicks")
        return self._pending(self.current.clicks + checked, self.current.box, new_clicks=len(checked))

    def pending_box(self, box: Box) -> PendingDecode[Outcome]:
        """set_box, stopped before the decoder pass."""
        return self._pending(self.current.clicks, validate_box(box, self.view.region), new_clicks=0)

    def reset(self) -> Outcome:
        """Clears every prompt; undoable like any other step."""
        started = time.perf_counter()
        self._push(Step((), None, EMPTY_PREDICTION))
        return self._outcome(Timings(), started)

    def undo(self) -> Outcome:
        started = time.perf_counter()
        if self._cursor == 0:
            raise FailedPrecondition("nothing to undo: the object has no earlier step")
        self._cursor -= 1
        return self._outcome(Timings(), started)

    def redo(self) -> Outcome:
        started = time.perf_counter()
        if self._cursor == len(self._history) - 1:
            raise FailedPrecondition("nothing to redo: no step was undone since the last change")
        self._cursor += 1
        return self._outcome(Timings(), started)

    def finish(self) -> Outcome:
        """The final result; the caller forgets the session afterwards."""
        started = time.perf_counter()
        return self._outcome(Timings(), started)

    def _pending(self, clicks: tuple[Click, ...], box: Box | None, new_clicks: int) -> PendingDecode[Outcome]:
        started = time.perf_counter()
        timings = Timings()
        decode = self.engine.decode_input(self.view, clicks, box, self.current.prediction.logits, timings)
        position = (len(self._history), self._cursor)

        def complete(candidates: Candidates, decode_ms: float) -> Outcome:
            if (len(self._history), self._cursor) != position:
                raise FailedPrecondition("the object changed while this step waited for the decoder; send it again")
            timings.decode_ms = decode_ms
            prediction = self.engine.prediction(self.view, decode, candidates, new_clicks, self.strategy, self.polygons, timings)
            self._push(Step(clicks, box, prediction))
            return self._outcome(timings, started)

        return PendingDecode(self.view.model, decode, complete)

    def _push(self, step: Step) -> None:
        del self._history[self._cursor + 1 :]
        self._history.append(step)
        self._cursor += 1

    def _outcome(self, timings: Timings, started: float) -> Outcome:
        timings = replace(timings, total_ms=(time.perf_counter() - started) * 1e3)
        return Outcome(
            self.object_id,
            self.view,
            self.current,
            self._cursor,
            can_undo=self._cursor > 0,
            can_redo=self._cursor < len(self._history) - 1,
            timings=timings,
            strategy=self.strategy,
        )


def _decode_now(pending: PendingDecode[Outcome]) -> Outcome:
    """Runs a pending step's decoder pass at once (no batching)."""
    item = pending.input
    started = time.perf_counter()
    candidates = pending.model.candidates(item.embedding, item.points, item.labels, item.box, item.previous_logits)
    decode_ms = (time.perf_counter() - started) * 1e3
    yield_point()
    return pending.complete(candidates, decode_ms)
