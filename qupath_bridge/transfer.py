"""`slidesam export` and `slidesam import`: annotations between a project and QuPath GeoJSON files.

Export writes a GeoJSON project (manifest + one FeatureCollection per image) from any project.
Import reads, for each image of the project, either the image of the same name in a GeoJSON
project, or `<image name>.geojson` / `<image stem>.geojson` from a plain folder (as QuPath's
"Export objects as GeoJSON" writes them). Annotations are matched by their UUID: new ones are added,
changed ones updated, identical ones left alone; with `replace`, annotations missing from the source
are removed. Either way a second run changes nothing.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path, PurePath
from typing import Sequence

import shapely

from slidesam.qupath_bridge.geojson import GeoJSONError, annotation_to_feature, feature_to_annotation, is_annotation, read_features
from slidesam.qupath_bridge.geojson_project import MANIFEST, GeoJSONProject
from slidesam.qupath_bridge.project import Annotation, Project, ProjectError
from slidesam.qupath_bridge.qupath_values import qupath_geometry, same_geometry
from slidesam.qupath_bridge.sync import ImageReport, progress_bar


def mirror(project: Project, image: str, annotations: Sequence[Annotation], replace: bool) -> tuple[int, int, int]:
    """Makes the image hold these annotations (matched by id); returns (added, updated, removed)."""
    existing = {a.id: a for a in project.annotations(image)}
    added = updated = removed = 0
    for annotation in annotations:
        if annotation.id not in existing:
            project.add_annotation(image, annotation)
            added += 1
        elif _differs(existing[annotation.id], annotation):
            project.update_annotation(image, annotation)
            updated += 1
    if replace:
        for annotation_id in existing.keys() - {a.id for a in annotations}:
            project.remove_annotation(image, annotation_id)
            removed += 1
    return added, updated, removed


def _differs(kept: Annotation, new: Annotation) -> bool:
    """Whether writing `new` over `kept` changes what QuPath keeps (geometry compared as QuPath sees it)."""
    without_geometry = [dataclasses.replace(a, geometry=shapely.Point()) for a in (kept, new)]
    return (annotation_to_feature(without_geometry[0]) != annotation_to_feature(without_geometry[1])
            or not same_geometry(qupath_geometry(kept.geometry), qupath_geometry(new.geometry)))


def export_geojson(source: Project, folder: Path, progress: bool | None = None) -> list[ImageReport]:
    """Writes (or brings up to date) the GeoJSON project in `folder` from `source`."""
    folder = Path(folder)
    images = list(source.images())
    target = GeoJSONProject(folder) if (folder / MANIFEST).is_file() else GeoJSONProject.create(folder, images, source.path_classes())
    missing = sorted({i.name for i in images} - {i.name for i in target.images()})
    if missing:
        raise ProjectError(f"{folder / MANIFEST} lacks the images {', '.join(missing)}; export into a new folder")
    reports = []
    for path_class in source.path_classes():
        target.ensure_path_class(path_class)
    for image in progress_bar(images, progress, "export"):
        started = time.perf_counter()
        try:
            annotations = source.annotations(image.name)
            counts = mirror(target, image.name, annotations, replace=True)
            target.save()
        except (GeoJSONError, ProjectError, OSError) as error:
            reports.append(ImageReport(image.name, "failed", seconds=time.perf_counter() - started, messages=[str(error)]))
            target = GeoJSONProject(folder)
            continue
        reports.append(_report(image.name, counts, len(annotations), started))
    target.save()
    return reports


def import_geojson(project: Project, folder: Path, replace: bool = False, progress: bool | None = None) -> list[ImageReport]:
    """Reads each image's annotations from `folder` into the project (saved image by image)."""
    folder = Path(folder)
    source = GeoJSONProject(folder) if (folder / MANIFEST).is_file() else None
    reports = []
    for image in progress_bar(project.images(), progress, "import"):
        started = time.perf_counter()
        try:
            annotations = _source_annotations(source, folder, image.name)
            if annotations is None:
                reports.append(ImageReport(image.name, "skipped", messages=["no GeoJSON for this image"]))
                continue
            counts = mirror(project, image.name, annotations, replace)
            project.save()
        except (GeoJSONError, ProjectError, OSError) as error:
            reports.append(ImageReport(image.name, "failed", seconds=time.perf_counter() - started, messages=[str(error)]))
            continue
        reports.append(_report(image.name, counts, len(annotations), started))
    return reports


def _source_annotations(source: GeoJSONProject | None, folder: Path, image: str) -> list[Annotation] | None:
    if source is not None:
        return source.annotations(image) if image in {i.name for i in source.images()} else None
    for candidate in (folder / f"{image}.geojson", folder / f"{PurePath(image).stem}.geojson"):
        if candidate.is_file():
            features = read_features(candidate)
            return [feature_to_annotation(f, f"{candidate.name}, feature {i}") for i, f in enumerate(features) if is_annotation(f)]
    return None


def _report(image: str, counts: tuple[int, int, int], total: int, started: float) -> ImageReport:
    added, updated, removed = counts
    status = "updated" if any(counts) else "unchanged"
    return ImageReport(
        image, status, objects=total, seconds=time.perf_counter() - started,
        messages=[f"{added} added, {updated} updated, {removed} removed"] if any(counts) else [],
    )
