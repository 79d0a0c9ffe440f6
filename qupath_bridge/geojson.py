"""QuPath GeoJSON: annotation features the way QuPath (v0.4+) exports and imports them.

Followed: qupath-core `qupath/lib/io/PathObjectTypeAdapters.java` (QuPath's reader and writer):
a Feature with a UUID `id`, `properties.objectType` = "annotation", `properties.name`,
`properties.classification` = {name, color: [r, g, b]}, `properties.isLocked`, and
`properties.measurements` as a name -> number object. Coordinates are level-0 pixels, origin top-left.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Iterable, Mapping

import shapely

DEFAULT_CLASS_COLOURS = {"Tumor": (200, 0, 0), "Stroma": (150, 200, 150), "Other": (255, 200, 0)}


def annotation_feature(
    geometry: shapely.Geometry,
    *,
    classification: str | None = "Tumor",
    color: tuple[int, int, int] | None = None,
    name: str | None = None,
    measurements: Mapping[str, float] | None = None,
    feature_id: str | None = None,
    locked: bool = False,
) -> dict:
    """One QuPath annotation as a GeoJSON Feature (Polygon or MultiPolygon geometry)."""
    properties: dict = {"objectType": "annotation", "isLocked": locked}
    if name:
        properties["name"] = name
    if classification:
        rgb = color or DEFAULT_CLASS_COLOURS.get(classification, (255, 0, 0))
        properties["classification"] = {"name": classification, "color": list(rgb)}
    if measurements:
        properties["measurements"] = {key: float(value) for key, value in measurements.items()}
    return {
        "type": "Feature",
        "id": feature_id or str(uuid.uuid4()),
        "geometry": shapely.geometry.mapping(_single_if_possible(geometry)),
        "properties": properties,
    }


def _single_if_possible(geometry: shapely.Geometry) -> shapely.Geometry:
    if isinstance(geometry, shapely.MultiPolygon) and len(geometry.geoms) == 1:
        return geometry.geoms[0]
    return geometry


def feature_collection(features: Iterable[dict]) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def write_geojson(path: Path, document: dict) -> None:
    """Writes atomically (temporary file + rename), so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2, ensure_ascii=False)
            out.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
