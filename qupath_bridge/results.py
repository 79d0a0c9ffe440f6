"""Result annotations: which prompt groups need SAM again, and the annotation each answer becomes.

A result carries its provenance three ways: its name ("SAM: <group>"), measurements ("SAM score",
"SAM clicks", "SAM area µm^2" or "SAM area px^2") and a JSON description:

    {"slidesam": 1, "source": "prompts", "group": "lesion 1", "prompts_sha256": "...",
     "model_id": "mobile_sam@6dbb90523a35", "checkpoint_sha256": "...", "score": 0.97, "geometry_sha256": "...",
     "clicks": [[x, y, 1], ...], "box": null, "field_of_view": {...}, "settings": {...},
     "resolution": {"requested_downsample": 2.0, "requested_mpp": 0.5, "encoder_downsample": 2.0,
                    "encoder_mpp": 0.5, "downsampled": false, "windows": 4, "coarse_downsample": 5.9},
     "created": "2026-11-26T15:00:00Z"}

`resolution` is the resolution the model saw beside the one asked for (see `wire_results.ModelResolution`;
absent when the server does not report it); `downsampled` true means the polygon is coarser than asked.

`geometry_sha256` names the geometry the model gave, as QuPath keeps it (`qupath_values.geometry_sha256`): a
result whose geometry no longer has it was corrected in QuPath (`training_export`).

`prompts_sha256` hashes the prompts and every setting that shapes the result (model, field of view,
polygon options, class), so an unchanged group is skipped and a changed one replaces its result,
keeping the annotation's id. A new result's id is derived from image, source and group, so the same
input always gives the same file. `created` honours SOURCE_DATE_EPOCH (reproducible-builds
convention) when it is set.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping, Sequence

from slidesam.qupath_bridge.project import Annotation, PathClass, Project
from slidesam.qupath_bridge.prompts import PromptGroup
from slidesam.qupath_bridge.qupath_values import geometry_sha256
from slidesam.qupath_bridge.wire_results import ObjectResult

_RESULT_NAMESPACE = uuid.UUID("0d7d8f5e-2b55-4a57-9c55-3e0f4f1f7c21")


@dataclass(frozen=True)
class Job:
    """A group that needs SAM: its prompts hash and the results it replaces (oldest first)."""

    group: PromptGroup
    prompts_sha256: str
    replaces: tuple[Annotation, ...] = ()


@dataclass(frozen=True)
class Plan:
    jobs: list[Job]
    unchanged: int
    locked: list[str]


@dataclass(frozen=True)
class Segmentation:
    """The server's answer for a job, and where SAM looked."""

    result: ObjectResult
    region: tuple[int, int, int, int]
    checkpoint_sha256: str
    warnings: tuple[str, ...] = ()
    """For a person: e.g. that the model saw the region coarser than asked for."""

    def field_of_view_json(self) -> dict:
        """Where SAM looked (level-0) and at which downsample; the rectangle the server read instead,
        when it moved the region (grid alignment)."""
        x, y, width, height = self.region
        record = {"x": x, "y": y, "width": width, "height": height, "downsample": round(self.result.raw.downsample, 6)}
        raw = self.result.raw
        if raw.HasField("region"):
            read = [raw.region.x, raw.region.y, raw.region.width, raw.region.height]
            if any(abs(a - b) > 0.5 for a, b in zip(read, self.region)):
                record["region_read"] = {"x": read[0], "y": read[1], "width": read[2], "height": read[3]}
        return record

    def resolution_json(self) -> dict:
        """The provenance's `resolution` entry (empty when the server does not report it)."""
        resolution = self.result.resolution
        return {"resolution": resolution.to_json()} if resolution is not None else {}


def provenance(annotation: Annotation) -> dict | None:
    """The slidesam provenance in an annotation's description, or None when it has none."""
    if not annotation.description:
        return None
    try:
        record = json.loads(annotation.description)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and record.get("slidesam") == 1 else None


def plan(annotations: Sequence[Annotation], groups: Sequence[PromptGroup], source: str, settings: Mapping) -> Plan:
    """Which groups need SAM: no result yet, or prompts/settings changed since their result.
    A locked result is left alone (reported)."""
    earlier: dict[str, list[Annotation]] = {}
    for annotation in annotations:
        record = provenance(annotation)
        if record and record.get("source") == source:
            earlier.setdefault(str(record.get("group", "")), []).append(annotation)
    jobs, unchanged, locked = [], 0, []
    for group in groups:
        digest = group.sha256(settings)
        results = earlier.get(group.name, [])
        if len(results) == 1 and provenance(results[0]).get("prompts_sha256") == digest:
            unchanged += 1
        elif any(result.locked for result in results):
            locked.append(group.result_name)
        else:
            jobs.append(Job(group, digest, tuple(results)))
    return Plan(jobs, unchanged, locked)


def result_id(image: str, source: str, group: str) -> str:
    return str(uuid.uuid5(_RESULT_NAMESPACE, f"{image}\n{source}\n{group}"))


def created_time() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    moment = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch.isdigit() else datetime.now(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def result_annotation(
    image: str, job: Job, answer: Segmentation, source: str, target_class: str, settings: Mapping
) -> Annotation | None:
    """The annotation for a job's answer (None when SAM found no object)."""
    result = answer.result
    if result.geometry.is_empty:
        return None
    record = {
        "slidesam": 1,
        "source": source,
        "group": job.group.name,
        "prompts_sha256": job.prompts_sha256,
        "model_id": result.model_id,
        "checkpoint_sha256": answer.checkpoint_sha256,
        "score": round(result.score, 6),
        "geometry_sha256": geometry_sha256(result.geometry),
        **job.group.to_json(),
        "field_of_view": answer.field_of_view_json(),
        "settings": dict(settings),
        **answer.resolution_json(),
        "created": created_time(),
    }
    measurements = {"SAM score": round(result.score, 6), "SAM clicks": float(len(job.group.clicks))}
    if result.area_um2 is not None:
        measurements["SAM area µm^2"] = round(result.area_um2, 3)
    else:
        measurements["SAM area px^2"] = round(result.area_px, 3)
    annotation_id = job.replaces[0].id if job.replaces else result_id(image, source, job.group.name)
    return Annotation(
        annotation_id, result.geometry, target_class, job.group.result_name,
        description=json.dumps(record, ensure_ascii=False), measurements=measurements,
    )


def apply(project: Project, image: str, job: Job, annotation: Annotation | None, target: PathClass) -> None:
    """Writes one job's result into the project: replaces its earlier result (same id), removes duplicates."""
    replaces = list(job.replaces)
    if annotation is not None:
        project.ensure_path_class(target)
        if replaces:
            project.update_annotation(image, annotation)
            replaces.pop(0)
        else:
            project.add_annotation(image, annotation)
    for stale in replaces:
        project.remove_annotation(image, stale.id)
