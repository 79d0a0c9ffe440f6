"""`slidesam sync`: one pass over a project's images, turning prompt annotations into result polygons.

Per image: read its annotations, find the prompt groups (`prompts.py`), check every prompt lies in
the image, and run through the server, click by click, only the groups that have no result yet or
changed since it (`results.py`). Results are written together and the image is saved once; an image
with a bad prompt, an unreadable slide or a refused request is reported and left untouched.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Sequence

from tqdm import tqdm

from slidesam.qupath_bridge.errors import ServerError
from slidesam.qupath_bridge.fov import FovSettings
from slidesam.qupath_bridge.geojson import GeoJSONError
from slidesam.qupath_bridge.pixels import SlideUnreadable
from slidesam.qupath_bridge.project import ImageEntry, PathClass, Project, ProjectError
from slidesam.qupath_bridge.prompts import PromptClasses, find_prompt_groups, outside_image
from slidesam.qupath_bridge.results import apply, plan, result_annotation
from slidesam.qupath_bridge.segmenter import Segmenter
from slidesam.qupath_bridge.wire_requests import PolygonOptions

PROMPTS_SOURCE = "prompts"
ProjectOpener = Callable[[], Project]
IMAGE_ERRORS = (SlideUnreadable, GeoJSONError, ProjectError, ServerError, OSError)
"""What fails one image without stopping the others (ConnectionLost stops the run)."""


@dataclass(frozen=True)
class Settings:
    """What shapes a result, besides its prompts."""

    classes: PromptClasses = PromptClasses()
    target: PathClass = PathClass("Tumor")
    model: str = ""
    fov: FovSettings = FovSettings()
    polygon: PolygonOptions = PolygonOptions()

    def hashed(self) -> dict:
        """The settings part of each group's hash (and of its provenance)."""
        return {"model": self.model, "fov": self.fov.to_json(), "polygon": asdict(self.polygon), "class": self.target.name}


@dataclass
class ImageReport:
    image: str
    status: str
    """"updated", "unchanged", "skipped" (finished earlier) or "failed"."""
    regions: int = 0
    objects: int = 0
    seconds: float = 0.0
    messages: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def select_images(project: Project, names: Sequence[str]) -> list[ImageEntry]:
    """All images, or those named (ProjectError naming the unknown ones)."""
    images = list(project.images())
    if not names:
        return images
    known = {image.name for image in images}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ProjectError(f"no image named {', '.join(map(repr, unknown))} in the project (it has: {', '.join(sorted(known))})")
    return [image for image in images if image.name in names]


def sync_image(project: Project, image: ImageEntry, segmenter: Segmenter, settings: Settings) -> ImageReport:
    """One image: prompts in, results written and saved (or a report of why not)."""
    started = time.perf_counter()
    report = ImageReport(image.name, "unchanged")
    try:
        width, height = segmenter.pixels.size(image)
        annotations = project.annotations(image.name)
        groups, problems = find_prompt_groups(annotations, settings.classes)
        problems += [message for group in groups if (message := outside_image(group, width, height))]
        if problems:
            report.status, report.messages = "failed", problems
            return report
        work = plan(annotations, groups, PROMPTS_SOURCE, settings.hashed())
        report.messages += [f"{name} is locked: left as it is" for name in work.locked]
        report.regions, report.objects = len(work.jobs), work.unchanged
        if not work.jobs:
            return report
        answers = [segmenter.run(image, job.group, interactive=True) for job in work.jobs]
        for job, answer in zip(work.jobs, answers):
            annotation = result_annotation(image.name, job, answer, PROMPTS_SOURCE, settings.target.name, settings.hashed())
            apply(project, image.name, job, annotation, settings.target)
            report.objects += annotation is not None
            report.messages += answer.warnings
            if annotation is None:
                report.messages.append(f"{job.group.result_name}: SAM found no object")
        project.save()
        report.status = "updated"
    except IMAGE_ERRORS as error:
        report.status, report.messages = "failed", [*report.messages, str(error)]
        raise _Failed(report) from error
    finally:
        report.seconds = time.perf_counter() - started
    return report


class _Failed(Exception):
    """An image failed after the project object may hold unsaved changes for it."""

    def __init__(self, report: ImageReport):
        super().__init__(report.image)
        self.report = report


def sync(opener: ProjectOpener, names: Sequence[str], segmenter: Segmenter, settings: Settings, progress: bool | None = None) -> list[ImageReport]:
    """One pass over the images. A failure leaves its image untouched (the project is re-opened so
    nothing of it is saved with a later image) and the pass goes on."""
    project = opener()
    reports = []
    try:
        images = select_images(project, names)
        for image in progress_bar(images, progress, "sync"):
            try:
                reports.append(sync_image(project, image, segmenter, settings))
            except _Failed as failed:
                reports.append(failed.report)
                project.close()
                project = opener()
    finally:
        project.close()
    return reports


def progress_bar(items: Iterable, progress: bool | None, description: str, unit: str = "image") -> Iterable:
    """tqdm on stderr; `progress` None shows it only on a terminal."""
    return tqdm(list(items), desc=description, unit=unit, disable=None if progress is None else not progress, leave=False)
