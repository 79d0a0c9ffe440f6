"""The client's side of the large-object contract: window mode and grid alignment on the field of view,
outlines as wire polygons (checked before anything is sent), the resolution the model saw in a result.

The last tests run an outline through a real loopback server (MobileSAM); they need the server side of
SetOutline / SegmentRequest.outline."""

from __future__ import annotations

import math
import warnings

import pytest
import shapely

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.qupath_bridge.fov import FovSettings
from slidesam.qupath_bridge.wire_geometry import outline_geometry, polygons_from_pb, polygons_to_pb
from slidesam.qupath_bridge.wire_requests import FieldOfView, SlideImage
from slidesam.qupath_bridge.wire_results import ModelResolution, ObjectResult

with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # shapely warns when it builds a ring with NaN
    NAN_POLYGON = shapely.Polygon([(0, 0), (math.nan, 0), (5, 5)])
DONUT = shapely.box(100, 100, 900, 700).difference(shapely.box(300, 300, 500, 500))
ISLAND = shapely.Polygon([(1000, 1000), (1400, 1000), (1200, 1300)])


def test_field_of_view_sends_window_mode_and_grid_alignment():
    image = SlideImage("cases/a.svs")
    default = FieldOfView(image, 0, 0, 4000, 4000, magnification=10).to_pb()
    assert default.windows == pb.WINDOW_MODE_UNSPECIFIED and not default.align_to_grid
    multi = FieldOfView(image, 0, 0, 4000, 4000, magnification=10, windows="multi").to_pb()
    single = FieldOfView(image, 0, 0, 4000, 4000, windows="single", align_to_grid=True).to_pb()
    assert multi.windows == pb.WINDOW_MODE_MULTI
    assert single.windows == pb.WINDOW_MODE_SINGLE and single.align_to_grid
    assert pb.FieldOfView.FromString(single.SerializeToString()) == single
    with pytest.raises(ValueError, match="unknown window mode 'tiles'.*'auto', 'multi', 'single'"):
        FieldOfView(image, 0, 0, 10, 10, windows="tiles")


def test_fov_settings_keep_the_hash_of_earlier_results():
    """Defaults are left out of the settings hash, so results synced before window modes existed stay unchanged."""
    assert FovSettings(magnification=10).to_json() == {"margin": 0.25, "min_size": 2048.0, "magnification": 10}
    assert FovSettings(windows="single", align_to_grid=True).to_json()["windows"] == "single"
    with pytest.raises(ValueError, match="unknown window mode"):
        FovSettings(windows="many")


@pytest.mark.parametrize("geometry", [DONUT, shapely.MultiPolygon([DONUT, ISLAND]), shapely.GeometryCollection([DONUT, ISLAND])],
                         ids=["polygon-with-hole", "multipolygon", "collection-of-polygons"])
def test_outline_to_wire_and_back(geometry):
    wire = polygons_to_pb(geometry)
    assert all(len(p.exterior.xy) % 2 == 0 for p in wire)
    # rings travel without the repeated closing vertex, as the server writes them
    assert len(wire[0].exterior.xy) == 2 * (len(DONUT.exterior.coords) - 1)
    assert len(wire[0].holes) == 1
    back = polygons_from_pb(wire)
    assert back.equals(shapely.MultiPolygon(list(getattr(geometry, "geoms", [geometry]))))
    assert back.area == pytest.approx(geometry.area)


@pytest.mark.parametrize("geometry, message", [
    (shapely.Polygon(), "empty"),
    (shapely.Point(5, 5), "must be a polygon, got a Point"),
    (shapely.MultiPoint([(5, 5), (6, 6)]), "must be a polygon, got a MultiPoint"),
    (shapely.LineString([(0, 0), (10, 10)]), "must be a polygon, got a LineString"),
    (shapely.GeometryCollection([DONUT, shapely.Point(1, 1)]), "polygonal, got a collection of Point, Polygon"),
    (shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)]), r"not a valid polygon \(Self-intersection"),
    (shapely.MultiPolygon([shapely.box(0, 0, 10, 10), shapely.box(5, 5, 15, 15)]), "not a valid polygon"),
    (NAN_POLYGON, "finite"),
    (shapely.Polygon([(0, 0), (10, 0), (20, 0)]), "not a valid polygon|no area"),
    ("POLYGON ((0 0, 1 0, 1 1, 0 0))", "shapely Polygon or MultiPolygon, got str"),
], ids=["empty", "point", "points", "line", "mixed-collection", "bowtie", "overlapping-parts", "nan", "flat", "text"])
def test_bad_outlines_are_refused_before_sending(geometry, message):
    with pytest.raises(ValueError, match=message):
        polygons_to_pb(geometry)
    with pytest.raises(ValueError, match=message):
        outline_geometry(geometry)


def _result(**resolution) -> ObjectResult:
    return ObjectResult(pb.SegmentationResult(
        object_id="o", polygons=polygons_to_pb(DONUT), score=0.9, model_id="mobile_sam@6dbb90523a35",
        timings=pb.Timings(windows_encoded=3, windows_from_store=2),
        resolution=pb.ModelResolution(**resolution) if resolution else None,
        outline=polygons_to_pb(ISLAND),
    ))


def test_result_reports_the_resolution_the_model_saw():
    result = _result(requested_downsample=2.0, requested_mpp=0.5, encoder_downsample=5.796, encoder_mpp=1.449,
                     downsampled=True, windows=1, windows_decoded=1)
    assert result.downsampled and (result.windows_encoded, result.windows_from_store) == (3, 2)
    assert result.resolution == ModelResolution(2.0, 0.5, 5.796, 1.449, True, 1, 1, None)
    assert result.resolution.factor == pytest.approx(2.898)
    assert result.outline.equals(shapely.MultiPolygon([ISLAND]))
    said = result.resolution.describe_downsampling(magnification=20)
    assert said.startswith("the model saw x6.9 (1.45 µm/px), not the x20 asked for (2.9 times coarser)") and "--windows multi" in said
    assert "1.45 µm/px, not the 0.5 µm/px asked for" in result.resolution.describe_downsampling()
    assert result.resolution.to_json() == {
        "requested_downsample": 2.0, "requested_mpp": 0.5, "encoder_downsample": 5.796, "encoder_mpp": 1.449,
        "downsampled": True, "windows": 1,
    }
    unknown_mpp = ModelResolution.from_pb(pb.ModelResolution(requested_downsample=1, encoder_downsample=4, downsampled=True))
    assert unknown_mpp.requested_mpp is None and unknown_mpp.encoder_mpp is None
    assert "downsample 4, not the downsample 1 asked for" in unknown_mpp.describe_downsampling()
    multi = _result(requested_downsample=1, encoder_downsample=1, windows=6, windows_decoded=2, coarse_downsample=2.5)
    assert not multi.downsampled and multi.resolution.to_json()["coarse_downsample"] == 2.5


def test_a_server_that_does_not_report_the_resolution():
    result = _result()
    assert result.resolution is None and not result.downsampled


# ------------------------------------------------------------------------------------------------
# Through the real server (needs its side of the outline prompt)

SERVED = "bridge/served.svs"  # tests/qupath_bridge/conftest.py: object at (2000, 1500), radii 500 x 350


def _iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def test_an_outline_prompt_in_one_call(client, served_slide):
    truth = served_slide.object_geometry
    crude = truth.simplify(80).buffer(40)
    fov = FieldOfView(SlideImage(SERVED), 1250, 900, 1500, 1200, magnification=10)
    result = client.segment(fov, outline=crude)
    assert result.outline.equals_exact(shapely.MultiPolygon([outline_geometry(crude).geoms[0]]), 1e-6)
    assert _iou(result.geometry, truth) > _iou(crude, truth)
    assert result.resolution is not None and not result.downsampled
    assert result.resolution.requested_downsample == pytest.approx(4.0)
    with pytest.raises(ValueError, match="Self-intersection"):
        client.segment(fov, outline=shapely.Polygon([(1300, 1000), (2600, 2000), (2600, 1000), (1300, 2000)]))


def test_an_outline_step_is_replayed_after_a_reconnect(client, served_slide):
    truth = served_slide.object_geometry
    crude = truth.buffer(-60).simplify(60)
    fov = FieldOfView(SlideImage(SERVED), 1250, 900, 1500, 1200, magnification=10)
    with client.open_object(fov) as session:
        first = session.outline(crude)
        assert [r.WhichOneof("action") for r in session.history] == ["outline"]
        session._drop_stream()  # as a network blip would: the next step reconnects and replays the outline
        clicked = session.click(2000, 1500)
        assert session.reconnects == 1
        undone = session.undo()
    assert undone.geometry.equals_exact(first.geometry, 1e-6)
    assert _iou(first.geometry, truth) > _iou(crude, truth) and clicked.geometry.area > 0
