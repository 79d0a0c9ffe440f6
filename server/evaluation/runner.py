"""Runs simulated clicks through the real prediction path: the engine in-process, or a server over gRPC.

Both backends upload the patch as a lossless PNG placed at its level-0 position and open an object on
exactly that region at the patch's resolution, then click; the polygons that come back are rasterised
at the patch's resolution and compared with the ground truth. So the in-process and gRPC runs see the
same pixels and the same code path, and give the same IoU sequences.
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

from server.engine.engine import Engine
from server.engine.prompts import Click, FieldOfView, PolygonRequest, UploadRef
from server.engine.session import ObjectSession
from server.evaluation.clicker import Clicker
from server.evaluation.datasets import Sample
from server.evaluation.metrics import mask_iou
from server.geometry import RegionTransform, geometry_to_mask
from server.slides import Rect, Resolution

NO_VERTEX_BUDGET = 10_000_000  # evaluation measures SAM, not the polygon budget


@dataclass(frozen=True)
class Opened:
    read_ms: float
    encode_ms: float
    cache_hit: bool


@dataclass(frozen=True)
class Answer:
    geometry: shapely.MultiPolygon
    decode_ms: float      # the server's prompt encoder + mask decoder + upscaling
    cache_hit: bool


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


class _EngineObject:
    def __init__(self, session: ObjectSession, opened: Opened):
        self.session, self.opened = session, opened

    def click(self, x: float, y: float, positive: bool) -> Answer:
        outcome = self.session.add_clicks([Click(x, y, positive)])
        return Answer(outcome.step.prediction.geometry, outcome.timings.decode_ms, outcome.timings.cache_hit)

    def close(self) -> None:
        self.session.finish()


class EngineBackend:
    """The engine in this process (the same ObjectSession code the gRPC service runs)."""

    name = "in-process"

    def __init__(self, engine: Engine, model: str, strategy: str):
        self.engine, self.model, self.strategy = engine, model, strategy

    def open(self, sample: Sample, png: bytes) -> EvaluatedObject:
        uploaded = self.engine.uploads.put(png, None)
        image = UploadRef(uploaded.sha256, *sample.origin, downsample=sample.downsample, mpp=sample.mpp)
        fov = FieldOfView(image, Rect(*_level0_extent(sample)), Resolution("downsample", sample.downsample))
        session, outcome = ObjectSession.open(
            self.engine, fov, self.model, PolygonRequest(max_vertices=NO_VERTEX_BUDGET), self.strategy
        )
        timings = outcome.timings
        return _EngineObject(session, Opened(timings.read_ms, timings.encode_ms, timings.cache_hit))

    @classmethod
    def create(cls, registry, model: str, strategy: str, cache_bytes: int = 512 * 2**20) -> "EngineBackend":
        from server.engine.cache import EmbeddingCache
        from server.slides import SlideStore
        from server.uploads import UploadStore

        engine = Engine(registry, SlideStore(Path(tempfile.gettempdir())), UploadStore(), EmbeddingCache(cache_bytes))
        return cls(engine, model, strategy)


class _GrpcObject:
    def __init__(self, session, opened: Opened):
        self.session, self.opened = session, opened

    def click(self, x: float, y: float, positive: bool) -> Answer:
        result = self.session.click(x, y, positive)
        return Answer(result.geometry, result.timings.decode_ms, result.cache_hit)

    def close(self) -> None:
        self.session.finish()


class GrpcBackend:
    """A running slidesam server, through the bridge's Python client."""

    def __init__(self, address: str, model: str, strategy: str):
        from qupath_bridge.client import SlidesamClient

        self.name = f"grpc://{address}"
        self.client = SlidesamClient(address)
        self.client.wait_ready()
        self.model, self.strategy = model, strategy

    def open(self, sample: Sample, png: bytes) -> EvaluatedObject:
        from qupath_bridge.client import FieldOfView as ClientFieldOfView
        from qupath_bridge.client import PolygonOptions, UploadedRegion

        region = UploadedRegion(png, *sample.origin, downsample=sample.downsample, mpp=sample.mpp)
        fov = ClientFieldOfView(region, *_level0_extent(sample), downsample=sample.downsample)
        session = self.client.open_object(fov, self.model, PolygonOptions(max_vertices=NO_VERTEX_BUDGET), self.strategy)
        timings = session.result.timings
        return _GrpcObject(session, Opened(timings.read_ms, timings.encode_ms, timings.cache_hit))


def encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the patch as PNG")
    return data.tobytes()


def evaluate_sample(
    backend: Backend, sample: Sample, max_clicks: int, save_mask: Callable[[int, np.ndarray], None] | None = None
) -> dict:
    """Up to max_clicks simulated clicks on one sample; the IoU after each, the clicks and the timings."""
    png = encode_png(sample.image)
    height, width = sample.gt.shape
    transform = RegionTransform(sample.origin[0], sample.origin[1], sample.downsample, sample.downsample)
    clicker = Clicker(sample.gt)
    prediction = np.zeros_like(sample.gt)
    ious, clicks, click_ms, decode_ms, hits = [], [], [], [], []
    evaluated = backend.open(sample, png)
    try:
        for number in range(1, max_clicks + 1):
            click = clicker.next_click(prediction)
            if click is None:
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
            if save_mask is not None:
                save_mask(number, prediction)
    finally:
        evaluated.close()
    return {
        "name": sample.name,
        "shape": [height, width],
        "image_sha256": hashlib.sha256(png).hexdigest(),
        "ious": ious,
        "clicks": clicks,
        "click_ms": click_ms,
        "decode_ms": decode_ms,
        "click_cache_hits": hits,
        "open": {"read_ms": evaluated.opened.read_ms, "encode_ms": evaluated.opened.encode_ms, "cache_hit": evaluated.opened.cache_hit},
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
