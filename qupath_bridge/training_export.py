"""`slidesam export-training`: a project's reviewed annotations as training data, patch and mask pairs in
the folder format the lab reads (`slidesam.lab.evaluation.datasets.PatchFolder`).

What is exported, for the chosen classes (README, "Training data from your project"):
- **hand-drawn**: an annotation of a chosen class without slidesam provenance whose geometry is a polygon;
- **accepted**: a slidesam result (of sync, preannotate or refine) whose geometry is still the model's, which
  the user accepted: locked (its class a chosen class or the accepted class), or reclassified: to the
  accepted class (it is exported as the class slidesam wrote) or to another chosen class (exported as that);
- **corrected**: a slidesam result whose geometry the user changed in QuPath, with its class a chosen class or
  the accepted class: the user's final geometry. The model's geometry is the result's `geometry_sha256`; a
  refine result older than that field is compared with its `refined` outline;
- **negative**: patches in the band around each exported object (`export_tiles.negative_windows`), in tissue,
  overlapping no annotation of a chosen class or the accepted class and no slidesam result; empty mask.
Skipped and counted: unreviewed results (the model's geometry, unlocked, still the class slidesam wrote),
results whose provenance cannot tell (written before `geometry_sha256`), annotations that are no polygon, and
objects smaller than a pixel at the resolution asked for.

Each object is cut with context (`export_tiles.object_windows`), tiled when larger than a window. The split
is by image: an image's samples all go to `train/` or all to `validation/`. Names, order and files are
deterministic, so a re-run writes the same bytes. Nothing is written on bad input: the folder is built
beside `out` and renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import shapely
from tqdm import tqdm

from slidesam.qupath_bridge.export_tiles import MIN_TISSUE, Window, negative_windows, object_windows, rasterise, tissue_fraction
from slidesam.qupath_bridge.pixels import PixelSource, SlideUnreadable
from slidesam.qupath_bridge.project import Annotation, ImageEntry, Project, ProjectError
from slidesam.qupath_bridge.qupath_values import geometry_sha256
from slidesam.qupath_bridge.refine import check_classes, recorded_refined, same_outline
from slidesam.qupath_bridge.results import provenance
from slidesam.qupath_bridge.sync import select_images

log = logging.getLogger(__name__)

HAND_DRAWN, ACCEPTED, CORRECTED, NEGATIVE = "hand-drawn", "accepted", "corrected", "negative"
KINDS = (HAND_DRAWN, ACCEPTED, CORRECTED, NEGATIVE)
UNREVIEWED, UNKNOWN, NOT_POLYGON, TOO_SMALL = "unreviewed", "unknown provenance", "not a polygon", "smaller than a pixel"
SPLITS = ("train", "validation")
MANIFEST = "manifest.json"
DEFAULT_MAGNIFICATION = 10.0
X10_MPP = 1.0
"""µm per pixel taken as x10 for a slide that records its pixel size but not its objective power."""
_PNG = [cv2.IMWRITE_PNG_COMPRESSION, 3]


class ExportError(ValueError):
    """Bad input for an export (settings, classes, images, output folder); nothing was written."""


@dataclass(frozen=True)
class ExportSettings:
    """What to export and how to cut it. At most one resolution; none: x10 (`image_downsample`). Sizes are
    pixels at that resolution; `context` is a fraction of the object's longer side added on every side."""

    classes: tuple[str, ...]
    accepted_class: str | None = None
    magnification: float | None = None
    mpp: float | None = None
    downsample: float | None = None
    context: float = 0.25
    min_size: int = 256
    window: int = 1024
    overlap: int = 256
    negatives_per_object: int = 1
    validation_fraction: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.classes or any(not name.strip() for name in self.classes):
            raise ExportError(f"a class name is empty (classes: {', '.join(map(repr, self.classes)) or 'none'}); "
                              "name the classes to export, e.g. --classes Tumor,Stroma")
        if self.accepted_class is not None and (not self.accepted_class.strip() or self.accepted_class in self.classes):
            raise ExportError(f"the accepted class {self.accepted_class!r} must be a name other than the exported classes: "
                              "a result still of the class slidesam wrote is unreviewed")
        chosen = [v for v in (self.magnification, self.mpp, self.downsample) if v is not None]
        if len(chosen) > 1 or any(not (math.isfinite(v) and v > 0) for v in chosen):
            raise ExportError("give at most one of magnification, mpp and downsample, a positive number")
        if not (math.isfinite(self.context) and self.context >= 0) or not 64 <= self.window <= 4096:
            raise ExportError("context must be >= 0 and the window from 64 to 4096 pixels")
        if not 0 <= self.overlap <= self.window // 2 or not 1 <= self.min_size <= self.window:
            raise ExportError("overlap must be from 0 to half the window, min_size from 1 to the window")
        if self.negatives_per_object < 0 or not 0 <= self.validation_fraction < 1:
            raise ExportError("negatives per object must be >= 0 and the validation fraction from 0 to below 1")

    def to_json(self) -> dict:
        return {**asdict(self), "classes": list(self.classes)}


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: samples per split and kind, images per split, annotations skipped by reason."""

    out: Path
    counts: dict[str, dict[str, int]]
    images: dict[str, tuple[str, ...]]
    skipped: dict[str, int]
    warnings: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        total = sum(sum(kinds.values()) for kinds in self.counts.values())
        lines = [f"{self.out}: {total} sample(s) from {sum(map(len, self.images.values()))} image(s)"]
        for split in SPLITS:
            kinds = ", ".join(f"{self.counts[split][kind]} {kind}" for kind in KINDS)
            lines.append(f"  {split} ({len(self.images[split])} image(s)): {kinds}")
        if self.skipped:
            lines.append("  skipped: " + ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())))
        return lines


@dataclass(frozen=True)
class _Object:
    """An annotation to export: its kind and the class it is exported as."""

    image: ImageEntry
    annotation: Annotation
    kind: str
    label: str
    model_id: str | None


@dataclass
class _Plan:
    objects: list[_Object] = field(default_factory=list)
    labelled: dict[str, shapely.Geometry] = field(default_factory=dict)
    """Per image: what negatives must not overlap."""
    skipped: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)


def classify(annotation: Annotation, settings: ExportSettings) -> tuple[str, str] | None:
    """(kind, or the reason it is skipped; the class it is exported as), or None when the export does not
    concern the annotation (another class)."""
    record = provenance(annotation)
    current = annotation.path_class
    if record is None:
        if current not in settings.classes:
            return None
        return (HAND_DRAWN if _area(annotation.geometry) > 0 else NOT_POLYGON), current
    written = record.get("class") or (record.get("settings") or {}).get("class")
    if current in settings.classes:
        label = current
    elif current is not None and current == settings.accepted_class and written in settings.classes:
        label = written
    else:
        return None
    changed = _geometry_changed(annotation.geometry, record)
    if changed is None:
        return UNKNOWN, label
    if changed:
        return (CORRECTED if _area(annotation.geometry) > 0 else NOT_POLYGON), label
    return (ACCEPTED if annotation.locked or current != written else UNREVIEWED), label


def split_images(names: Sequence[str], validation_fraction: float, seed: int) -> dict[str, str]:
    """Image -> "train" or "validation" by a seeded hash of its name (as the lab's `training.data.split`), with
    at least one image on each side (validation fraction 0: all train). ExportError for a single image."""
    if validation_fraction == 0:
        return {name: "train" for name in names}
    if len(names) < 2:
        raise ExportError(f"the samples come from one image ({', '.join(names)}), which cannot be split by image: "
                          "add images, or give a validation fraction of 0 (--validation-fraction 0)")

    def bucket(name: str) -> float:
        return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "big") / 2**64

    validation = {name for name in names if bucket(name) < validation_fraction}
    if not validation:
        validation = {min(names, key=bucket)}
    elif len(validation) == len(names):
        validation.remove(max(names, key=bucket))
    return {name: "validation" if name in validation else "train" for name in names}


def image_downsample(slides: PixelSource, image: ImageEntry, settings: ExportSettings) -> float:
    """Level-0 pixels per patch pixel: the downsample, mpp or magnification asked for, else x10 (objective
    power / 10, or `X10_MPP` µm/px on a slide that records only its pixel size)."""
    if settings.downsample is not None:
        return settings.downsample
    mpp, objective = slides.local.pixel_size(image.path)
    if settings.mpp is not None and mpp is None:
        raise ExportError(f"{image.name}: the slide {image.path} does not record its µm per pixel; give a magnification or downsample")
    if settings.mpp is not None:
        return settings.mpp / mpp
    if objective is not None:
        return objective / (settings.magnification or DEFAULT_MAGNIFICATION)
    if settings.magnification is None and mpp is not None:
        return X10_MPP / mpp
    raise ExportError(f"{image.name}: the slide {image.path} does not record its objective power"
                      f"{'' if settings.magnification else ' or µm per pixel'}; give a downsample (--downsample)")


def check_new_folder(out: Path) -> None:
    """ExportError when the output folder exists (an export never writes into an existing folder)."""
    if Path(out).exists():
        raise ExportError(f"{out} exists; give a new folder (nothing was written)")


def export_training(
    project: Project, settings: ExportSettings, out: Path, slides: PixelSource,
    images: Sequence[str] = (), progress: bool | None = None,
) -> ExportSummary:
    """Writes the training set of the project's images (all, or those named) to the new folder `out`
    (module docstring). ExportError, with nothing written, for bad input: `out` exists, an empty or unknown
    class, nothing to export, an unknown image, a slide missing on disk or without a known resolution, one
    image to split."""
    out = Path(out)
    check_new_folder(out)
    try:
        selected = sorted(select_images(project, images), key=lambda image: image.name)
        check_classes(project, selected, [*settings.classes, *([settings.accepted_class] if settings.accepted_class else [])])
        plan = _plan(project, selected, settings)
    except ProjectError as error:
        raise ExportError(str(error)) from error
    if not plan.objects:
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(plan.skipped.items())) or "no annotation of them"
        raise ExportError(f"nothing to export for the classes {', '.join(map(repr, settings.classes))} ({reasons}); "
                          "draw annotations of them, or lock or reclassify results to accept them")
    sources = {o.image.name: o.image for o in plan.objects}
    downsamples = {name: _checked_downsample(slides, image, settings) for name, image in sources.items()}
    splits = split_images(sorted(sources), settings.validation_fraction, settings.seed)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        for split in SPLITS:
            (partial / split).mkdir(parents=True)
        samples = _write_samples(partial, plan, slides, settings, downsamples, splits, progress)
        summary = _summary(out, plan, samples, splits)
        manifest = {"format": "slidesam-training-export", "version": 1, "settings": settings.to_json(),
                    "images": {s: list(summary.images[s]) for s in SPLITS}, "counts": summary.counts,
                    "skipped": summary.skipped, "samples": samples}
        (partial / MANIFEST).write_text(json.dumps(manifest, sort_keys=True, indent=1) + "\n")
        check_new_folder(out)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return summary


def _plan(project: Project, images: Sequence[ImageEntry], settings: ExportSettings) -> _Plan:
    plan = _Plan()
    chosen = {*settings.classes, *([settings.accepted_class] if settings.accepted_class else [])}
    for image in images:
        labelled = []
        for annotation in sorted(project.annotations(image.name), key=lambda a: a.id):
            record = provenance(annotation)
            if record is not None or annotation.path_class in chosen:
                labelled.append(annotation.geometry)
            decision = classify(annotation, settings)
            if decision is None:
                continue
            kind, label = decision
            if kind in KINDS:
                plan.objects.append(_Object(image, annotation, kind, label, (record or {}).get("model_id")))
                continue
            plan.skipped[kind] += 1
            if kind == UNKNOWN:
                plan.warnings.append(f"{image.name}: result {annotation.id} ({annotation.name}) records no geometry_sha256 "
                                     "(written by an older slidesam): whether it was corrected is unknown; skipped")
                log.warning("%s", plan.warnings[-1])
        plan.labelled[image.name] = shapely.union_all([g for g in labelled if _area(g) > 0])
    return plan


def _checked_downsample(slides: PixelSource, image: ImageEntry, settings: ExportSettings) -> float:
    if image.path is None or not Path(image.path).is_file():
        raise ExportError(f"{image.name}: its slide {image.path or image.uri} is missing on disk (nothing was written)")
    try:
        return image_downsample(slides, image, settings)
    except SlideUnreadable as error:
        raise ExportError(f"{image.name}: {error} (nothing was written)") from None


def _write_samples(
    folder: Path, plan: _Plan, slides: PixelSource, settings: ExportSettings, downsamples: dict[str, float],
    splits: dict[str, str], progress: bool | None,
) -> list[dict]:
    """Writes every object's patches and its negatives; returns the manifest's sample entries in order."""
    samples: list[dict] = []
    taken: dict[str, list[shapely.Geometry]] = {}
    for obj in tqdm(plan.objects, desc="export-training", unit="object", disable=None if progress is None else not progress, leave=False):
        image, d = obj.image, downsamples[obj.image.name]
        size = slides.size(image)
        base = f"{_slug(image.name)}_{_slug(obj.annotation.id)}"
        provenance_ = {"image": image.name, "annotation_id": obj.annotation.id, "class": obj.label, "model_id": obj.model_id}
        windows = object_windows(obj.annotation.geometry.bounds, size, d, settings.context, settings.min_size, settings.window, settings.overlap)
        written = 0
        for window in windows:
            mask = rasterise(obj.annotation.geometry, window)
            if mask.any():
                name = base + (f"_t{window.tile[0]}-{window.tile[1]}" if window.tile else "")
                samples.append(_write(folder, name, slides, image, window, mask, splits[image.name], {**provenance_, "kind": obj.kind}))
                written += 1
        if not written:
            plan.skipped[TOO_SMALL] += 1
            continue
        side = min(settings.window, max(windows[0].columns, windows[0].rows))
        rng = np.random.default_rng([settings.seed, int(hashlib.sha256(base.encode()).hexdigest()[:8], 16)])
        accepted = 0
        for window in negative_windows(obj.annotation.geometry.bounds, side, d, size, rng):
            if accepted == settings.negatives_per_object:
                break
            box = window.box
            if shapely.intersection(box, plan.labelled[image.name]).area > 0 or any(shapely.intersection(box, t).area > 0 for t in taken.get(image.name, [])):
                continue
            rgb = slides.local.read(image.path, (window.x, window.y), (window.columns, window.rows), d)
            if tissue_fraction(rgb) < MIN_TISSUE:
                continue
            mask = np.zeros((window.rows, window.columns), dtype=np.uint8)
            provenance_negative = {**provenance_, "class": None, "kind": NEGATIVE}
            samples.append(_write(folder, f"{base}_neg{accepted}", slides, image, window, mask, splits[image.name], provenance_negative, rgb))
            taken.setdefault(image.name, []).append(box)
            accepted += 1
    return samples


def _write(
    folder: Path, name: str, slides: PixelSource, image: ImageEntry, window: Window, mask: np.ndarray, split: str,
    provenance_: dict, rgb: np.ndarray | None = None,
) -> dict:
    """NAME.png, NAME_mask.png (0/255) and NAME.json (placement, as PatchFolder reads it, and provenance) in
    the split's folder; returns the manifest entry."""
    if rgb is None:
        rgb = slides.local.read(image.path, (window.x, window.y), (window.columns, window.rows), window.downsample)
    target = folder / split
    if (target / f"{name}.png").exists():
        raise ExportError(f"two samples would be named {name}: annotation ids that differ only in punctuation")
    for path, pixels in ((target / f"{name}.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), (target / f"{name}_mask.png", mask)):
        ok, data = cv2.imencode(".png", pixels, _PNG)
        if not ok:
            raise ExportError(f"could not encode {path.name} as PNG")
        path.write_bytes(data.tobytes())
    placement = {"origin": [window.x, window.y], "downsample": window.downsample, "mpp": slides.local.pixel_size(image.path)[0]}
    slide_id = slides.slide_map.slide_id(image)
    if slide_id is not None:
        placement["slide"] = slide_id
    record = {**provenance_, "tile": list(window.tile) if window.tile else None}
    (target / f"{name}.json").write_text(json.dumps({**placement, "provenance": record}, sort_keys=True, indent=1) + "\n")
    return {"name": name, "split": split, **record}


def _summary(out: Path, plan: _Plan, samples: list[dict], splits: dict[str, str]) -> ExportSummary:
    counts = {split: {kind: 0 for kind in KINDS} for split in SPLITS}
    for sample in samples:
        counts[sample["split"]][sample["kind"]] += 1
    images = {split: tuple(sorted(name for name, side in splits.items() if side == split)) for split in SPLITS}
    return ExportSummary(out, counts, images, dict(sorted(plan.skipped.items())), tuple(plan.warnings))


def _geometry_changed(geometry: shapely.Geometry, record: dict) -> bool | None:
    """Whether the geometry differs from the one the model gave (None: the provenance cannot tell)."""
    recorded = record.get("geometry_sha256")
    if isinstance(recorded, str):
        return geometry_sha256(geometry) != recorded
    refined = recorded_refined(record) if "refined" in record else None
    return None if refined is None else not same_outline(geometry, refined)


def _area(geometry: shapely.Geometry) -> float:
    """The area of the geometry's polygons (0 for points and lines)."""
    return float(sum(p.area for p in shapely.get_parts(geometry) if isinstance(p, shapely.Polygon)))


def _slug(text: str) -> str:
    """A file-name part: letters, digits and '-'; text that had to change also gets a short hash of itself, so two
    names never collide."""
    slug = re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")
    return slug if slug == text else f"{slug}-{hashlib.sha256(text.encode()).hexdigest()[:6]}"
