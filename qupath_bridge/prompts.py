"""The prompt convention: which QuPath annotations are SAM prompts, and how they group into objects.

- Points annotations of class `SAM positive` / `SAM negative` are clicks (one Points annotation may
  hold several points); a rectangle of class `SAM box` is a box prompt. The class names are settable.
- Prompts group by annotation **name**: every prompt annotation named "lesion 1" belongs to the
  object "lesion 1", whose result is the annotation named "SAM: lesion 1". Prompts without a name
  form one object per image, whose result is named "SAM". (Names work the same in GeoJSON and in
  QuPath projects; QuPath: right-click an annotation > Set properties.)
- Click order is the order of the points inside a Points annotation, annotations taken in
  file / hierarchy order. The box is sent first, as SAM's batch interface does.
- A group needs at least one positive point or a box, at most one box, and every coordinate inside
  the image. A class that differs from a prompt class only in case or spacing ("sam Positive") is
  reported as an unknown class rather than silently ignored.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import shapely

from slidesam.qupath_bridge.project import Annotation
from slidesam.qupath_bridge.wire_requests import Click

RESULT_PREFIX = "SAM"


@dataclass(frozen=True)
class PromptClasses:
    positive: str = "SAM positive"
    negative: str = "SAM negative"
    box: str = "SAM box"

    def names(self) -> tuple[str, str, str]:
        return self.positive, self.negative, self.box


@dataclass(frozen=True)
class PromptGroup:
    """The prompts of one object: clicks in order and an optional box (x, y, width, height), level-0."""

    name: str
    clicks: tuple[Click, ...] = ()
    box: tuple[float, float, float, float] | None = None

    @property
    def result_name(self) -> str:
        return f"{RESULT_PREFIX}: {self.name}" if self.name else RESULT_PREFIX

    def points(self) -> list[tuple[float, float]]:
        """Every prompt coordinate (clicks and box corners)."""
        corners = []
        if self.box is not None:
            x, y, w, h = self.box
            corners = [(x, y), (x + w, y + h)]
        return [(c.x, c.y) for c in self.clicks] + corners

    def to_json(self) -> dict:
        return {
            "clicks": [[c.x, c.y, 1 if c.positive else 0] for c in self.clicks],
            "box": list(self.box) if self.box is not None else None,
        }

    def sha256(self, settings: Mapping) -> str:
        """Hash of the prompts and of every setting that shapes the result (model, field of view, ...)."""
        canonical = json.dumps({"prompts": self.to_json(), "settings": settings}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def _normalised(name: str) -> str:
    return " ".join(name.split()).casefold()


def find_prompt_groups(annotations: Sequence[Annotation], classes: PromptClasses) -> tuple[list[PromptGroup], list[str]]:
    """The prompt groups among an image's annotations, in order of first appearance, and the problems
    found (a group with a problem is left out)."""
    near_misses = {_normalised(n): n for n in classes.names()}
    clicks: dict[str, list[Click]] = {}
    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    problems: dict[str, list[str]] = {}
    for annotation in annotations:
        path_class = annotation.path_class or ""
        if path_class not in classes.names():
            if _normalised(path_class) in near_misses:
                problems.setdefault((annotation.name or "").strip(), []).append(
                    f"unknown class {path_class!r} (the prompt classes are {', '.join(map(repr, classes.names()))}; "
                    f"did you mean {near_misses[_normalised(path_class)]!r}?)"
                )
            continue
        group = (annotation.name or "").strip()
        clicks.setdefault(group, [])
        where = f"annotation {annotation.id} ({path_class})"
        geometry = annotation.geometry
        if not _finite(geometry):
            problems.setdefault(group, []).append(f"{where} has coordinates that are not finite numbers")
        elif path_class == classes.box:
            if not isinstance(geometry, shapely.Polygon) or geometry.is_empty:
                problems.setdefault(group, []).append(f"{where} must be a rectangle, got {geometry.geom_type}")
                continue
            x0, y0, x1, y1 = geometry.bounds
            if x1 <= x0 or y1 <= y0:
                problems.setdefault(group, []).append(f"{where} has no area")
                continue
            boxes.setdefault(group, []).append((x0, y0, x1 - x0, y1 - y0))
        else:
            points = _points(geometry)
            if points is None:
                problems.setdefault(group, []).append(f"{where} must be a Points annotation, got {geometry.geom_type}")
                continue
            if not points:
                problems.setdefault(group, []).append(f"{where} holds no points")
            positive = path_class == classes.positive
            clicks[group].extend(Click(x, y, positive) for x, y in points)
    groups = []
    for group, group_clicks in clicks.items():
        group_boxes = boxes.get(group, [])
        if group in problems:
            continue
        if len(group_boxes) > 1:
            problems.setdefault(group, []).append(f"{len(group_boxes)} boxes; a group takes at most one")
        if not group_boxes and not any(c.positive for c in group_clicks):
            problems.setdefault(group, []).append("no positive point and no box: nothing says where the object is")
        if group in problems:
            continue
        groups.append(PromptGroup(group, tuple(group_clicks), group_boxes[0] if group_boxes else None))
    messages = [
        f"{f'prompt group {g!r}' if g else 'the unnamed prompt group'}: {message}"
        for g, messages_ in problems.items() for message in messages_
    ]
    return groups, messages


def outside_image(group: PromptGroup, width: float, height: float) -> str | None:
    """A message when a prompt lies outside the image [0, width] x [0, height], else None."""
    for x, y in group.points():
        if not (0 <= x <= width and 0 <= y <= height):
            label = f"prompt group {group.name!r}" if group.name else "the unnamed prompt group"
            return f"{label}: the prompt at ({x:g}, {y:g}) lies outside the image (0..{width:g} x 0..{height:g} level-0 pixels)"
    return None


def _points(geometry: shapely.Geometry) -> list[tuple[float, float]] | None:
    if isinstance(geometry, shapely.Point):
        return [] if geometry.is_empty else [(geometry.x, geometry.y)]
    if isinstance(geometry, shapely.MultiPoint):
        return [(p.x, p.y) for p in geometry.geoms]
    return None


def _finite(geometry: shapely.Geometry) -> bool:
    return all(math.isfinite(v) for v in shapely.get_coordinates(geometry).ravel())
