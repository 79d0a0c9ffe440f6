"""QuPath GeoJSON: annotation features the way QuPath (v0.4+) exports and imports them.

Followed: qupath-core `qupath/lib/io/PathObjectTypeAdapters.java` (QuPath's own reader and writer,
`PathObjectTypeAdapter.write/read` and `MeasurementListTypeAdapter`):

- a Feature with a UUID string `id` (v0.4+; v0.2 put the Java class name there, which is read as the type);
- `properties.objectType`: "annotation", "detection", "cell", "tile", "tmaCore", "root"
  (older files: `object_type`, or `type`); a missing type means an annotation;
- `properties.name`; `properties.color` (the object's own colour, [r, g, b]);
- `properties.classification`: {"name", "color": [r, g, b]} (older files: `colorRGB` packed int;
  derived classes may come as `names`, a list, read as QuPath's "A: B" string);
- `properties.isLocked`, written only when true;
- `properties.measurements`: an object name -> number (QuPath before v0.4 wrote a list of
  {"name", "value"}; both are read);
- `properties.metadata`: a string -> string map. An annotation's description is its metadata entry
  `ANNOTATION_DESCRIPTION` (`PathAnnotationObject.setDescription`, QuPath >= 0.4), so it crosses GeoJSON there;
  files slidesam wrote before used `description`, still read as the description.
A classification always carries a colour: QuPath's reader rejects one without (`PathClassTypeAdapter`); a
class without a known colour gets the one QuPath would give it. Geometry and measurements are written as
QuPath keeps them (`qupath_values`: 0.01-px grid, float32), so QuPath reads back exactly what slidesam wrote.
Points annotations are `MultiPoint` (or `Point`); rectangles are `Polygon`s; holes are interior rings.
Coordinates are level-0 pixels, origin top-left.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

import shapely
import shapely.geometry

from slidesam.atomic_files import atomic_write
from slidesam.qupath_bridge.project import Annotation
from slidesam.qupath_bridge.qupath_values import qupath_class_colour, qupath_geometry, qupath_measurement

DESCRIPTION_KEY = "ANNOTATION_DESCRIPTION"
_LEGACY_DESCRIPTION_KEY = "description"
ANNOTATION_TYPES = {"annotation", "PathAnnotationObject", "unknown"}
_LEGACY_TYPE_IDS = {"PathTileObject", "PathCellObject", "TMACoreObject", "PathDetectionObject", "PathRootObject", "PathAnnotationObject"}
_ID_NAMESPACE = uuid.UUID("5b0c9a52-3c1e-4c55-8f0e-7f1f5c3f2a10")


class GeoJSONError(ValueError):
    """Text that is not QuPath GeoJSON; the message names the file and the feature."""


# ------------------------------------------------------------------------------------------------
# Writing


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
    annotation = Annotation(
        feature_id or str(uuid.uuid4()), geometry, classification, name, measurements=dict(measurements or {}), locked=locked
    )
    return annotation_to_feature(annotation, color=color)


def annotation_to_feature(annotation: Annotation, *, color: tuple[int, int, int] | None = None, base: Mapping | None = None) -> dict:
    """The annotation as QuPath writes it (geometry and measurements as QuPath keeps them). `color` is its class
    colour (default: the annotation's own `class_color`, else QuPath's colour for the class); `base`, the feature
    it was read from, keeps the properties slidesam does not model."""
    properties: dict[str, Any] = dict(base.get("properties") or {}) if base else {}
    for legacy in ("object_type", "type"):
        properties.pop(legacy, None)
    properties["objectType"] = "annotation"
    _set_or_drop(properties, "name", annotation.name or None)
    if annotation.path_class:
        rgb = color or annotation.class_color or qupath_class_colour(annotation.path_class)
        properties["classification"] = {"name": annotation.path_class, "color": [int(c) for c in rgb]}
    else:
        properties.pop("classification", None)
    _set_or_drop(properties, "isLocked", True if annotation.locked else None)
    _set_or_drop(properties, "measurements", {k: qupath_measurement(v) for k, v in annotation.measurements.items()} or None)
    metadata = {k: v for k, v in (properties.get("metadata") or {}).items() if k != DESCRIPTION_KEY}
    if DESCRIPTION_KEY not in (properties.get("metadata") or {}):
        metadata.pop(_LEGACY_DESCRIPTION_KEY, None)  # it was read as the description
    if annotation.description:
        metadata[DESCRIPTION_KEY] = annotation.description
    _set_or_drop(properties, "metadata", metadata or None)
    return {
        "type": "Feature",
        "id": annotation.id,
        "geometry": shapely.geometry.mapping(_single_if_possible(qupath_geometry(annotation.geometry))),
        "properties": properties,
    }


def _set_or_drop(properties: dict, key: str, value: Any) -> None:
    if value is None:
        properties.pop(key, None)
    else:
        properties[key] = value


def _single_if_possible(geometry: shapely.Geometry) -> shapely.Geometry:
    if isinstance(geometry, shapely.MultiPolygon) and len(geometry.geoms) == 1:
        return geometry.geoms[0]
    return geometry


def feature_collection(features: Iterable[dict]) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


def dumps(document: Any) -> bytes:
    """Deterministic bytes: the same document always gives the same file."""
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_geojson(path: Path, document: dict) -> None:
    """Writes atomically (temporary file + rename), so a crash never leaves half a file."""
    atomic_write(Path(path), dumps(document))


# ------------------------------------------------------------------------------------------------
# Reading


def parse_features(text: str | bytes, where: str) -> list[dict]:
    """The features of a FeatureCollection, a bare list of Features (QuPath's other export form) or one Feature."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GeoJSONError(f"{where} is not valid JSON: {error}") from None
    if isinstance(document, dict) and document.get("type") == "FeatureCollection":
        features = document.get("features")
    elif isinstance(document, list):
        features = document
    elif isinstance(document, dict) and document.get("type") == "Feature":
        features = [document]
    else:
        raise GeoJSONError(f"{where} is not a GeoJSON FeatureCollection, Feature or list of Features")
    if not isinstance(features, list):
        raise GeoJSONError(f"{where}: `features` must be a list")
    for index, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise GeoJSONError(f"{where}, feature {index}: not a GeoJSON Feature")
    return features


def read_features(path: Path) -> list[dict]:
    return parse_features(Path(path).read_bytes(), str(path))


def object_type(feature: Mapping) -> str:
    """QuPath's object type of a feature, with the legacy spellings QuPath itself accepts."""
    properties = feature.get("properties") or {}
    for key in ("objectType", "object_type", "type"):
        if isinstance(properties.get(key), str):
            return properties[key]
    legacy = feature.get("id")
    return legacy if legacy in _LEGACY_TYPE_IDS else "unknown"


def is_annotation(feature: Mapping) -> bool:
    return object_type(feature) in ANNOTATION_TYPES


def feature_to_annotation(feature: Mapping, where: str) -> Annotation:
    """An annotation feature as an Annotation (GeoJSONError when it cannot be one).

    A feature without a UUID gets one derived from its content and `where`, so reading the same
    file twice gives the same ids."""
    properties = feature.get("properties") or {}
    if not isinstance(properties, dict):
        raise GeoJSONError(f"{where}: `properties` must be an object")
    try:
        geometry = shapely.geometry.shape(feature["geometry"])
    except (KeyError, TypeError, ValueError, AttributeError, shapely.errors.GEOSException) as error:
        raise GeoJSONError(f"{where}: missing or malformed geometry ({error})") from None
    metadata = properties.get("metadata") if isinstance(properties.get("metadata"), dict) else {}
    description = metadata.get(DESCRIPTION_KEY, metadata.get(_LEGACY_DESCRIPTION_KEY))
    name = properties.get("name")
    return Annotation(
        id=_feature_id(feature, where),
        geometry=geometry,
        path_class=_class_name(properties.get("classification"), where),
        name=str(name) if name is not None else None,
        description=str(description) if description is not None else None,
        measurements=_measurements(properties.get("measurements"), where),
        locked=bool(properties.get("isLocked", False)),
        class_color=class_color(properties.get("classification")),
    )


def class_color(classification: Any) -> tuple[int, int, int] | None:
    """The [r, g, b] (or legacy packed `colorRGB`) colour of a classification object."""
    if not isinstance(classification, dict):
        return None
    color = classification.get("color")
    if isinstance(color, list) and len(color) == 3 and all(isinstance(c, (int, float)) for c in color):
        return tuple(int(c) for c in color)
    packed = classification.get("colorRGB")
    if isinstance(packed, int):
        return (packed >> 16) & 255, (packed >> 8) & 255, packed & 255
    return None


def _feature_id(feature: Mapping, where: str) -> str:
    raw = feature.get("id")
    if isinstance(raw, str):
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            pass
    content = json.dumps(feature, sort_keys=True, default=str)
    return str(uuid.uuid5(_ID_NAMESPACE, f"{where}\n{content}"))


def _class_name(classification: Any, where: str) -> str | None:
    if classification is None:
        return None
    if isinstance(classification, str):
        return classification
    if not isinstance(classification, dict):
        raise GeoJSONError(f"{where}: `classification` must be an object with a name")
    if isinstance(classification.get("name"), str):
        return classification["name"]
    names = classification.get("names")
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return ": ".join(names)
    raise GeoJSONError(f"{where}: `classification` has no name")


def _measurements(raw: Any, where: str) -> dict[str, float]:
    if raw is None:
        return {}
    if isinstance(raw, dict):
        items = raw.items()
    elif isinstance(raw, list):
        try:
            items = [(entry["name"], entry["value"]) for entry in raw]
        except (KeyError, TypeError):
            raise GeoJSONError(f"{where}: `measurements` list entries need `name` and `value`") from None
    else:
        raise GeoJSONError(f"{where}: `measurements` must be an object or a list")
    values = {}
    for name, value in items:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[str(name)] = float(value)
        elif value is not None:
            raise GeoJSONError(f"{where}: measurement {name!r} is not a number ({value!r})")
    return values

