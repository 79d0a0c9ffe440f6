"""Coarse to fine segmentation of objects larger than one encoder window.

One step (a click, a box, an outline) of a multi-window object:
1. The coarse window (the whole field of view in one encoder window) decodes every prompt with its
   previous logits, as a single-window object would: it locates the object.
2. Fine windows of the image's grid at the resolution asked for are chosen where the coarse boundary
   runs and where the user clicked. Each is prompted from the coarse result: its logits resampled
   into the window's 256 x 256 frame as SAM's mask input, the box of the coarse mask and the positive
   clicks inside the window (grown by a quarter window), the user's clicks inside it, and a point deep inside the coarse interior and exterior where
   no click of that sign is.
   A window keeps the candidate the object's strategy picks (plain: SAM's single-mask answer to these
   prompts); a window without clicks whose answer barely overlaps the coarse prompt answered another
   object at that scale (the background, or a part only seen there) and is left out.
3. A window whose prompts did not change since the previous step keeps its logits (a click re-decodes
   only the windows it affects). Where a decoded window disagrees with the coarse mask in its overlap
   with a window not decoded, that neighbour is decoded too, so the boundary is followed window to window.
4. The logits are stitched at the resolution asked for: fine windows blended with weights that fall
   towards their edges inside the image, the coarse logits with a small weight everywhere (they decide
   only where no fine window lies), so tile borders leave no seams. Fine windows decide within a band
   around the coarse boundary and around the clicks; farther away the coarse window decides (stitching.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from slidesam.server.engine.engine import Engine
from slidesam.server.engine.frames import LOW_RES, OUTSIDE_LOGIT, LowResFrame, deepest, frame_for, low_res_frame, resample
from slidesam.server.engine.geometry import PolygonLimits, RegionTransform, mask_to_geometry
from slidesam.server.engine.prompts import Box, Click, Outline
from slidesam.server.engine.results import Prediction, Timings, WindowResult
from slidesam.server.engine.stitching import stitch
from slidesam.server.engine.strategies import Strategy, strategy_named
from slidesam.server.engine.views import ModelResolution, TiledView
from slidesam.server.engine.window_grid import WindowIndex
from slidesam.server.errors import ResourceExhausted
from slidesam.server.models.preemption import yield_point
from slidesam.server.models.served import DecodeInput
from slidesam.server.slides.regions import Rect

CHANGED_FRACTION = 0.01
"""A window keeps its logits while its coarse prompt changed on at most this share of its logits."""
DISAGREEING_LOGITS = 4
"""A neighbour is decoded when a window disagrees with the coarse mask on more logits than this in their overlap."""
MIN_AGREEMENT = 0.5
"""A fine window without clicks whose mask overlaps its coarse prompt less than this (IoU) answered another
object (a flip to the background or to a part seen only at that scale) and is left out."""
BOX_GROWTH = 0.25


@dataclass(frozen=True)
class _Candidate:
    """A fine window of the field of view and its coarse prompt at this step."""

    index: WindowIndex
    region: Rect
    frame: LowResFrame
    coarse_logits: np.ndarray     # the coarse logits in this frame (OUTSIDE_LOGIT off the field of view)
    coarse: np.ndarray            # coarse_logits > 0 on the field of view
    usable: np.ndarray            # logits on the image and on the field of view
    clicks: tuple[Click, ...]

    @property
    def mixed(self) -> bool:
        """The coarse boundary runs through the window."""
        return bool(self.coarse.any() and (self.usable & ~self.coarse).any())


def tiled_step(
    engine: Engine,
    view: TiledView,
    clicks: tuple[Click, ...],
    box: Box | None,
    outline: Outline | None,
    previous: Prediction,
    new_clicks: int,
    strategy: str,
    polygons: PolygonLimits,
    timings: Timings,
) -> Prediction:
    """One step of a multi-window object: coarse decode, fine windows, stitched polygons."""
    choose = strategy_named(strategy)
    started = time.perf_counter()
    coarse_input = engine.decode_input(view.coarse, clicks, box, previous.logits, timings, outline)
    candidates = view.model.candidates(*_decode_args(coarse_input))
    labels = coarse_input.labels if coarse_input.labels is not None else np.zeros(0, np.int64)
    first_single_click = previous.logits is None and box is None and outline is None and len(labels) == 1
    kept = choose(candidates, labels, new_clicks, previous.logits, first_single_click)
    coarse_logits = candidates.logits[kept].clone()  # a copy: a view would keep all the candidates' logits alive
    coarse_frame = low_res_frame(view.coarse.region, coarse_input.embedding)
    coarse_values = coarse_logits.float().cpu().numpy()
    coarse_values[~coarse_frame.valid_mask()] = OUTSIDE_LOGIT
    yield_point()

    window_timings = Timings()
    fine = _FineWindows(engine, view, coarse_values, coarse_frame, clicks, new_clicks, previous, choose, window_timings)
    results = fine.run()
    mask = stitch(view, coarse_values, coarse_frame, list(results.values()), engine.config.window_overlap, clicks)
    stitched = time.perf_counter()
    geometry = mask_to_geometry(mask, view.transform, polygons)
    for stage in ("read_ms", "encode_ms", "windows_encoded", "windows_from_store"):
        setattr(timings, stage, getattr(timings, stage) + getattr(window_timings, stage))
    timings.decode_ms += (stitched - started) * 1e3 - window_timings.read_ms - window_timings.encode_ms
    timings.postprocess_ms = (time.perf_counter() - stitched) * 1e3

    coarse_downsample = view.coarse.encoder_downsample
    resolution = ModelResolution(
        view.downsample, view.downsample if results else coarse_downsample, view.source.mpp,
        windows=len(results) + 1, windows_decoded=fine.decoded + 1, coarse_downsample=coarse_downsample,
    )
    score = float(np.mean([r.score for r in results.values()])) if results else float(candidates.scores[kept])
    return engine.assemble(view.source, geometry, score, coarse_logits[None, None], resolution, results)


class _FineWindows:
    """Chooses, prompts and decodes the fine windows of one step."""

    def __init__(
        self, engine: Engine, view: TiledView, coarse_values: np.ndarray, coarse_frame: LowResFrame, clicks: tuple[Click, ...],
        new_clicks: int, previous: Prediction, choose: Strategy, timings: Timings,
    ) -> None:
        self.engine, self.view, self.choose, self.timings = engine, view, choose, timings
        self.coarse_values, self.coarse_frame = coarse_values, coarse_frame
        self.clicks, self.new_clicks, self.previous = clicks, set(clicks[len(clicks) - new_clicks :]), previous
        self.decoded = 0

    def run(self) -> dict[WindowIndex, WindowResult]:
        candidates = {index: self._candidate(index) for index in self.view.grid.overlapping(self.view.region)}
        wanted = [c for c in candidates.values() if c.mixed or c.clicks]
        results: dict[WindowIndex, WindowResult] = {}
        tried: set[WindowIndex] = set()
        encodes = 0
        while wanted:
            reusable = {candidate.index for candidate in wanted if self._reusable(candidate)}
            encodes += self._check_encodes([c for c in wanted if c.index not in reusable], encodes)
            tried.update(candidate.index for candidate in wanted)
            fresh = []
            for candidate in wanted:
                if candidate.index in reusable:
                    results[candidate.index] = self.previous.windows[candidate.index]
                else:
                    fresh.append((candidate, self._prompted(candidate)))
                    yield_point()
            results.update(self._decoded(fresh))
            wanted = [candidates[index] for index in self._neighbours_to_add(results, candidates) if index not in tried]
        return dict(sorted(results.items()))

    def _check_encodes(self, decoding: list[_Candidate], so_far: int) -> int:
        """How many of the windows to decode need an encode; ResourceExhausted when the step would exceed
        the server's limit (embeddings already made stay cached, so nothing is lost)."""
        needed = sum(
            1 for candidate in decoding if not self.engine.has_embedding(self.engine.window_view(self.view, candidate.index))
        )
        limit = self.engine.config.max_step_encodes
        if so_far + needed > limit:
            raise ResourceExhausted(
                f"this step needs at least {so_far + needed} encoder windows at downsample {self.view.downsample:g}, more than "
                f"this server encodes for one step ({limit}); precompute the slide (slidesam-server precompute), or choose "
                "a coarser resolution or a smaller region"
            )
        return needed

    def _reusable(self, candidate: _Candidate) -> bool:
        """The window's prompts are those of the previous step (clicks equal, coarse mask nearly so)."""
        before = self.previous.windows.get(candidate.index)
        if before is None or before.clicks != candidate.clicks:
            return False
        changed = np.count_nonzero(before.coarse != candidate.coarse)
        return changed <= CHANGED_FRACTION * max(1, np.count_nonzero(candidate.usable))

    def _candidate(self, index: WindowIndex) -> _Candidate:
        region, shape = self.engine.window_region(self.view, index)
        frame = frame_for(region, self.view.model.input_shape(*shape))
        logits = resample(self.coarse_values, self.coarse_frame.transform, frame.transform, (LOW_RES, LOW_RES))
        usable = frame.valid_mask() & _inside(frame, self.view.region)
        logits[~usable] = OUTSIDE_LOGIT
        clicks = tuple(c for c in self.clicks if _contains(region, c.x, c.y))
        return _Candidate(index, region, frame, logits, (logits > 0) & usable, usable, clicks)

    def _prompted(self, candidate: _Candidate) -> DecodeInput:
        """The window's embedding (cache, store or encode) and its prompts from the coarse result."""
        window_view = self.engine.window_view(self.view, candidate.index)
        points = self._sampled_points(candidate) + candidate.clicks
        mask_input = torch.as_tensor(candidate.coarse_logits, device=self.view.model.device)[None, None]
        return self.engine.decode_input(window_view, points, _window_box(candidate), mask_input, self.timings)

    def _decoded(self, work: list[tuple[_Candidate, DecodeInput]]) -> dict[WindowIndex, WindowResult]:
        """One decoder pass per window; on a GPU the passes of a round run as one batch."""
        if not work:
            return {}
        model = self.view.model
        inputs = [decode for _, decode in work]
        if model.device.type == "cuda":
            answers = model.candidates_many(inputs)
        else:  # batching the decoder buys nothing on the CPU (measured): one pass each, pausable between them
            answers = []
            for decode in inputs:
                answers.append(model.candidates(*_decode_args(decode)))
                yield_point()
        self.decoded += len(work)
        results = {}
        for (candidate, decode), candidates in zip(work, answers):
            labels = decode.labels if decode.labels is not None else np.zeros(0, np.int64)
            new_here = sum(1 for click in candidate.clicks if click in self.new_clicks)
            kept = self.choose(candidates, labels, new_here, decode.previous_logits, False)
            logits = candidates.logits[kept].float().cpu().numpy().copy()  # not a view of every candidate
            if not candidate.clicks and _agreement(logits > 0, candidate) < MIN_AGREEMENT:
                continue  # SAM answered another object at this scale: the coarse window decides here
            results[candidate.index] = WindowResult(
                candidate.region, candidate.frame, logits, candidate.coarse, candidate.clicks, float(candidates.scores[kept])
            )
        return results

    @staticmethod
    def _sampled_points(candidate: _Candidate) -> tuple[Click, ...]:
        """A point deep inside the coarse interior (exterior) when no positive (negative) click is in the window."""
        points = []
        for positive, area in ((True, candidate.coarse), (False, candidate.usable & ~candidate.coarse)):
            if area.any() and not any(click.positive == positive for click in candidate.clicks):
                row, column = deepest(area.astype(np.uint8))
                points.append(Click(*candidate.frame.point_at(row, column), positive))
        return tuple(points)

    def _neighbours_to_add(self, results: dict[WindowIndex, WindowResult], candidates: dict[WindowIndex, _Candidate]) -> list[WindowIndex]:
        """Windows not decoded yet that overlap a decoded window where it disagrees with the coarse mask."""
        adding = []
        for index, candidate in candidates.items():
            if index in results:
                continue
            for result in results.values():
                overlap = _intersection(result.region, candidate.region)
                if overlap is None:
                    continue
                inside = _inside(result.frame, overlap) & result.frame.valid_mask() & _inside(result.frame, self.view.region)
                disagree = np.count_nonzero(((result.logits > 0) != result.coarse) & inside)
                if disagree > DISAGREEING_LOGITS:
                    adding.append(index)
                    break
        return adding


def _inside(frame: LowResFrame, rect: Rect) -> np.ndarray:
    """256 x 256 booleans: logits whose centre lies inside a level-0 rectangle."""
    t: RegionTransform = frame.transform
    centres = np.arange(LOW_RES) + 0.5
    xs, ys = t.x0 + centres * t.sx, t.y0 + centres * t.sy
    return np.outer((ys >= rect.y) & (ys < rect.bottom), (xs >= rect.x) & (xs < rect.right))


def _agreement(fine: np.ndarray, candidate: _Candidate) -> float:
    """IoU of a fine window's mask with its coarse prompt, on the logits that lie on the field of view."""
    fine, coarse = fine & candidate.usable, candidate.coarse
    union = np.count_nonzero(fine | coarse)
    return np.count_nonzero(fine & coarse) / union if union else 1.0


def _intersection(a: Rect, b: Rect) -> Rect | None:
    x0, y0 = max(a.x, b.x), max(a.y, b.y)
    x1, y1 = min(a.right, b.right), min(a.bottom, b.bottom)
    return Rect(x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def _contains(rect: Rect, x: float, y: float) -> bool:
    return rect.x <= x < rect.right and rect.y <= y < rect.bottom


def _window_box(candidate: _Candidate) -> Box | None:
    """The box prompt of a fine window: the coarse mask's box in the window and the positive clicks in it,
    grown by BOX_GROWTH of the window per side (a box as tight as a wrong coarse mask keeps SAM from
    following the user's clicks: on real tissue it turned a recoverable click into a collapse)."""
    rows, columns = np.nonzero(candidate.coarse)
    t = candidate.frame.transform
    xs = list(t.x0 + np.r_[columns.min(), columns.max() + 1] * t.sx) if len(rows) else []
    ys = list(t.y0 + np.r_[rows.min(), rows.max() + 1] * t.sy) if len(rows) else []
    xs += [c.x for c in candidate.clicks if c.positive]
    ys += [c.y for c in candidate.clicks if c.positive]
    if not xs:
        return None
    region = candidate.region
    gx, gy = BOX_GROWTH * region.width, BOX_GROWTH * region.height
    x0, y0 = max(region.x, min(xs) - gx), max(region.y, min(ys) - gy)
    x1, y1 = min(region.right, max(xs) + gx), min(region.bottom, max(ys) + gy)
    return Box(x0, y0, x1 - x0, y1 - y0)


def _decode_args(decode: DecodeInput) -> tuple:
    return decode.embedding, decode.points, decode.labels, decode.box, decode.previous_logits
