"""Polygons between shapely (level-0 pixels) and the wire, and the checks an outline prompt must pass."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import shapely

from slidesam.v1 import slidesam_pb2 as pb


def polygons_from_pb(polygons: Sequence[pb.Polygon]) -> shapely.MultiPolygon:
    """Wire polygons -> a shapely MultiPolygon in level-0 coordinates."""
    parts = [shapely.Polygon(_ring_from_pb(p.exterior), [_ring_from_pb(h) for h in p.holes]) for p in polygons]
    return shapely.MultiPolygon(parts)


def polygons_to_pb(geometry: shapely.Geometry) -> list[pb.Polygon]:
    """A polygonal shapely geometry (level-0) -> wire polygons, holes kept; validated by `outline_geometry`
    (ValueError when it is not a valid polygon with area)."""
    return [
        pb.Polygon(exterior=_ring_to_pb(part.exterior), holes=[_ring_to_pb(hole) for hole in part.interiors])
        for part in outline_geometry(geometry).geoms
    ]


def outline_geometry(geometry: shapely.Geometry) -> shapely.MultiPolygon:
    """An outline prompt checked as the server will check it: polygonal (Polygon or MultiPolygon, or a
    collection of them), non-empty, finite, valid (no self-intersection) and with area. ValueError saying
    what is wrong otherwise."""
    if not isinstance(geometry, shapely.Geometry):
        raise ValueError(f"an outline must be a shapely Polygon or MultiPolygon, got {type(geometry).__name__}")
    if geometry.is_empty:
        raise ValueError("the outline is empty; it needs at least one polygon with area")
    if type(geometry) is shapely.GeometryCollection:
        kinds = sorted({part.geom_type for part in geometry.geoms if not part.is_empty})
        if set(kinds) - {"Polygon", "MultiPolygon"}:
            raise ValueError(f"an outline must be polygonal, got a collection of {', '.join(kinds)}")
        geometry = shapely.MultiPolygon([p for part in geometry.geoms for p in _polygons(part)])
    if not isinstance(geometry, (shapely.Polygon, shapely.MultiPolygon)):
        raise ValueError(f"an outline must be a polygon, got a {geometry.geom_type} (a point or a line has no inside to refine)")
    if not np.isfinite(shapely.get_coordinates(geometry)).all():
        raise ValueError("the outline's coordinates must be finite numbers")
    if not geometry.is_valid:
        raise ValueError(f"the outline is not a valid polygon ({shapely.is_valid_reason(geometry)}); "
                         "fix or redraw it (e.g. remove the self-intersection)")
    if not geometry.area > 0:
        raise ValueError("the outline has no area")
    return shapely.MultiPolygon(_polygons(geometry))


def _polygons(geometry: shapely.Geometry) -> list[shapely.Polygon]:
    if isinstance(geometry, shapely.Polygon):
        return [] if geometry.is_empty else [geometry]
    return [part for part in geometry.geoms if not part.is_empty]


def _ring_from_pb(ring: pb.Ring) -> np.ndarray:
    return np.asarray(ring.xy, dtype=np.float64).reshape(-1, 2)


def _ring_to_pb(ring: shapely.LinearRing) -> pb.Ring:
    coordinates = shapely.get_coordinates(ring)
    return pb.Ring(xy=coordinates[:-1].ravel().tolist())  # the wire's rings do not repeat the first vertex
