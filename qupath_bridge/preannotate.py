"""`slidesam preannotate`: batch pre-annotation of every image of a project, resumable and parallel.

Prompt groups come from a `PromptSource`; each becomes one Segment request, which a `RegionRunner`
answers: the segmenter's client here, or a Ray cluster (`ray_batch.py`). A thread pool of `workers`
threads calls it, so at most `workers` requests are in flight; all images are
prepared first (thumbnails, prompts) and their requests queued in image order, so results come back
roughly image by image. An image is written (and saved) once all its requests have answered; one that
fails is reported, left untouched, and the rest go on.

Resuming: `<project>/.slidesam/preannotate.json` records every finished image with the hash of what
decided its result (prompt source and its settings, model, field of view, polygon options, class).
A re-run skips those images; a killed run restarted redoes only unfinished images, and because
result ids, feature order and provenance are deterministic (see `results.py`), it ends with the
same files as an uninterrupted run. This process alone writes the project and the state file, whoever
answers the requests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from tqdm import tqdm

from slidesam.atomic_files import atomic_write
from slidesam.qupath_bridge.geojson import dumps
from slidesam.qupath_bridge.project import ImageEntry
from slidesam.qupath_bridge.prompt_sources import PromptSource, PromptSourceError
from slidesam.qupath_bridge.prompts import PromptGroup, outside_image
from slidesam.qupath_bridge.results import Job, Segmentation, apply, plan, result_annotation
from slidesam.qupath_bridge.safety import STATE_DIR
from slidesam.qupath_bridge.segmenter import Segmenter
from slidesam.qupath_bridge.sync import IMAGE_ERRORS, ImageReport, ProjectOpener, Settings, select_images

log = logging.getLogger(__name__)
STATE_FILE = "preannotate.json"
RegionRunner = Callable[[ImageEntry, PromptGroup], Segmentation]
"""Answers one prompt group's Segment request (called from the pool's threads)."""


class WorkerLost(Exception):
    """The worker answering a region died more often than it is retried: its image fails, the others go on."""


class ResumeState:
    """Finished images and the hash they were finished with, saved atomically after each image."""

    def __init__(self, root: Path):
        self.path = Path(root) / STATE_DIR / STATE_FILE
        self.images: dict[str, dict] = {}
        if self.path.exists():
            try:
                self.images = dict(json.loads(self.path.read_bytes())["images"])
            except (ValueError, KeyError, TypeError) as error:
                log.warning("ignoring the unreadable resume state %s (%s): every image is redone", self.path, error)

    def finished(self, image: str, digest: str) -> bool:
        return self.images.get(image, {}).get("sha256") == digest

    def mark(self, image: str, digest: str, regions: int, objects: int) -> None:
        self.images[image] = {"sha256": digest, "regions": regions, "objects": objects}
        atomic_write(self.path, dumps({"version": 1, "images": dict(sorted(self.images.items()))}))


@dataclass
class _Prepared:
    """An image whose requests are queued."""

    image: str
    jobs: list[Job]
    futures: list[Future]
    digest: str
    unchanged: int
    started: float


def preannotate(
    opener: ProjectOpener,
    names: Sequence[str],
    source: PromptSource,
    segmenter: Segmenter,
    settings: Settings,
    workers: int = 4,
    progress: bool | None = None,
    runner: RegionRunner | None = None,
) -> list[ImageReport]:
    """Pre-annotates the images (all, or those named); returns one report per image, in project order.
    runner: where the requests go (default: the segmenter's server, from this process)."""
    run = _Run(opener, source, segmenter, settings, runner or partial(segmenter.run, interactive=False))
    try:
        images = select_images(run.project, names)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preannotate") as pool, \
                tqdm(desc="preannotate", unit="region", total=0, disable=None if progress is None else not progress, leave=False) as bar:
            run.bar = bar
            try:
                queued = [item for image in images if (item := run.prepare(image, pool)) is not None]
                for item in queued:
                    run.finish(item)
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    finally:
        run.project.close()
    return [run.reports[image.name] for image in images]


class _Run:
    """One pre-annotation run: the project (re-opened after a failed image), the resume state, the reports."""

    def __init__(self, opener: ProjectOpener, source: PromptSource, segmenter: Segmenter, settings: Settings, runner: RegionRunner):
        self.opener = opener
        self.project = opener()
        self.state = ResumeState(self.project.root)
        self.source = source
        self.segmenter = segmenter
        self.runner = runner
        self.settings = settings
        self.hashed = {**settings.hashed(), "source": source.name}
        self.reports: dict[str, ImageReport] = {}
        self.bar: tqdm | None = None
        self._lock = threading.Lock()

    def prepare(self, image: ImageEntry, pool: ThreadPoolExecutor) -> _Prepared | None:
        """Skips a finished image, or finds its prompt groups and queues the requests they need."""
        started = time.perf_counter()
        try:
            digest = _digest(self.hashed, self.source.describe(image))
            if self.state.finished(image.name, digest):
                record = self.state.images[image.name]
                self.reports[image.name] = ImageReport(
                    image.name, "skipped", record.get("regions", 0), record.get("objects", 0), messages=["finished earlier"]
                )
                return None
            width, height = self.segmenter.pixels.size(image)
            groups = self.source.groups(image, self.segmenter.pixels)
            problems = [message for group in groups if (message := outside_image(group, width, height))]
            if problems:
                raise PromptSourceError("; ".join(problems))
            work = plan(self.project.annotations(image.name), groups, self.source.name, self.hashed)
        except (*IMAGE_ERRORS, PromptSourceError) as error:
            self.reports[image.name] = ImageReport(image.name, "failed", seconds=time.perf_counter() - started, messages=[str(error)])
            return None
        futures = [pool.submit(self.runner, image, job.group) for job in work.jobs]
        with self._lock:
            self.bar.total += len(futures)
            self.bar.refresh()
        for future in futures:
            future.add_done_callback(self._tick)
        return _Prepared(image.name, work.jobs, futures, digest, work.unchanged, started)

    def finish(self, item: _Prepared) -> None:
        """Waits for an image's answers, writes and saves them, and records the image as finished.
        A failure re-opens the project, so nothing of this image is saved with a later one."""
        report = ImageReport(item.image, "updated" if item.jobs else "unchanged", regions=len(item.jobs), objects=item.unchanged)
        try:
            answers = [future.result() for future in item.futures]
            for job, answer in zip(item.jobs, answers):
                annotation = result_annotation(item.image, job, answer, self.source.name, self.settings.target.name, self.hashed)
                apply(self.project, item.image, job, annotation, self.settings.target)
                report.objects += annotation is not None
                report.messages += answer.warnings
            self.project.save()
            self.state.mark(item.image, item.digest, report.regions, report.objects)
        except (*IMAGE_ERRORS, WorkerLost) as error:
            report.status, report.messages = "failed", [str(error)]
            self.project.close()
            self.project = self.opener()
        report.seconds = time.perf_counter() - item.started
        self.reports[item.image] = report

    def _tick(self, _: Future) -> None:
        with self._lock:
            self.bar.update(1)


def _digest(*parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
