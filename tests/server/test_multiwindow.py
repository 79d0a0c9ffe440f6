"""Objects larger than one encoder window: coarse to fine over grid windows at the resolution asked for.

In-process engine with the real MobileSAM on the generated slide: its known object is 1400 x 900 level-0
pixels, so at x40 (level 0) it crosses several 1024-px grid windows.
"""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from slidesam.server.engine.cache import EmbeddingCache
from slidesam.server.engine.engine import Engine, EngineConfig
from slidesam.server.engine.prompts import Click, Outline, PolygonRequest, RegionRequest, SlideRef
from slidesam.server.engine.session import EngineObject
from slidesam.server.errors import InvalidArgument, ResourceExhausted
from slidesam.server.engine.geometry import geometry_iou
from slidesam.server.slides.regions import Rect, Resolution
from slidesam.server.slides.store import SlideStore
from slidesam.server.uploads.store import UploadStore
from tests.conftest import SLIDE_ID

POLYGONS = PolygonRequest(max_vertices=100_000)
SEAM_DISTANCE = 2.0  # level-0 px: a polygon edge farther than this from the true boundary is not on it


@pytest.fixture(scope="module")
def engine(model_registry, slide_root, synthetic_slide) -> Engine:
    return Engine(model_registry, SlideStore(slide_root), UploadStore(), EmbeddingCache(512 * 2**20))


def object_fov(slide, margin: float = 200.0, **options) -> RegionRequest:
    minx, miny, maxx, maxy = slide.object_geometry.bounds
    region = Rect(minx - margin, miny - margin, maxx - minx + 2 * margin, maxy - miny + 2 * margin)
    return RegionRequest(SlideRef(SLIDE_ID), region, Resolution("magnification", 40), **options)


def centre(slide) -> Click:
    point = slide.object_geometry.representative_point()
    return Click(point.x, point.y, True)


@pytest.fixture(scope="module")
def first_click(engine, synthetic_slide):
    session, opened = EngineObject.open(engine, object_fov(synthetic_slide), "mobile_sam", POLYGONS)
    return session, opened, session.add_clicks([centre(synthetic_slide)])


def test_the_object_comes_back_at_the_resolution_asked_for(first_click, synthetic_slide):
    session, opened, outcome = first_click
    assert opened.resolution.coarse_downsample > 1.5, "the field of view is larger than one window at x40"
    resolution = outcome.resolution
    assert resolution.requested_downsample == pytest.approx(1.0)
    assert resolution.encoder_downsample == pytest.approx(1.0) and not resolution.downsampled
    assert resolution.windows >= 4, f"the object crosses tile borders: {resolution.windows - 1} fine windows"
    assert outcome.timings.windows_encoded == resolution.windows - 1 and outcome.timings.encode_ms > 0
    iou = geometry_iou(outcome.step.prediction.geometry, synthetic_slide.object_geometry)
    assert iou >= 0.97, f"IoU with the known object in level-0 space: {iou:.4f}"


def test_no_polygon_edge_runs_along_a_tile_border(engine, first_click, synthetic_slide):
    session, _, outcome = first_click
    geometry = outcome.step.prediction.geometry
    truth = synthetic_slide.object_geometry.exterior
    borders_x, borders_y = set(), set()
    for index in session.view.grid.overlapping(session.view.region):
        window = session.view.grid.window(index)
        borders_x.update((window.x, window.right))
        borders_y.update((window.y, window.bottom))
    seams = []
    for ring in shapely.get_rings(shapely.get_parts(geometry)):
        coordinates = shapely.get_coordinates(ring)
        for (x0, y0), (x1, y1) in zip(coordinates[:-1], coordinates[1:]):
            segment = shapely.LineString([(x0, y0), (x1, y1)])
            along_x = any(abs(x0 - b) < 0.75 and abs(x1 - b) < 0.75 for b in borders_x) and abs(y1 - y0) > 3
            along_y = any(abs(y0 - b) < 0.75 and abs(y1 - b) < 0.75 for b in borders_y) and abs(x1 - x0) > 3
            if (along_x or along_y) and segment.hausdorff_distance(truth) > SEAM_DISTANCE:
                seams.append(((x0, y0), (x1, y1)))
    assert not seams, f"polygon edges along tile borders, off the object's boundary: {seams[:5]}"


def test_single_window_mode_says_it_was_downsampled(engine, synthetic_slide):
    session, opened = EngineObject.open(engine, object_fov(synthetic_slide, windows="single"), "mobile_sam", POLYGONS)
    height, width = session.view.shape
    assert opened.resolution.downsampled
    assert opened.resolution.encoder_downsample == pytest.approx(max(height, width) / 1024)
    assert opened.resolution.windows == 1


def test_a_click_re_decodes_only_the_windows_it_changes(engine, synthetic_slide):
    session, _ = EngineObject.open(engine, object_fov(synthetic_slide), "mobile_sam", POLYGONS)
    first = session.add_clicks([centre(synthetic_slide)])
    region = session.view.region
    second = session.add_clicks([Click(region.x + 20, region.y + 20, False)])  # background, far from the object
    assert second.timings.windows_encoded == 0, "every window was encoded (and cached) by the first click"
    assert second.resolution.windows_decoded < second.resolution.windows
    iou = geometry_iou(second.step.prediction.geometry, first.step.prediction.geometry)
    assert iou > 0.99, f"a click on the background barely changes the object: IoU {iou:.4f}"
    undone = session.undo()
    assert undone.step.prediction.geometry.equals(first.step.prediction.geometry)
    assert session.redo().step.prediction.geometry.equals(second.step.prediction.geometry)


def test_replaying_the_clicks_gives_the_same_polygon(engine, first_click, synthetic_slide):
    session, _ = EngineObject.open(engine, object_fov(synthetic_slide), "mobile_sam", POLYGONS)
    replayed = session.add_clicks([centre(synthetic_slide)])
    assert replayed.timings.windows_encoded == 0, "the fine windows come from the embedding cache"
    assert replayed.step.prediction.geometry.equals(first_click[2].step.prediction.geometry)


def test_an_outline_prompt_refines_a_crude_outline(engine, synthetic_slide):
    truth = synthetic_slide.object_geometry
    crude = truth.simplify(150).buffer(60, join_style="mitre").simplify(30)
    session, _ = EngineObject.open(engine, object_fov(synthetic_slide), "mobile_sam", POLYGONS)
    outcome = session.set_outline(Outline(shapely.MultiPolygon([crude])))
    before, after = geometry_iou(crude, truth), geometry_iou(outcome.step.prediction.geometry, truth)
    assert after > before + 0.02, f"IoU with the truth: crude outline {before:.4f}, refined {after:.4f}"
    assert outcome.step.outline is not None and not outcome.step.clicks


@pytest.mark.parametrize(
    "geometry, message",
    [
        (shapely.MultiPolygon([shapely.Polygon([(4500, 3000), (4900, 3300), (4900, 3000), (4500, 3300)])]), "not a valid polygon"),
        (shapely.MultiPolygon(), "at least one polygon"),
        (shapely.MultiPolygon([shapely.box(0, 0, 50, 50)]), "outside the field of view"),
    ],
    ids=["self-intersecting", "empty", "outside"],
)
def test_bad_outlines_are_refused_and_the_object_is_unchanged(engine, synthetic_slide, geometry, message):
    session, _ = EngineObject.open(engine, object_fov(synthetic_slide, windows="single"), "mobile_sam", POLYGONS)
    with pytest.raises(InvalidArgument, match=message):
        session.set_outline(Outline(geometry))
    assert session.current.prediction.geometry.is_empty and session.finish().step_index == 0


def test_a_field_of_view_beyond_the_object_limit_is_refused(model_registry, slide_root, synthetic_slide):
    small = Engine(model_registry, SlideStore(slide_root), UploadStore(), EmbeddingCache(2**20), EngineConfig(max_object_pixels=2048 * 2048))
    fov = RegionRequest(SlideRef(SLIDE_ID), Rect(0, 0, 4096, 4096), Resolution("magnification", 40))
    with pytest.raises(ResourceExhausted, match="more than this server segments as one object"):
        EngineObject.open(small, fov, "mobile_sam", POLYGONS)


def test_align_to_grid_serves_the_nearest_grid_window(engine, synthetic_slide):
    point = centre(synthetic_slide)
    fov = RegionRequest(SlideRef(SLIDE_ID), Rect(point.x - 300, point.y - 200, 600, 400), Resolution("magnification", 40), align_to_grid=True)
    view = engine.resolve(fov, "mobile_sam")
    grid = engine.grid(view.source, 1.0, 1024)
    assert view.grid_window is not None and view.region == grid.window(view.grid_window.index)
    distances = [np.hypot(grid.window(i).x + 512 - point.x, grid.window(i).y + 512 - point.y) for i in grid.indices()]
    assert np.hypot(view.region.x + 512 - point.x, view.region.y + 512 - point.y) == pytest.approx(min(distances))


def test_a_step_needing_more_encodes_than_allowed_is_refused_before_encoding(model_registry, slide_root, synthetic_slide):
    capped = Engine(model_registry, SlideStore(slide_root), UploadStore(), EmbeddingCache(64 * 2**20), EngineConfig(max_step_encodes=2))
    session, _ = EngineObject.open(capped, object_fov(synthetic_slide), "mobile_sam", POLYGONS)
    cached = capped.cache.stats().entries
    with pytest.raises(ResourceExhausted, match="precompute the slide"):
        session.add_clicks([centre(synthetic_slide)])
    assert capped.cache.stats().entries == cached, "refused before any window was encoded"
    assert session.current.prediction.geometry.is_empty and not session.finish().can_undo
