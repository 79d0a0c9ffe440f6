"""Runs simulated clicks through the real prediction path: the engine in-process, or a server over gRPC.

Both backends upload the patch as a lossless PNG placed at its level-0 position and open an object on
exactly that region at the patch's resolution, then click; the polygons that come back are rasterised
at the patch's resolution and compared with the ground truth. So the in-process and gRPC runs see the
same pixels and the same code path, and give the same IoU sequences. A backend told to open samples on
their slide (`slides=True`, for samples that name one) opens the slide itself instead of uploading, so
precomputed grid embeddings of that slide can serve the windows.

Patches larger than one encoder window are segmented as the field of view's window mode says: "auto"
(the server's choice: multi-window for them), "multi" or "single" (the whole patch in one window).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import cv2
import numpy as np
import shapely

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.server.engine.cache import EmbeddingCache
from slidesam.server.engine.engine import Engine
from slidesam.server.engine.prompts import Click, PolygonRequest, RegionRequest, SlideRef, UploadRef
from slidesam.server.engine.session import EngineObject
from slidesam.lab.evaluation.clicker import Clicker
from slidesam.lab.evaluation.datasets import Sample
from slidesam.lab.evaluation.metrics import BOUNDARY_AT_CLICK, DEFAULT_BOUNDARY_UM, boundary_f_score, mask_iou
from slidesam.server.engine.geometry import RegionTransform, geometry_to_mask
from slidesam.server.slides.regions import Rect, Resolution
from slidesam.server.slides.store import SlideStore
from slidesam.server.uploads.store import UploadStore
from slidesam.server.edge.wire import resolution_to_pb

NO_VERTEX_BUDGET = 10_000_000  # evaluation measures SAM, not the polygon budget


@dataclass(frozen=True)
class Opened:
    read_ms: float
    encode_ms: float
    cache_hit: bool
    windows_encoded: int = 0      # encoder runs the open needed
    windows_from_store: int = 0   # embeddings read from the server's precomputed store


@dataclass(frozen=True)
class Answer:
    geometry: shapely.MultiPolygon
    decode_ms: float      # the server's prompt encoder + mask decoder + upscaling
    cache_hit: bool
    encode_ms: float = 0.0        # encodes this click needed (multi-window: fine windows not cached yet)
    windows_encoded: int = 0
    windows_from_store: int = 0
    resolution: dict | None = None  # the resolution the model saw (see resolution_record)


def resolution_record(message: pb.ModelResolution) -> dict:
    """The wire's ModelResolution as plain JSON values."""
    return {
        "requested_downsample": message.requested_downsample, "encoder_downsample": message.encoder_downsample,
        "encoder_mpp": message.encoder_mpp or None, "downsampled": message.downsampled, "windows": message.windows,
        "windows_decoded": message.windows_decoded, "coarse_downsample": message.coarse_downsample or None,
    }


class EvaluatedObject(Protocol):
    opened: Opened

    def click(self, x: float, y: float, positive: bool) -> Answer: ...
    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def open(self, sample: Sample, png: bytes) -> EvaluatedObject: ...


def _level0_extent(sample: Sample) -> tuple[float, float, float, float]:
    height, width = sample.gt.shape
    return sample.origin[0], sample.origin[1], width * sample.downsample, height * sample.downsample


class _InProcessObject:
    def __init__(self, session: EngineObject, opened: Opened):
        self.session, self.opened = session, opened

    def click(self, x: float, y: float, positive: bool) -> Answer:
        outcome = self.session.add_clicks([Click(x, y, positive)])
        timings = outcome.timings
        return Answer(outcome.step.prediction.geometry, timings.decode_ms, timings.cache_hit, timings.encode_ms,
                      timings.windows_encoded, timings.windows_from_store, resolution_record(resolution_to_pb(outcome.resolution)))

    def close(self) -> None:
        self.session.finish()


class EngineBackend:
    """The engine in this process (the same EngineObject code the gRPC service runs)."""

    name = "in-process"

    def __init__(self, engine: Engine, model: str, strategy: str, windows: str = "auto", slides: bool = False):
        self.engine, self.model, self.strategy, self.windows, self.slides = engine, model, strategy, windows, slides

    def open(self, sample: Sample, png: bytes) -> EvaluatedObject:
        if self.slides and sample.slide:
            image = SlideRef(sample.slide)
        else:
            uploaded = self.engine.uploads.put(png, None)
            image = UploadRef(uploaded.sha256, *sample.origin, downsample=sample.downsample, mpp=sample.mpp)
        fov = RegionRequest(image, Rect(*_level0_extent(sample)), Resolution("downsample", sample.downsample), windows=self.windows)
        session, outcome = EngineObject.open(
            self.engine, fov, self.model, PolygonRequest(max_vertices=NO_VERTEX_BUDGET), self.strategy
        )
        timings = outcome.timings
        return _InProcessObject(session, Opened(timings.read_ms, timings.encode_ms, timings.cache_hit,
                                                timings.windows_encoded, timings.windows_from_store))

    @classmethod
    def create(
        cls, registry, model: str, strategy: str, cache_bytes: int = 512 * 2**20, windows: str = "auto",
        slide_root: Path | None = None, store=None,
    ) -> "EngineBackend":
        """An engine of its own; with slide_root, samples that name a slide under it are opened on the
        slide, and `store` (an EmbeddingStore) serves precomputed windows of those slides."""
        slides = SlideStore(Path(slide_root) if slide_root else Path(tempfile.gettempdir()))
        engine = Engine(registry, slides, UploadStore(), EmbeddingCache(cache_bytes), store=store)
        return cls(engine, model, strategy, windows, slides=slide_root is not None)


class _GrpcObject:
    def __init__(self, session, opened: Opened):
        self.session, self.opened = session, opened

    def click(self, x: float, y: float, positive: bool) -> Answer:
        result = self.session.click(x, y, positive)
        timings = result.timings
        return Answer(result.geometry, timings.decode_ms, result.cache_hit, timings.encode_ms, timings.windows_encoded,
                      timings.windows_from_store, resolution_record(result.raw.resolution))

    def close(self) -> None:
        self.session.finish()


class GrpcBackend:
    """A running slidesam server, through the bridge's Python client."""

    def __init__(self, address: str, model: str, strategy: str, windows: str = "auto", slides: bool = False):
        """slides: open samples that name a slide on that slide (the server's slide root must hold it)."""
        from slidesam.qupath_bridge.client import SlidesamClient

        self.name = f"grpc://{address}"
        self.client = SlidesamClient(address)
        self.client.wait_ready()
        self.model, self.strategy, self.windows, self.slides = model, strategy, windows, slides

    def open(self, sample: Sample, png: bytes) -> EvaluatedObject:
        from slidesam.qupath_bridge.wire_requests import FieldOfView as ClientFieldOfView
        from slidesam.qupath_bridge.wire_requests import PolygonOptions, SlideImage, UploadedRegion

        if self.slides and sample.slide:
            region = SlideImage(sample.slide)
        else:
            region = UploadedRegion(png, *sample.origin, downsample=sample.downsample, mpp=sample.mpp)
        fov = ClientFieldOfView(region, *_level0_extent(sample), downsample=sample.downsample, windows=self.windows)
        session = self.client.open_object(fov, self.model, PolygonOptions(max_vertices=NO_VERTEX_BUDGET), self.strategy)
        timings = session.result.timings
        return _GrpcObject(session, Opened(timings.read_ms, timings.encode_ms, timings.cache_hit,
                                           timings.windows_encoded, timings.windows_from_store))


def encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the patch as PNG")
    return data.tobytes()


def evaluate_sample(
    backend: Backend, sample: Sample, max_clicks: int, save_mask: Callable[[int, np.ndarray], None] | None = None,
    boundary_um: float = DEFAULT_BOUNDARY_UM,
) -> dict:
    """Up to max_clicks simulated clicks on one sample; the IoU after each, the boundary F-score after
    click BOUNDARY_AT_CLICK and after the last (when the patch's µm/px is known), the clicks and the timings."""
    png = encode_png(sample.image)
    height, width = sample.gt.shape
    transform = RegionTransform(sample.origin[0], sample.origin[1], sample.downsample, sample.downsample)
    um_per_px = sample.mpp * sample.downsample if sample.mpp else None
    tolerance_px = boundary_um / um_per_px if um_per_px else None
    clicker = Clicker(sample.gt)
    prediction = np.zeros_like(sample.gt)
    ious, clicks, click_ms, decode_ms, hits = [], [], [], [], []
    click_encode_ms, windows_encoded, windows_from_store = [], [], []
    boundary: dict = {}
    resolution = None
    finished = False
    evaluated = backend.open(sample, png)
    try:
        for number in range(1, max_clicks + 1):
            click = clicker.next_click(prediction)
            if click is None:
                finished = True
                break
            x = sample.origin[0] + (click.col + 0.5) * sample.downsample
            y = sample.origin[1] + (click.row + 0.5) * sample.downsample
            started = time.perf_counter()
            answer = evaluated.click(x, y, click.positive)
            click_ms.append((time.perf_counter() - started) * 1e3)
            prediction = geometry_to_mask(answer.geometry, transform, (height, width))
            ious.append(mask_iou(prediction, sample.gt))
            clicks.append([click.row, click.col, click.positive])
            decode_ms.append(answer.decode_ms)
            hits.append(answer.cache_hit)
            click_encode_ms.append(answer.encode_ms)
            windows_encoded.append(answer.windows_encoded)
            windows_from_store.append(answer.windows_from_store)
            resolution = answer.resolution
            if tolerance_px is not None and number == BOUNDARY_AT_CLICK:
                boundary[str(number)] = boundary_f_score(prediction, sample.gt, tolerance_px).as_dict()
            if save_mask is not None:
                save_mask(number, prediction)
    finally:
        evaluated.close()
    if tolerance_px is not None and ious:
        final = boundary_f_score(prediction, sample.gt, tolerance_px).as_dict()
        if finished and len(ious) < BOUNDARY_AT_CLICK:
            boundary[str(BOUNDARY_AT_CLICK)] = final  # the clicker ran out of errors: the mask is final
        boundary["final"] = final | {"click": len(ious)}
    opened = evaluated.opened
    return {
        "name": sample.name,
        "shape": [height, width],
        "image_sha256": hashlib.sha256(png).hexdigest(),
        "slide": sample.slide if getattr(backend, "slides", False) else None,
        "um_per_px": um_per_px,
        "ious": ious,
        "finished": finished,
        "clicks": clicks,
        "click_ms": click_ms,
        "decode_ms": decode_ms,
        "click_encode_ms": click_encode_ms,
        "click_windows_encoded": windows_encoded,
        "click_windows_from_store": windows_from_store,
        "click_cache_hits": hits,
        "open": {"read_ms": opened.read_ms, "encode_ms": opened.encode_ms, "cache_hit": opened.cache_hit,
                 "windows_encoded": opened.windows_encoded, "windows_from_store": opened.windows_from_store},
        "resolution": resolution,
        "boundary_um": boundary_um if tolerance_px is not None else None,
        "boundary_tolerance_px": tolerance_px,
        "boundary": boundary or None,
    }


class PartialResults:
    """Finished samples appended as JSON lines, so a killed run resumes where it stopped."""

    def __init__(self, path: Path, config: dict):
        self.path = path
        self.config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        self.done: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                if record.get("config") == self.config_hash:
                    self.done[record["sample"]["name"]] = record["sample"]

    def add(self, sample: dict) -> None:
        with self.path.open("a") as out:
            out.write(json.dumps({"config": self.config_hash, "sample": sample}) + "\n")
        self.done[sample["name"]] = sample
