"""Precompute the embeddings of a slide's tissue on its fixed window grid, into the disk store.

Tissue is found on a low-resolution thumbnail (Otsu on HSV saturation, specks removed); background
windows are skipped. The tissue windows are encoded in fixed chunks of `batch_size` windows in
row order, and a chunk with any window missing from the store is encoded whole, so a run resumed
after a kill batches exactly as an uninterrupted one and writes byte-identical files.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage.filters import threshold_otsu
from tqdm import tqdm

from slidesam.server.engine.embedding_store import EmbeddingStore, StoreKey
from slidesam.server.engine.window_grid import DEFAULT_OVERLAP, WindowGrid, WindowIndex
from slidesam.server.errors import InvalidArgument, NotFound
from slidesam.server.models.compiled import compile_encoder
from slidesam.server.models.registry import ModelRegistry, ModelSpec
from slidesam.server.models.served import ServedModel
from slidesam.server.slides.read_plan import resolve_downsample
from slidesam.server.slides.regions import ImageSource, Rect, Resolution
from slidesam.server.slides.store import SlideStore

log = logging.getLogger(__name__)

MAX_UPSAMPLE = 4.0
"""A grid may be at most this many times finer than the slide's level 0."""
THUMBNAIL_PIXELS_PER_WINDOW = 64
"""Thumbnail pixels along one window's side (tissue is found at this resolution)."""
MAX_THUMBNAIL_SIDE = 4096
THUMBNAIL_TILE = 8192
"""Level-0 side of the pieces the thumbnail is read in (within the default read limit at level 0)."""
SATURATION_RANGE = (12, 25)
"""Otsu's threshold on saturation (0-255) is clamped to this range: nothing on blank glass is tissue,
and an all-tissue slide is not split into 'pale' and 'dark' halves."""
MIN_SPECK_FRACTION = 0.01
"""Tissue pieces smaller than this fraction of a window's area are specks (dust, debris)."""
MIN_TISSUE_FRACTION = 0.01
"""A window with less tissue than this fraction of its area is background."""


@dataclass(frozen=True)
class SlideReport:
    slide: str
    grid_key: str
    windows: int
    tissue: int
    encoded: int       # windows run through the encoder (a resumed chunk counts whole)
    written: int       # files written (the windows that were missing)
    present: int       # tissue windows already in the store

    @property
    def background(self) -> int:
        return self.windows - self.tissue


@dataclass(frozen=True)
class PrecomputeReport:
    model_id: str
    device: str
    batch_size: int
    slides: list[SlideReport]
    evicted: int
    seconds: float

    @property
    def encoded(self) -> int:
        return sum(slide.encoded for slide in self.slides)

    @property
    def windows_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        slides = [asdict(slide) | {"background": slide.background} for slide in self.slides]
        return asdict(self) | {"slides": slides, "encoded": self.encoded, "windows_per_second": self.windows_per_second}


@dataclass(frozen=True)
class _SlidePlan:
    name: str
    source: ImageSource
    grid: WindowGrid
    tissue: list[WindowIndex]


def default_batch_size(device: torch.device) -> int:
    """Windows per encoder pass: 8 on a GPU, 1 on the CPU (batching gains nothing there)."""
    return 8 if device.type == "cuda" else 1


def precompute(
    slides: Sequence[str | Path],
    registry: ModelRegistry,
    model_name: str,
    resolution: Resolution,
    store: EmbeddingStore,
    batch_size: int | None = None,
    slide_root: Path | None = None,
    dtype: torch.dtype = torch.float16,
    progress: bool = True,
    compile_encoder_blocks: bool = False,
) -> PrecomputeReport:
    """Encodes the tissue windows of each slide that the store lacks; returns what was done.

    Slides are ids under `slide_root` when one is given, else file paths. Every slide is opened,
    checked and its tissue found before the model loads or anything is written. compile_encoder_blocks:
    torch.compile the encoder first (see compiled.py; it stays compiled in this process).
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise InvalidArgument(f"batch size must be a positive integer, got {batch_size!r}")
    spec = registry.spec(model_name)
    plans = [_plan(str(slide), resolution, spec.input_size, slide_root) for slide in slides]
    spec, model = registry.get(spec.name)
    batch_size = batch_size or default_batch_size(model.device)
    if compile_encoder_blocks:
        compile_encoder(model, batch_size)
    torch.backends.cudnn.benchmark = False  # the same convolution algorithms every run: resumed files are byte-identical
    torch.backends.cudnn.deterministic = True
    evictions = store.stats().evictions
    started = time.perf_counter()
    total = sum(len(plan.tissue) for plan in plans)
    with tqdm(total=total, unit="window", desc="precompute", disable=not progress) as bar:
        reports = [_precompute_slide(plan, spec, model, store, batch_size, dtype, bar) for plan in plans]
    report = PrecomputeReport(
        spec.model_id, str(model.device), batch_size, reports, store.stats().evictions - evictions,
        time.perf_counter() - started,
    )
    stats = store.stats()
    log.info(
        "precompute done: %d windows encoded in %.1f s (%.2f windows/s, batch %d on %s), %d already present, "
        "%d background skipped, %d evicted; store holds %d files, %d of %d bytes",
        report.encoded, report.seconds, report.windows_per_second, batch_size, model.device,
        sum(s.present for s in reports), sum(s.background for s in reports), report.evicted,
        stats.entries, stats.bytes, stats.budget_bytes,
    )
    return report


def tissue_windows(source: ImageSource, grid: WindowGrid, min_fraction: float = MIN_TISSUE_FRACTION) -> list[WindowIndex]:
    """The grid's windows (row by row) holding at least `min_fraction` tissue, found on a thumbnail."""
    bounds = source.bounds
    step = max(grid.downsample * grid.size / THUMBNAIL_PIXELS_PER_WINDOW, max(bounds.width, bounds.height) / MAX_THUMBNAIL_SIDE)
    thumbnail = read_thumbnail(source, step)
    rows, columns = thumbnail.shape[:2]
    step_x, step_y = bounds.width / columns, bounds.height / rows
    speck = MIN_SPECK_FRACTION * (grid.size * grid.downsample) ** 2 / (step_x * step_y)
    mask = tissue_mask(thumbnail, speck)
    found = []
    for index in grid.indices():
        rect = grid.window(index)
        column0, column1 = _span(rect.x - bounds.x, rect.width, step_x, columns)
        row0, row1 = _span(rect.y - bounds.y, rect.height, step_y, rows)
        if mask[row0:row1, column0:column1].mean() >= min_fraction:
            found.append(index)
    return found


def read_thumbnail(source: ImageSource, step: float) -> np.ndarray:
    """The whole image at about `step` level-0 px per pixel, read piece by piece (RGB uint8)."""
    bounds = source.bounds
    columns, rows = max(1, round(bounds.width / step)), max(1, round(bounds.height / step))
    step_x, step_y = bounds.width / columns, bounds.height / rows
    tile = max(1, math.floor(THUMBNAIL_TILE / max(step_x, step_y)))
    thumbnail = np.empty((rows, columns, 3), dtype=np.uint8)
    for row in range(0, rows, tile):
        for column in range(0, columns, tile):
            height, width = min(tile, rows - row), min(tile, columns - column)
            rect = Rect(bounds.x + column * step_x, bounds.y + row * step_y, width * step_x, height * step_y)
            pixels = source.read_region(rect, step).pixels
            thumbnail[row:row + height, column:column + width] = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
    return thumbnail


def tissue_mask(rgb: np.ndarray, min_object_pixels: float = 0.0) -> np.ndarray:
    """Tissue pixels of an RGB thumbnail: saturation above Otsu's threshold (clamped), without
    pieces of at most `min_object_pixels` pixels."""
    saturation = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1]
    threshold = threshold_otsu(saturation) if saturation.min() < saturation.max() else 0
    mask = (saturation > np.clip(threshold, *SATURATION_RANGE)).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] > min_object_pixels
    keep[0] = False  # the background label
    return keep[labels]


def _span(start: float, length: float, step: float, count: int) -> tuple[int, int]:
    """Thumbnail pixels covering [start, start + length) level-0 (at least one)."""
    first = min(count - 1, max(0, math.floor(start / step + 1e-6)))
    return first, max(first + 1, min(count, math.ceil((start + length) / step - 1e-6)))


def _plan(slide: str, resolution: Resolution, window: int, slide_root: Path | None) -> _SlidePlan:
    """Opens a slide, checks the grid asked for, and finds its tissue windows."""
    source = open_slide(slide, slide_root)
    downsample = resolve_downsample(source, source.bounds, resolution, window)
    if downsample < 1 / MAX_UPSAMPLE:
        asked = f"{resolution.kind} {resolution.value:g}" + ("" if resolution.kind == "downsample" else f" (downsample {downsample:g})")
        raise InvalidArgument(
            f"{slide}: {asked} is {1 / downsample:.3g}x finer than the slide's full resolution (at most {MAX_UPSAMPLE:g}x)"
        )
    try:
        grid = WindowGrid(source.bounds, downsample, window, DEFAULT_OVERLAP)
        source.plan_read(grid.window(WindowIndex(0, 0)), downsample)  # the reading limits allow a window
    except InvalidArgument as error:
        raise InvalidArgument(f"{slide}: {error}") from None
    tissue = tissue_windows(source, grid)
    log.info(
        "%s: %d x %d grid %s, %d tissue windows, %d background", slide, grid.columns, grid.rows, grid.key,
        len(tissue), grid.columns * grid.rows - len(tissue),
    )
    return _SlidePlan(slide, source, grid, tissue)


def open_slide(slide: str, slide_root: Path | None) -> ImageSource:
    """A slide id under the slide root (the root's jail applies), or a file path."""
    if slide_root is not None:
        if not Path(slide_root).is_dir():
            raise InvalidArgument(f"slide root {slide_root} is not a directory")
        return SlideStore(slide_root).open(slide)
    path = Path(slide).expanduser()
    if not path.exists():
        raise NotFound(f"no such slide file: {path}")
    if not path.is_file():
        raise InvalidArgument(f"{path} is a directory, not a slide file")
    return SlideStore(path.resolve().parent).open(path.resolve().name)


def _precompute_slide(
    plan: _SlidePlan, spec: ModelSpec, model: ServedModel, store: EmbeddingStore, batch_size: int,
    dtype: torch.dtype, bar: tqdm,
) -> SlideReport:
    grid, source = plan.grid, plan.source
    keys = {index: store_key(spec, source, grid, index) for index in plan.tissue}
    chunks = [plan.tissue[start:start + batch_size] for start in range(0, len(plan.tissue), batch_size)]
    work = []
    for chunk in chunks:
        missing = [index for index in chunk if keys[index] not in store]
        if missing:
            work.append((chunk, missing))
        else:
            bar.update(len(chunk))
    encoded = written = 0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="precompute-read") as reader:
        pending = reader.submit(_read_windows, source, grid, work[0][0]) if work else None
        for position, (chunk, missing) in enumerate(work):
            images = pending.result()
            if position + 1 < len(work):  # read the next chunk while this one encodes
                pending = reader.submit(_read_windows, source, grid, work[position + 1][0])
            embeddings = model.encode_many(images)
            for index, embedding in zip(chunk, embeddings):
                if index in missing:
                    store.put(keys[index], embedding.with_dtype(dtype))
                    written += 1
            encoded += len(chunk)
            bar.update(len(chunk))
    report = SlideReport(plan.name, grid.key, grid.columns * grid.rows, len(plan.tissue), encoded, written,
                         len(plan.tissue) - sum(len(missing) for _, missing in work))
    log.info(
        "%s: encoded %d windows (%d written), %d already present, %d background skipped",
        plan.name, report.encoded, report.written, report.present, report.background,
    )
    return report


def _read_windows(source: ImageSource, grid: WindowGrid, chunk: list[WindowIndex]) -> list[np.ndarray]:
    return [source.read_region(grid.window(index), grid.downsample).pixels for index in chunk]


def store_key(spec: ModelSpec, source: ImageSource, grid: WindowGrid, index: WindowIndex) -> StoreKey:
    """The store key of a window: the region is the level-0 rectangle a read of it covers."""
    region, _ = source.plan_read(grid.window(index), grid.downsample)
    return StoreKey(
        spec.model_id, spec.sha256 or "", source.store_identity, grid.key, index,
        (region.x, region.y, region.width, region.height), grid.downsample,
    )
