"""Values as QuPath keeps them: what slidesam writes is what QuPath reads back, in both project backends.

QuPath (0.6.0, qupath-core) changes three things it is given, so slidesam writes them the way QuPath keeps them:

- **Class colours.** QuPath never has a class without a colour (`PathClass.getInstance`). A class created
  without one gets: the `PathClass.StandardPathClasses` colour (Tumor, Stroma, ...; QuPath's GUI loads them at
  start, a bare qupath-core only when something uses that class), a fixed colour scaled for
  the intensity classes (`getDefaultColor`: Positive, Negative, 1+, 2+, 3+), or else a colour drawn from
  `java.util.Random` seeded with the `String.hashCode()` of the class's names joined by a newline (r, g, b
  drawn until one is at least 40).
- **Measurements** are float32: reading GeoJSON, QuPath's `NumericMeasurementList.DoubleList.setValue` casts
  every value to float, so 0.93 comes back as 0.9300000071525574 (which is also what QuPath exports).
- **Geometry** goes through QuPath's default `GeometryFactory` (`GeometryTools`): a precision grid of 0.01 px
  (`GeometryPrecisionReducer`) and float32 coordinates, written to GeoJSON with 2 decimals (`ROITypeAdapters`).
  Ring starts, orientations and the order of parts carry no meaning: QuPath rebuilds polygons it has to reduce,
  and since 0.6.0 `GeometryConverter.roiToGeometry` normalizes the geometry of polygon and points ROIs (JTS
  `norm()`) but not of the others. The points of a Points annotation come out sorted by that normalization,
  while QuPath's `PointsROI` keeps them in the order given (the click order), and so does slidesam.

`geometry_sha256` names a geometry as QuPath keeps it, whatever QuPath may change without changing the shape:
how the model's geometry is recorded in a result's provenance, so an edit made in QuPath shows.
"""

from __future__ import annotations

import hashlib

import numpy as np
import shapely

RGB = tuple[int, int, int]
QUPATH_GRID = 0.01
"""QuPath's geometry precision (`GeometryTools`' default factory: `new PrecisionModel(-0.01)`)."""

STANDARD_CLASS_COLOURS: dict[str, RGB] = {
    "Tumor": (200, 0, 0), "Stroma": (150, 200, 150), "Immune cells": (160, 90, 160), "Ignore*": (180, 180, 180),
    "Image": (128, 128, 128), "Necrosis": (50, 50, 50), "Other": (255, 200, 0), "Region*": (0, 0, 180),
}
_INTENSITY = {"Positive": (200, 50, 50), "Negative": (90, 90, 180), "1+": (255, 215, 0), "2+": (225, 150, 50), "3+": (200, 50, 50)}
_DERIVED_SCALE = {"Positive": 0.75, "Negative": 1.25, "1+": 0.9, "2+": 0.6, "3+": 0.4}


def qupath_class_colour(name: str) -> RGB:
    """QuPath's colour for the class `name` ("A: B" is B derived from A) when it is created without one."""
    names = [part.strip() for part in name.split(":")]
    if len(names) == 1 and names[0] in STANDARD_CLASS_COLOURS:
        return STANDARD_CLASS_COLOURS[names[0]]
    last = names[-1]
    if last in _INTENSITY:
        if len(names) == 1:
            return _scaled(_INTENSITY[last], 1.25)
        if names[:-1] == ["Tumor"]:
            return _INTENSITY[last]
        return _scaled(qupath_class_colour(": ".join(names[:-1])), _DERIVED_SCALE[last])
    random = _JavaRandom(_java_string_hash("\n".join(names)))
    r = g = b = 0
    while r < 40 and g < 40 and b < 40:
        r, g, b = random.next_int_256(), random.next_int_256(), random.next_int_256()
    return r, g, b


def qupath_measurement(value: float) -> float:
    """The measurement as QuPath keeps it (float32)."""
    return float(np.float32(value))


def qupath_geometry(geometry: shapely.Geometry) -> shapely.Geometry:
    """The geometry as QuPath keeps it: coordinates on its 0.01-px grid, float32, to 2 decimals (rings in the
    order given; a polygon that snapping would make invalid is reduced as QuPath does, `set_precision`)."""
    snapped = shapely.transform(geometry, _as_written)
    if isinstance(geometry, (shapely.Polygon, shapely.MultiPolygon)) and not snapped.is_valid:
        snapped = shapely.transform(shapely.set_precision(geometry, QUPATH_GRID), _as_written)
    return snapped


def same_geometry(a: shapely.Geometry, b: shapely.Geometry) -> bool:
    """Equal as QuPath sees geometry: the same coordinates; for polygons and lines whatever their ring starts,
    orientations and part order; points in the same order."""
    if isinstance(a, (shapely.MultiPoint, shapely.Point)):
        return bool(shapely.equals_exact(a, b, 0))
    return bool(shapely.equals_exact(shapely.normalize(a), shapely.normalize(b), 0))


def geometry_sha256(geometry: shapely.Geometry) -> str:
    """SHA-256 (hex) of the geometry's vertices as QuPath keeps them: every vertex of every ring (its closing
    repeat left out) or point, as integer hundredths of a pixel "x,y", sorted, joined by ";" (UTF-8). Ring
    starts, orientations, part order and a one-part MultiPolygon read back as a Polygon leave it unchanged; moving,
    adding or removing a vertex changes it. The Java live client (`Hashes.geometrySha256`) computes the same."""
    vertices = []
    for part in shapely.get_parts(qupath_geometry(geometry)):
        rings = shapely.get_rings(part) if isinstance(part, shapely.Polygon) else [part]
        for ring in rings:
            coordinates = shapely.get_coordinates(ring)
            vertices.append(coordinates[:-1] if isinstance(ring, shapely.LinearRing) else coordinates)
    hundredths = np.rint(np.concatenate(vertices or [np.empty((0, 2))]) * 100).astype(np.int64)
    ordered = hundredths[np.lexsort((hundredths[:, 1], hundredths[:, 0]))]
    return hashlib.sha256(";".join(f"{x},{y}" for x, y in ordered.tolist()).encode()).hexdigest()


def _as_written(xy: np.ndarray) -> np.ndarray:
    """Coordinates snapped to the grid as JTS does (`Math.round(v * 100) / 100`), stored as float32, written
    with 2 decimals."""
    snapped = np.floor(xy / QUPATH_GRID + 0.5) * QUPATH_GRID
    return np.round(snapped.astype(np.float32).astype(np.float64), 2)


def _scaled(rgb: RGB, scale: float) -> RGB:
    """ColorTools.makeScaledRGB: each channel times scale, truncated, at most 255."""
    return tuple(min(255, int(c * scale)) for c in rgb)  # type: ignore[return-value]


def _java_string_hash(text: str) -> int:
    """Java's String.hashCode() (over UTF-16 code units, 32-bit signed)."""
    units = text.encode("utf-16-be")
    value = 0
    for i in range(0, len(units), 2):
        value = (31 * value + int.from_bytes(units[i:i + 2], "big")) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


class _JavaRandom:
    """java.util.Random's linear congruential generator, as far as nextInt(256) needs it."""

    _MULTIPLIER, _MASK = 0x5DEECE66D, (1 << 48) - 1

    def __init__(self, seed: int):
        self._seed = (seed ^ self._MULTIPLIER) & self._MASK

    def next_int_256(self) -> int:
        self._seed = (self._seed * self._MULTIPLIER + 0xB) & self._MASK
        bits = self._seed >> 17  # next(31)
        return (256 * bits) >> 31
