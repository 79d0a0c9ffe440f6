"""Tests for slidesam.server.engine.geometry: mask -> level-0 polygons and back."""

import cv2
import numpy as np
import pytest
import shapely

from slidesam.server.engine import geometry
from slidesam.server.engine.geometry import (
    PolygonLimits,
    RegionTransform,
    count_vertices,
    geometry_iou,
    geometry_to_mask,
    mask_to_geometry,
)

IDENTITY = RegionTransform(0.0, 0.0, 1.0, 1.0)
OFFSET_SCALED = RegionTransform(10000.5, 20000.0, 4.0, 4.0)


def blank(height: int = 160, width: int = 200) -> np.ndarray:
    return np.zeros((height, width), dtype=np.uint8)


def pixel_iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return float((a & b).sum() / (a | b).sum())


def fragmented(seed: int = 0, size: int = 256) -> np.ndarray:
    """Random blobs: seeded noise, blurred, thresholded."""
    noise = np.random.default_rng(seed).random((size, size)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.5)
    return blurred > np.percentile(blurred, 70)


@pytest.fixture
def ring_island_blob() -> np.ndarray:
    """A ring (disc with a hole), an island inside the hole, and a separate rectangle."""
    mask = blank()
    cv2.circle(mask, (70, 80), 60, 1, -1)
    cv2.circle(mask, (70, 80), 35, 0, -1)
    cv2.circle(mask, (70, 80), 12, 1, -1)
    cv2.rectangle(mask, (150, 20), (190, 140), 1, -1)
    return mask


@pytest.mark.parametrize("transform", [IDENTITY, OFFSET_SCALED], ids=["identity", "offset-scaled"])
def test_holes_islands_and_parts_round_trip(ring_island_blob: np.ndarray, transform: RegionTransform) -> None:
    result = mask_to_geometry(ring_island_blob, transform)

    assert isinstance(result, shapely.MultiPolygon)
    assert result.is_valid
    assert len(result.geoms) == 3
    assert sorted(len(part.interiors) for part in result.geoms) == [0, 0, 1]
    ring = next(part for part in result.geoms if part.interiors)
    island = min(result.geoms, key=lambda part: part.area)
    assert shapely.Polygon(ring.interiors[0]).contains(island)

    iou = pixel_iou(geometry_to_mask(result, transform, ring_island_blob.shape), ring_island_blob)
    assert iou >= 0.99, f"round-trip pixel IoU {iou:.5f}"


def test_rectangle_maps_to_pixel_centre_bounds() -> None:
    mask = blank()
    mask[5:15, 10:30] = 1  # rows 5..14, cols 10..29
    t = OFFSET_SCALED

    result = mask_to_geometry(mask, t)

    assert len(result.geoms) == 1
    assert count_vertices(result) == 4
    expected = (t.x0 + 10.5 * t.sx, t.y0 + 5.5 * t.sy, t.x0 + 29.5 * t.sx, t.y0 + 14.5 * t.sy)
    assert result.bounds == pytest.approx(expected)
    assert result.area == pytest.approx(19 * t.sx * 9 * t.sy)
    assert np.array_equal(geometry_to_mask(result, t, mask.shape), mask.astype(bool))


def test_transform_round_trip_and_validation() -> None:
    uv = np.array([[0.0, 0.0], [0.5, 0.5], [123.25, 7.75]])
    xy = OFFSET_SCALED.to_level0(uv)
    assert xy[1] == pytest.approx([10000.5 + 2.0, 20000.0 + 2.0])
    assert OFFSET_SCALED.to_region(xy) == pytest.approx(uv)
    with pytest.raises(ValueError):
        RegionTransform(0.0, 0.0, 0.0, 1.0)


def test_empty_mask_gives_empty_multipolygon() -> None:
    result = mask_to_geometry(blank(), OFFSET_SCALED)
    assert isinstance(result, shapely.MultiPolygon)
    assert result.is_empty
    assert not geometry_to_mask(result, OFFSET_SCALED, (160, 200)).any()


def test_full_mask_gives_one_rectangle() -> None:
    mask = np.ones((40, 60), dtype=bool)
    result = mask_to_geometry(mask, IDENTITY)
    assert len(result.geoms) == 1
    assert count_vertices(result) == 4
    assert result.bounds == pytest.approx((0.5, 0.5, 59.5, 39.5))
    assert geometry_to_mask(result, IDENTITY, mask.shape).all()


def test_degenerate_parts_are_dropped_without_error() -> None:
    mask = blank()
    mask[50:80, 50:80] = 1
    mask[10, 10] = 1  # single pixel
    mask[20, 20:60] = 1  # horizontal line
    cv2.line(mask, (100, 10), (140, 50), 1, 1)  # diagonal line
    mask[100:103, 120] = 1  # vertical stub

    result = mask_to_geometry(mask, OFFSET_SCALED)

    assert result.is_valid
    assert len(result.geoms) == 1
    assert result.area == pytest.approx(29 * 29 * 16)


def test_diagonal_touching_pixels_are_repaired(monkeypatch: pytest.MonkeyPatch) -> None:
    mask = blank()
    mask[40:100, 40:100] = 1
    checker = np.indices((20, 20)).sum(axis=0) % 2 == 0
    mask[100:120, 60:80] = checker  # diagonal pinches and spurs hanging off the block
    mask[60:80, 60:80] = checker  # a hole full of diagonally touching pixels
    calls = []
    repair = geometry._repaired
    monkeypatch.setattr(geometry, "_repaired", lambda *a, **k: calls.append(a) or repair(*a, **k))

    result = mask_to_geometry(mask, OFFSET_SCALED)

    assert calls, "expected the repair path to run"
    assert isinstance(result, shapely.MultiPolygon)
    assert result.is_valid
    assert not result.is_empty
    iou = pixel_iou(geometry_to_mask(result, OFFSET_SCALED, mask.shape), mask)
    assert iou >= 0.9, f"round-trip pixel IoU {iou:.5f}"


def test_valid_masks_skip_the_repair(ring_island_blob: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(geometry, "_repaired", lambda *a, **k: pytest.fail("the repair ran needlessly"))
    assert mask_to_geometry(ring_island_blob, OFFSET_SCALED).is_valid


def test_tolerance_simplifies_within_distance(ring_island_blob: np.ndarray) -> None:
    raw = mask_to_geometry(ring_island_blob, OFFSET_SCALED)
    simplified = mask_to_geometry(ring_island_blob, OFFSET_SCALED, PolygonLimits(tolerance_level0=8.0))

    assert simplified.is_valid
    assert count_vertices(simplified) < count_vertices(raw) / 2
    assert shapely.hausdorff_distance(raw, simplified) <= 2 * 8.0  # DP stays near its tolerance
    assert len(simplified.geoms) == 3


@pytest.mark.parametrize("budget", [2000, 300, 60, 10, 3])
def test_vertex_budget_on_fragmented_mask(budget: int) -> None:
    mask = fragmented()
    raw = mask_to_geometry(mask, OFFSET_SCALED)
    assert count_vertices(raw) > 2000, "test mask should need simplification"

    result = mask_to_geometry(mask, OFFSET_SCALED, PolygonLimits(tolerance_level0=1.0, max_vertices=budget))

    assert isinstance(result, shapely.MultiPolygon)
    assert result.is_valid
    assert count_vertices(result) <= budget
    if budget >= 2000:  # reachable by simplification alone (the rings need at least 3 vertices each)
        iou = geometry_iou(raw, result)
        assert iou >= 0.85, f"IoU against the unsimplified geometry {iou:.3f}"


@pytest.mark.parametrize("budget", [60, 10, 3])
def test_a_budget_too_small_for_the_rings_drops_rings_before_simplifying(budget: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simplification keeps every ring, so simplifying more rings than the budget can hold is futile work
    (a fuzzed request once spent 18 s of the model thread on it): none of it is done."""
    mask = fragmented()
    assert 3 * len(shapely.get_rings(mask_to_geometry(mask, OFFSET_SCALED).geoms)) > 60
    simplified_rings = []
    simplify = shapely.simplify

    def counting(geometry, *args, **kwargs):
        simplified_rings.append(len(shapely.get_rings(shapely.get_parts(geometry))))
        return simplify(geometry, *args, **kwargs)

    monkeypatch.setattr(shapely, "simplify", counting)
    result = mask_to_geometry(mask, OFFSET_SCALED, PolygonLimits(tolerance_level0=1.0, max_vertices=budget))
    assert count_vertices(result) <= budget and result.is_valid
    assert simplified_rings and max(simplified_rings) <= max(1, budget // 3)


def test_vertex_budget_fills_holes_before_dropping_the_part() -> None:
    mask = blank()
    mask[20:140, 20:180] = 1
    for col in range(40, 160, 20):
        mask[60:66, col : col + 6] = 0  # six small square holes
    raw = mask_to_geometry(mask, IDENTITY)
    assert len(raw.geoms[0].interiors) == 6

    result = mask_to_geometry(mask, IDENTITY, PolygonLimits(max_vertices=4))

    assert result.is_valid
    assert len(result.geoms) == 1
    assert count_vertices(result) == 4
    assert not result.geoms[0].interiors


def test_min_area_drops_speck_and_fills_small_hole() -> None:
    mask = blank()
    mask[20:120, 20:120] = 1
    mask[60:63, 60:63] = 0  # 3x3 hole: hole ring area 14 region px²
    mask[140:143, 150:153] = 1  # 3x3 speck: area 4 region px²
    t = OFFSET_SCALED

    kept = mask_to_geometry(mask, t)
    assert len(kept.geoms) == 2
    assert sum(len(part.interiors) for part in kept.geoms) == 1

    result = mask_to_geometry(mask, t, PolygonLimits(min_area_level0=20 * t.sx * t.sy))

    assert result.is_valid
    assert len(result.geoms) == 1
    assert not result.geoms[0].interiors
    assert result.area == pytest.approx(99 * 99 * t.sx * t.sy)


def test_geometry_iou() -> None:
    square = shapely.box(0, 0, 2, 2)
    assert geometry_iou(square, square) == pytest.approx(1.0)
    assert geometry_iou(square, shapely.box(1, 0, 3, 2)) == pytest.approx(1 / 3)
    assert geometry_iou(square, shapely.box(5, 5, 6, 6)) == 0.0
    assert geometry_iou(square, shapely.MultiPolygon()) == 0.0
    assert geometry_iou(shapely.MultiPolygon(), shapely.MultiPolygon()) == 0.0
    both = shapely.MultiPolygon([square, shapely.box(5, 5, 7, 7)])
    assert geometry_iou(both, square) == pytest.approx(0.5)


def test_count_vertices() -> None:
    with_hole = shapely.Polygon([(0, 0), (10, 0), (10, 10), (0, 10)], [[(2, 2), (4, 2), (3, 4)]])
    assert count_vertices(shapely.box(0, 0, 1, 1)) == 4
    assert count_vertices(with_hole) == 7
    assert count_vertices(shapely.MultiPolygon([with_hole, shapely.box(20, 20, 21, 21)])) == 11
    assert count_vertices(shapely.MultiPolygon()) == 0



@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tracing_the_object_s_bounding_box_equals_tracing_the_whole_mask(seed: int) -> None:
    """The click path copies only the object's box off the device and traces it there: same polygons,
    to the last coordinate, also for objects touching the region's border."""
    import torch

    from slidesam.server.models.mask_crop import crop_to_object

    whole = np.zeros((300, 340), dtype=bool)
    whole[20:276, 60:316] = fragmented(seed)
    whole[0:12, 0:40] = True  # touches two borders
    limits = PolygonLimits(min_area_level0=0.0)
    crop = crop_to_object(torch.as_tensor(whole))
    assert crop.mask.size < whole.size and np.array_equal(crop.full(), whole)
    traced = mask_to_geometry(crop.mask, OFFSET_SCALED, limits, crop.origin)
    assert np.array_equal(shapely.get_coordinates(traced), shapely.get_coordinates(mask_to_geometry(whole, OFFSET_SCALED, limits)))


def test_an_empty_mask_crops_to_nothing_and_traces_no_polygon() -> None:
    import torch

    from slidesam.server.models.mask_crop import crop_to_object

    crop = crop_to_object(torch.zeros((64, 80), dtype=torch.bool))
    assert crop.empty and crop.shape == (64, 80) and not crop.full().any()
    assert mask_to_geometry(crop.mask, IDENTITY, origin=crop.origin).is_empty
