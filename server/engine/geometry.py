"""Mask to polygons in level-0 slide coordinates, and back.

Coordinate convention: region pixel (col, row) covers [col, col+1) x [row, row+1) in continuous
region coordinates (u, v), so its centre is (col + 0.5, row + 0.5). Contours are traced through the
centres of an object's boundary pixels and then mapped to level-0 with a `RegionTransform`. An
object therefore loses half a pixel on each side, and objects without area (single pixels, lines
one pixel wide, rings one pixel thick) yield no polygon. `geometry_to_mask` is the inverse: it sets
every pixel whose centre lies inside or on the geometry.

Simplification (topology-preserving Douglas-Peucker) runs in level-0 space, so tolerances are
level-0 pixels as given.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import shapely

_POLYGON_TYPE_ID = 3
_SHIFT = 8  # fixed-point fraction bits for cv2 drawing
_BUDGET_ROUNDS = 12
_ACCURATE_ROUNDS = 2  # round 2 simplifies at two region pixels: still faithful to the mask
_DROP_KEEPS_AREA = 0.98  # dropping small rings is preferred while it keeps this share of the area
_MIN_RING_VERTICES = 3  # a simplified ring keeps at least a triangle


@dataclass(frozen=True)
class RegionTransform:
    """Maps region-pixel coordinates to level-0: X = x0 + u * sx, Y = y0 + v * sy,
    where (u, v) are continuous region coordinates (pixel (col, row) covers [col, col+1) x [row, row+1),
    so its centre is (col + 0.5, row + 0.5))."""

    x0: float
    y0: float
    sx: float
    sy: float

    def __post_init__(self) -> None:
        if not (np.isfinite([self.x0, self.y0, self.sx, self.sy]).all() and self.sx > 0 and self.sy > 0):
            raise ValueError(f"invalid region transform {self}")

    def to_level0(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) region coordinates -> (N, 2) level-0 coordinates."""
        return np.asarray(uv, dtype=np.float64) * (self.sx, self.sy) + (self.x0, self.y0)

    def to_region(self, xy: np.ndarray) -> np.ndarray:
        """(N, 2) level-0 coordinates -> (N, 2) region coordinates."""
        return (np.asarray(xy, dtype=np.float64) - (self.x0, self.y0)) / (self.sx, self.sy)


@dataclass(frozen=True)
class PolygonLimits:
    """How a mask becomes polygons; zero disables each limit."""

    tolerance_level0: float = 0.0  # Douglas-Peucker tolerance in level-0 pixels; 0 = none
    max_vertices: int = 0  # total vertex budget over all rings and parts; 0 = unlimited
    min_area_level0: float = 0.0  # parts (and holes) smaller than this, in level-0 px², are dropped


def mask_to_geometry(
    mask: np.ndarray, transform: RegionTransform, options: PolygonLimits = PolygonLimits(), origin: tuple[int, int] = (0, 0)
) -> shapely.MultiPolygon:
    """Boolean/uint8 HxW mask (non-zero = object) -> valid MultiPolygon in level-0 coordinates.

    origin: the (col, row) of mask[0, 0] in the region, when the mask is a crop of the region's mask.
    The MultiPolygon is empty when the mask holds nothing with area.
    """
    if np.asarray(mask).size == 0:
        return shapely.MultiPolygon()
    parts = _traced_parts(_as_uint8(mask), transform, options.min_area_level0, origin)
    valid = shapely.is_valid(parts)
    if not valid.all():
        repaired = _repaired(parts[~valid])
        parts = np.concatenate([parts[valid], repaired[shapely.area(repaired) >= options.min_area_level0]])
    geometry = shapely.multipolygons(parts)
    if options.tolerance_level0 <= 0 and options.max_vertices <= 0:
        return geometry
    return _simplify_to_budget(geometry, options, max(transform.sx, transform.sy))


def geometry_to_mask(
    geometry: shapely.Geometry, transform: RegionTransform, shape: tuple[int, int]
) -> np.ndarray:
    """Rasterise a level-0 (Multi)Polygon back to a boolean HxW region mask (inverse of mask_to_geometry).

    Pixel centres inside the polygon (boundary included) are set; pixel centres strictly inside holes
    are cleared. Polygons are drawn largest exterior first, so islands inside holes survive.
    """
    mask = np.zeros(shape, dtype=np.uint8)
    polygons = _polygonal(geometry)
    exterior_areas = shapely.area(shapely.polygons(shapely.get_exterior_ring(polygons)))
    for polygon in polygons[np.argsort(-exterior_areas, kind="stable")]:
        cv2.fillPoly(mask, [_fixed_point(polygon.exterior, transform)], 1, cv2.LINE_8, _SHIFT)
        for hole in polygon.interiors:
            points = _fixed_point(hole, transform)
            cv2.fillPoly(mask, [points], 0, cv2.LINE_8, _SHIFT)
            cv2.polylines(mask, [points], True, 1, 1, cv2.LINE_8, _SHIFT)
    return mask.view(bool)


def geometry_iou(a: shapely.Geometry, b: shapely.Geometry) -> float:
    """Area-based intersection over union in level-0; 0 when both are empty."""
    intersection = shapely.intersection(a, b).area
    union = a.area + b.area - intersection
    return float(intersection / union) if union > 0 else 0.0


def count_vertices(geometry: shapely.Geometry) -> int:
    """Total ring vertices of a (Multi)Polygon, counting each ring's closing point once."""
    rings = shapely.get_rings(shapely.get_parts(geometry))
    return int(shapely.get_num_coordinates(rings).sum() - len(rings))


def _as_uint8(mask: np.ndarray) -> np.ndarray:
    """A C-contiguous uint8 view or copy of a 2-D mask, non-zero meaning object."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {mask.shape}")
    if mask.dtype == bool:
        mask = mask.view(np.uint8)
    elif mask.dtype != np.uint8:
        mask = (mask != 0).view(np.uint8)
    return np.ascontiguousarray(mask)


def _traced_parts(mask: np.ndarray, transform: RegionTransform, min_area: float, origin: tuple[int, int]) -> np.ndarray:
    """Polygons (possibly invalid) from the mask's outer contours and their holes.

    Rings without area and rings below min_area are dropped (a dropped hole is filled) before any
    shapely object is built.
    """
    contours, hierarchy = cv2.findContours(mask, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE, offset=origin)
    if not contours:
        return np.empty(0, dtype=object)
    sizes = np.fromiter((len(c) for c in contours), dtype=np.intp, count=len(contours))
    parent = hierarchy[0, :, 3]
    areas = _ring_areas(np.concatenate(contours).reshape(-1, 2), sizes) * (transform.sx * transform.sy)

    is_hole = parent >= 0
    hole_kept = is_hole & (areas > 0) & (areas >= min_area)
    net_areas = areas - np.bincount(parent[hole_kept], weights=areas[hole_kept], minlength=len(areas))
    shell_kept = ~is_hole & (net_areas > 0) & (net_areas >= min_area)
    hole_kept &= shell_kept[np.where(is_hole, parent, 0)]
    if not shell_kept.any():
        return np.empty(0, dtype=object)

    part_of = np.cumsum(shell_kept) - 1
    part_of = np.where(is_hole, part_of[np.where(is_hole, parent, 0)], part_of)
    kept = np.flatnonzero(shell_kept | hole_kept)
    order = kept[np.argsort(part_of[kept] * 2 + is_hole[kept], kind="stable")]

    uv = np.concatenate([contours[i] for i in order]).reshape(-1, 2) + 0.5
    ring_of_point = np.repeat(np.arange(len(order)), sizes[order])
    rings = shapely.linearrings(transform.to_level0(uv), indices=ring_of_point)
    return shapely.polygons(rings, indices=part_of[order])


def _ring_areas(points: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Unsigned shoelace areas of consecutive closed rings stored back to back in `points`."""
    starts = np.cumsum(sizes) - sizes
    following = np.arange(1, len(points) + 1)
    following[starts + sizes - 1] = starts
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    cross = x * y[following] - x[following] * y
    return np.abs(np.add.reduceat(cross, starts)) / 2


def _polygonal(geometries: shapely.Geometry | np.ndarray) -> np.ndarray:
    """The non-empty Polygons within a geometry or array of them (collections and multi-parts unpacked)."""
    pieces = shapely.get_parts(shapely.get_parts(geometries))
    return pieces[(shapely.get_type_id(pieces) == _POLYGON_TYPE_ID) & ~shapely.is_empty(pieces)]


def _repaired(geometries: shapely.Geometry | np.ndarray) -> np.ndarray:
    """Valid Polygons covering the same area as invalid ones.

    Traced contours are self-touching (a ring running back along a one-pixel bridge or spur), not
    truly crossing, and buffer(0) repairs those several times faster than make_valid; make_valid
    ("structure": keeps enclosed areas, drops collapsed lines) runs only on what buffer(0) left invalid.
    """
    repaired = np.atleast_1d(shapely.buffer(geometries, 0))
    still_invalid = ~shapely.is_valid(repaired)
    if still_invalid.any():
        originals = np.atleast_1d(geometries)[still_invalid]
        repaired[still_invalid] = shapely.make_valid(originals, method="structure", keep_collapsed=False)
    return _polygonal(repaired)


def _simplified(geometry: shapely.MultiPolygon, tolerance: float) -> shapely.MultiPolygon:
    """Topology-preserving simplification, repaired only if the result is invalid."""
    simplified = shapely.simplify(geometry, tolerance, preserve_topology=True)
    if simplified.is_valid:
        return shapely.multipolygons(shapely.get_parts(simplified))
    return shapely.multipolygons(_repaired(simplified))


def _simplify_to_budget(
    geometry: shapely.MultiPolygon, options: PolygonLimits, region_pixel: float
) -> shapely.MultiPolygon:
    """Meet the vertex budget while keeping the large parts faithful.

    Simplify with the given tolerance; then raise it from max(given, half a region pixel), doubling
    each round. Once it reaches two region pixels, dropping the smallest holes and parts is preferred
    while that keeps 98% of the area (fragmented masks: many specks, a few real parts); otherwise the
    doubling goes on, and after the last round the smallest rings are dropped.
    """
    tolerance, budget = options.tolerance_level0, options.max_vertices
    if budget > 0 and _MIN_RING_VERTICES * len(shapely.get_rings(shapely.get_parts(geometry))) > budget:
        # Simplification keeps every ring (3 vertices at least), so no tolerance meets this budget and the
        # rounds below would simplify every ring in vain, up to seconds each: drop the smallest rings first.
        geometry = _drop_smallest_rings(geometry, budget, vertices_per_ring=_MIN_RING_VERTICES)
    result = _simplified(geometry, tolerance) if tolerance > 0 else geometry
    if budget <= 0 or count_vertices(result) <= budget:
        return result
    base = max(tolerance, 0.5 * region_pixel)
    for round_ in range(_BUDGET_ROUNDS):
        if base * 2**round_ > tolerance:
            result = _simplified(geometry, base * 2**round_)
        if count_vertices(result) <= budget:
            return result
        if round_ == _ACCURATE_ROUNDS:
            dropped = _drop_smallest_rings(result, budget)
            if dropped.area >= _DROP_KEEPS_AREA * result.area:
                return dropped
    return _drop_smallest_rings(result, budget)


def _drop_smallest_rings(
    geometry: shapely.MultiPolygon, budget: int, vertices_per_ring: int | None = None
) -> shapely.MultiPolygon:
    """Fill the smallest holes and drop the smallest parts until the vertex count fits the budget
    (counting each ring as vertices_per_ring vertices, when given).

    Going by ascending area removes an island before the hole around it, so no parts overlap.
    """
    parts = shapely.get_parts(geometry)
    rings, ring_part = shapely.get_rings(parts, return_index=True)
    is_hole = np.r_[False, ring_part[1:] == ring_part[:-1]]
    ring_vertices = shapely.get_num_coordinates(rings) - 1 if vertices_per_ring is None else np.full(len(rings), vertices_per_ring)
    part_vertices = np.bincount(ring_part, weights=ring_vertices, minlength=len(parts)).astype(np.int64)
    areas = np.where(is_hole, shapely.area(shapely.polygons(rings)), shapely.area(parts)[ring_part])

    ring_kept = np.ones(len(rings), dtype=bool)
    part_kept = np.ones(len(parts), dtype=bool)
    total = part_vertices.sum()
    for ring in np.argsort(areas, kind="stable"):
        if total <= budget:
            break
        part = ring_part[ring]
        if not part_kept[part]:
            continue
        if is_hole[ring]:
            ring_kept[ring] = False
            part_vertices[part] -= ring_vertices[ring]
            total -= ring_vertices[ring]
        else:
            part_kept[part] = False
            total -= part_vertices[part]
    ring_kept &= part_kept[ring_part]
    _, indices = np.unique(ring_part[ring_kept], return_inverse=True)
    result = shapely.multipolygons(shapely.polygons(rings[ring_kept], indices=indices))
    return result if result.is_valid else shapely.multipolygons(_repaired(result))


def _fixed_point(ring: shapely.LinearRing, transform: RegionTransform) -> np.ndarray:
    """Ring -> int32 pixel-centre indices scaled by 2**_SHIFT, as cv2 drawing functions take them."""
    indices = transform.to_region(shapely.get_coordinates(ring)) - 0.5
    return np.round(indices * (1 << _SHIFT)).astype(np.int32)
