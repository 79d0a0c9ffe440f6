"""`slidesam refine`: existing outlines (e.g. drawn at low zoom) of one class, refined by SAM in place.

Every annotation of the class whose geometry is a polygon is the prompt (the server takes its mask as
SAM's mask input, its box and points inside it). The field of view is the outline's bounding box grown
by the margin (a fraction of its longer side, on every side, to at least `min_size`), inside the image,
at the resolution asked for; windows "auto" lets the server go multi-window for large outlines.

The answer replaces the annotation's geometry in place: same object id, class and name; its own
measurements are kept and `SAM score` / `SAM area` added. The description becomes the provenance:

    {"slidesam": 1, "source": "refine", "class": "Tumor", "original": "POLYGON ((...))",
     "refined": "POLYGON ((...))", "model_id": "mobile_sam@6dbb90523a35", "checkpoint_sha256": "...",
     "score": 0.97, "geometry_sha256": "...", "field_of_view": {...}, "resolution": {...}, "settings": {...},
     "refinements": 1, "created": "2026-11-28T10:00:00Z"}

`original` is the geometry before (WKT, full precision), `refined` the geometry written (WKT, 0.001 px) and
`geometry_sha256` its hash as QuPath keeps it (`qupath_values.geometry_sha256`);
a description the annotation had before that was not slidesam's is kept as `user_description`.

Idempotence and edits: an annotation whose geometry still equals its recorded `refined` geometry is
skipped as already refined (compared with a tolerance of `GEOMETRY_TOLERANCE` level-0 pixels, since
QuPath stores float32 coordinates and may start a ring at another vertex). One whose geometry differs
was edited after the refine: it is skipped with a warning naming it, unless `again` is set, which
refines the edited outline anew (it becomes the new `original`). Locked annotations, and results of
`sync` / `preannotate` (slidesam provenance of another source), are left alone.

Bad input is reported per annotation and left untouched: no polygon (a point, a line), an invalid
polygon (self-intersection), an outline outside the image, an empty answer (SAM found nothing), a
request the server refused. Each image is saved once (backed up first, see `safety.py`); an image
that fails as a whole is reported and left untouched while the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import grpc
import shapely
from tqdm import tqdm

from slidesam.qupath_bridge.errors import ServerError
from slidesam.qupath_bridge.project import Annotation, ImageEntry, Project, ProjectError
from slidesam.qupath_bridge.qupath_values import geometry_sha256
from slidesam.qupath_bridge.results import Segmentation, created_time, provenance
from slidesam.qupath_bridge.segmenter import Segmenter
from slidesam.qupath_bridge.sync import IMAGE_ERRORS, ProjectOpener, select_images
from slidesam.qupath_bridge.wire_geometry import outline_geometry

log = logging.getLogger(__name__)

SOURCE = "refine"
GEOMETRY_TOLERANCE = 0.05
"""Level-0 pixels: two geometries closer than this (Hausdorff) are the same outline. float32 keeps
coordinates below 2^19 to within 0.03 px; an edit a person makes moves far more."""
_FATAL_CODES = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
"""Refusals that every other annotation would get too: they stop the run."""


@dataclass(frozen=True)
class RefineSettings:
    path_class: str
    again: bool = False
    """Refine outlines edited after their refine anew (the edit becomes the new original)."""
    dry_run: bool = False
    """Say what would be refined; contact no server, write nothing."""


@dataclass
class RefineReport:
    """What one run did, per outcome; `messages` are for a person (warnings and failures)."""

    refined: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return len(self.refined) + len(self.already) + len(self.edited) + len(self.failed) + len(self.skipped)

    def fail(self, label: str, message: str) -> None:
        self.failed.append(label)
        self.messages.append(f"{label}: {message}; left as it is")
        log.warning("%s: %s; left as it is", label, message)

    def summary(self, path_class: str, dry_run: bool) -> str:
        verb = "would refine" if dry_run else "refined"
        parts = [f"{len(self.refined)} {verb}", f"{len(self.already)} already refined",
                 f"{len(self.edited)} edited since refined (skipped; --again refines them)", f"{len(self.failed)} failed"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} skipped (locked, or results of sync / preannotate)")
        return f"{self.total} annotation(s) of class {path_class!r}: " + ", ".join(parts)


# ------------------------------------------------------------------------------------------------
# Deciding


@dataclass(frozen=True)
class Decision:
    """What to do with one annotation: "refine" (with its outline prompt), "already", "edited",
    "skipped" (locked, or a result of sync / preannotate) or "bad" (with the message)."""

    action: str
    outline: shapely.MultiPolygon | None = None
    message: str = ""


def label(image: str, annotation: Annotation) -> str:
    """How messages name an annotation: image, name (when it has one) and id."""
    name = f"{annotation.name!r} " if annotation.name else ""
    return f"{image}: annotation {name}({annotation.id})"


def same_outline(a: shapely.Geometry, b: shapely.Geometry, tolerance: float = GEOMETRY_TOLERANCE) -> bool:
    """The same outline up to float32 storage and ring start: Hausdorff distance and area within tolerance."""
    if a.is_empty or b.is_empty:
        return a.is_empty and b.is_empty
    if shapely.hausdorff_distance(a, b) > tolerance:
        return False
    return abs(a.area - b.area) <= tolerance * max(a.length, b.length, 1.0)


def recorded_refined(record: dict) -> shapely.Geometry | None:
    """The geometry a refine provenance says it wrote (None when unreadable)."""
    try:
        return shapely.from_wkt(record["refined"])
    except (KeyError, TypeError, shapely.errors.GEOSException):
        return None


def decide(annotation: Annotation, width: float, height: float, again: bool) -> Decision:
    """The action for one annotation of the class, on an image width x height (level-0)."""
    if annotation.locked:
        return Decision("skipped", message="locked: left as it is")
    record = provenance(annotation)
    if record is not None and record.get("source") != SOURCE:
        return Decision("skipped", message=f"a slidesam result of its {record.get('source')!r} prompts, not a drawn outline: "
                                           "left as it is (change its prompts and sync instead)")
    if record is not None and record.get("source") == SOURCE:
        refined = recorded_refined(record)
        if refined is not None and same_outline(annotation.geometry, refined):
            return Decision("already")
        if not again:
            reason = "its outline was edited after slidesam refined it" if refined is not None else \
                "its refine record is unreadable"
            return Decision("edited", message=f"{reason}: skipped, so the edit is kept (--again refines the edited outline anew)")
    try:
        outline = outline_geometry(annotation.geometry)
    except ValueError as error:
        return Decision("bad", message=str(error))
    image_box = shapely.box(0, 0, width, height)
    if not image_box.contains(outline):
        inside = outline.intersection(image_box)
        polygons = [g for g in getattr(inside, "geoms", [inside]) if isinstance(g, shapely.Polygon) and g.area > 0]
        if not polygons:
            return Decision("bad", message=f"the outline lies outside the image (0..{width:g} x 0..{height:g} level-0 pixels)")
        outline = outline_geometry(shapely.MultiPolygon(polygons))  # the part inside the image is the prompt
    return Decision("refine", outline)


# ------------------------------------------------------------------------------------------------
# Writing


def wkt(geometry: shapely.Geometry, precision: int | None = None) -> str:
    """WKT at full precision (None) or rounded to `precision` decimals."""
    if precision is None:
        return shapely.to_wkt(geometry, rounding_precision=-1)
    return shapely.to_wkt(geometry, rounding_precision=precision, trim=True)


def refined_annotation(annotation: Annotation, answer: Segmentation, path_class: str, settings: dict) -> Annotation:
    """The annotation with the answer's geometry, its id, class, name and measurements kept, and the
    provenance (with the geometry before) as its description."""
    result = answer.result
    before = provenance(annotation)
    earlier = before if before is not None and before.get("source") == SOURCE else None
    record = {
        "slidesam": 1,
        "source": SOURCE,
        "class": path_class,
        "original": wkt(annotation.geometry),
        "refined": wkt(result.geometry, 3),
        "model_id": result.model_id,
        "checkpoint_sha256": answer.checkpoint_sha256,
        "score": round(result.score, 6),
        "geometry_sha256": geometry_sha256(result.geometry),
        "field_of_view": answer.field_of_view_json(),
        **answer.resolution_json(),
        "settings": settings,
        "refinements": (int(earlier.get("refinements", 1)) + 1) if earlier else 1,
        "created": created_time(),
    }
    user_description = earlier.get("user_description") if earlier else (annotation.description if before is None else None)
    if user_description:
        record["user_description"] = user_description
    measurements = {k: v for k, v in annotation.measurements.items() if not k.startswith("SAM area")}
    measurements["SAM score"] = round(result.score, 6)
    if result.area_um2 is not None:
        measurements["SAM area µm^2"] = round(result.area_um2, 3)
    else:
        measurements["SAM area px^2"] = round(result.area_px, 3)
    return dataclasses.replace(
        annotation, geometry=result.geometry, description=json.dumps(record, ensure_ascii=False), measurements=measurements,
    )


# ------------------------------------------------------------------------------------------------
# Running


def check_classes(project: Project, images: Sequence[ImageEntry], path_classes: Sequence[str]) -> None:
    """ProjectError listing the classes present for the first class that no annotation has and the project's
    class list lacks."""
    present: set[str] = {c.name for c in project.path_classes()}
    for image in images:
        try:
            present |= {a.path_class for a in project.annotations(image.name) if a.path_class}
        except IMAGE_ERRORS:
            continue  # reported when the image is read again
    for path_class in path_classes:
        if path_class not in present:
            near = [name for name in present if name.casefold() == path_class.casefold()]
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            listed = ", ".join(map(repr, sorted(present))) or "none"
            raise ProjectError(f"no annotation has the class {path_class!r}{hint}; the classes present are: {listed}")


def refine(
    opener: ProjectOpener,
    names: Sequence[str],
    segmenter: Segmenter,
    settings: RefineSettings,
    recorded_settings: dict,
    progress: bool | None = None,
) -> RefineReport:
    """Refines every annotation of the class, image by image (each image saved once; a dry run only
    decides, without the server). ProjectError for an unknown class or image; ConnectionLost when the
    server is gone; ServerError when it refuses the credentials. `recorded_settings` (model, field of
    view, polygon options) go into each provenance."""
    started = time.perf_counter()
    report = RefineReport()
    project = opener()
    try:
        images = select_images(project, names)
        check_classes(project, images, [settings.path_class])
        total = 0
        for image in images:
            try:
                total += sum(a.path_class == settings.path_class for a in project.annotations(image.name))
            except IMAGE_ERRORS:
                pass
        with tqdm(total=total, desc="refine", unit="annotation", disable=None if progress is None else not progress, leave=False) as bar:
            for image in images:
                try:
                    _refine_image(project, image, segmenter, settings, recorded_settings, report, bar)
                except _ImageFailed as failed:
                    report.messages.append(f"{image.name}: {failed.__cause__}; nothing of this image was written")
                    log.warning("%s: %s; nothing of this image was written", image.name, failed.__cause__)
                    report.failed += failed.labels or [image.name]
                    project.close()
                    project = opener()
    finally:
        project.close()
        report.seconds = time.perf_counter() - started
    return report


class _ImageFailed(Exception):
    def __init__(self, labels: list[str]):
        super().__init__()
        self.labels = labels


def _refine_image(
    project: Project, image: ImageEntry, segmenter: Segmenter, settings: RefineSettings, recorded_settings: dict,
    report: RefineReport, bar,
) -> None:
    """One image: decide, refine, write, save once. Per-annotation problems are reported; an image-wide
    failure (unreadable slide, project changed on disk) raises _ImageFailed with the image's refined
    annotations, which were not saved."""
    done: list[str] = []
    try:
        annotations = [a for a in project.annotations(image.name) if a.path_class == settings.path_class]
        if not annotations:
            return
        width, height = segmenter.pixels.size(image)
        for annotation in annotations:
            name = label(image.name, annotation)
            decision = decide(annotation, width, height, settings.again)
            bar.update(1)
            if decision.action == "already":
                report.already.append(name)
            elif decision.action == "edited":
                report.edited.append(name)
                report.messages.append(f"{name}: {decision.message}")
                log.warning("%s: %s", name, decision.message)
            elif decision.action == "skipped":
                report.skipped.append(name)
                report.messages.append(f"{name}: {decision.message}")
                log.info("%s: %s", name, decision.message)
            elif decision.action == "bad":
                report.fail(name, decision.message)
            elif settings.dry_run:
                report.refined.append(name)
            else:
                try:
                    answer = segmenter.refine(image, decision.outline, annotation.name or annotation.id)
                except ServerError as error:
                    if error.code in _FATAL_CODES:
                        raise
                    report.fail(name, f"the server refused it ({error})")
                    continue
                report.messages += answer.warnings
                if answer.result.geometry.is_empty:
                    report.fail(name, "SAM found no object in it")
                    continue
                project.update_annotation(image.name, refined_annotation(annotation, answer, settings.path_class, recorded_settings))
                done.append(name)
        if done:
            project.save()
        report.refined += done
    except IMAGE_ERRORS as error:
        if isinstance(error, ServerError) and error.code in _FATAL_CODES:
            raise
        raise _ImageFailed(done) from error
