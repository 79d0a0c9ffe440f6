"""QuPath GeoJSON: objects shaped as QuPath writes them survive a read and a write unchanged."""

from __future__ import annotations

import json

import pytest
import shapely

from slidesam.qupath_bridge.geojson import (
    GeoJSONError,
    annotation_feature,
    annotation_to_feature,
    class_color,
    feature_to_annotation,
    is_annotation,
    parse_features,
)
from slidesam.qupath_bridge.geojson_project import GeoJSONProject
from slidesam.qupath_bridge.project import ImageEntry

SQUARE_WITH_HOLE = [
    [[100.0, 100.0], [900.0, 100.0], [900.0, 900.0], [100.0, 900.0], [100.0, 100.0]],
    [[300.0, 300.0], [300.0, 500.0], [500.0, 500.0], [500.0, 300.0], [300.0, 300.0]],
]
TRIANGLE = [[[1000.0, 1000.0], [1500.0, 1000.0], [1200.0, 1400.0], [1000.0, 1000.0]]]

# As QuPath v0.4+ writes them (PathObjectTypeAdapters): UUID ids, objectType, classification
# {name, color}, isLocked only when true, measurements as an object, metadata as a string map.
QUPATH_FEATURES = [
    {
        "type": "Feature",
        "id": "2f1c0f5e-9a4b-4d0a-8c43-6c3f5b2e1a01",
        "geometry": {"type": "Polygon", "coordinates": SQUARE_WITH_HOLE},
        "properties": {
            "objectType": "annotation",
            "name": "tumour with a hole",
            "classification": {"name": "Tumor", "color": [200, 0, 0]},
            "isLocked": True,
            "measurements": {"Area µm^2": 12345.5, "Num Detections": 3.0},
        },
    },
    {
        "type": "Feature",
        "id": "2f1c0f5e-9a4b-4d0a-8c43-6c3f5b2e1a02",
        "geometry": {"type": "MultiPolygon", "coordinates": [SQUARE_WITH_HOLE, TRIANGLE]},
        "properties": {
            "objectType": "annotation",
            "color": [10, 20, 30],
            "classification": {"name": "Stroma", "color": [150, 200, 150]},
            "metadata": {"ANNOTATION_DESCRIPTION": "two parts", "reviewer": "AB"},
        },
    },
    {
        "type": "Feature",
        "id": "2f1c0f5e-9a4b-4d0a-8c43-6c3f5b2e1a03",
        "geometry": {"type": "MultiPoint", "coordinates": [[120.0, 130.0], [140.5, 150.25]]},
        "properties": {"objectType": "annotation", "name": "lesion 1", "classification": {"name": "SAM positive", "color": [0, 200, 0]}},
    },
    {
        "type": "Feature",
        "id": "2f1c0f5e-9a4b-4d0a-8c43-6c3f5b2e1a04",
        "geometry": {"type": "Polygon", "coordinates": TRIANGLE},
        "properties": {"objectType": "detection", "classification": {"name": "Tumor", "color": [200, 0, 0]},
                       "measurements": {"Nucleus: Area": 40.0}},
    },
    {
        "type": "Feature",
        "id": "2f1c0f5e-9a4b-4d0a-8c43-6c3f5b2e1a05",
        "geometry": {"type": "LineString", "coordinates": [[0.0, 0.0], [50.0, 75.0]]},
        "properties": {"objectType": "annotation"},
    },
]


def _json(value):
    return json.loads(json.dumps(value))


@pytest.mark.parametrize("feature", [f for f in QUPATH_FEATURES if is_annotation(f)], ids=lambda f: f["geometry"]["type"])
def test_annotation_features_round_trip_exactly(feature):
    annotation = feature_to_annotation(feature, "test")
    color = class_color(feature["properties"].get("classification"))
    assert _json(annotation_to_feature(annotation, color=color, base=feature)) == feature


def test_holes_and_parts_are_kept():
    with_hole = feature_to_annotation(QUPATH_FEATURES[0], "test")
    two_parts = feature_to_annotation(QUPATH_FEATURES[1], "test")
    assert isinstance(with_hole.geometry, shapely.Polygon) and len(with_hole.geometry.interiors) == 1
    assert isinstance(two_parts.geometry, shapely.MultiPolygon) and len(two_parts.geometry.geoms) == 2
    assert with_hole.geometry.area == pytest.approx(800 * 800 - 200 * 200)
    assert with_hole.locked and with_hole.measurements == {"Area µm^2": 12345.5, "Num Detections": 3.0}
    assert two_parts.description == "two parts" and two_parts.path_class == "Stroma"


def test_a_project_file_keeps_what_it_does_not_change(tmp_path):
    """Renaming one annotation rewrites that one only; detections, other properties and order stay."""
    (tmp_path / "a.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": QUPATH_FEATURES}))
    project = GeoJSONProject.create(tmp_path, [ImageEntry("a", "a.svs", None, 2000, 2000)])
    (first, *_) = project.annotations("a")
    project.update_annotation("a", first.__class__(**{**first.__dict__, "name": "renamed"}))
    assert project.save() == [tmp_path / "a.geojson"]
    written = json.loads((tmp_path / "a.geojson").read_text())["features"]
    expected = _json(QUPATH_FEATURES)
    expected[0]["properties"]["name"] = "renamed"
    assert written == expected
    assert len(GeoJSONProject(tmp_path).annotations("a")) == 4  # the detection is not an annotation


def test_older_qupath_files_are_read():
    """Before v0.4: measurements as a list, packed colorRGB, object_type, derived classes as names."""
    legacy = {
        "type": "Feature",
        "id": "PathAnnotationObject",
        "geometry": {"type": "Polygon", "coordinates": TRIANGLE},
        "properties": {
            "object_type": "annotation",
            "classification": {"names": ["Tumor", "Positive"], "colorRGB": (200 << 16) | (10 << 8) | 20},
            "measurements": [{"name": "Area", "value": 5.0}, {"name": "Missing", "value": None}],
        },
    }
    assert is_annotation(legacy) and is_annotation({"type": "Feature", "properties": {}})
    annotation = feature_to_annotation(legacy, "old.geojson, feature 0")
    assert annotation.path_class == "Tumor: Positive"
    assert class_color(legacy["properties"]["classification"]) == (200, 10, 20)
    assert annotation.measurements == {"Area": 5.0}
    assert annotation.id == feature_to_annotation(legacy, "old.geojson, feature 0").id  # stable without a UUID
    assert not is_annotation({**legacy, "properties": {"objectType": "detection"}})


def test_annotation_feature_keeps_its_old_signature():
    feature = annotation_feature(shapely.box(0, 0, 10, 10), name="x", measurements={"a": 1}, feature_id="2f1c0f5e-9a4b-4d0a-8c43-6c3f5b2e1a09")
    assert feature["properties"] == {"objectType": "annotation", "name": "x", "classification": {"name": "Tumor", "color": [200, 0, 0]},
                                     "measurements": {"a": 1.0}}


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"type": "Topology"}', "not a GeoJSON FeatureCollection"),
    ('{"type": "FeatureCollection", "features": {}}', "must be a list"),
    ('{"type": "FeatureCollection", "features": [{"type": "Point"}]}', "feature 0: not a GeoJSON Feature"),
])
def test_malformed_collections_say_where(text, message):
    with pytest.raises(GeoJSONError, match=message):
        parse_features(text, "bad.geojson")


@pytest.mark.parametrize("change, message", [
    ({"geometry": None}, "malformed geometry"),
    ({"geometry": {"type": "Polygon", "coordinates": [[1, 2]]}}, "malformed geometry"),
    ({"properties": {"measurements": {"Area": "big"}}}, "not a number"),
    ({"properties": {"classification": {"color": [1, 2, 3]}}}, "no name"),
])
def test_malformed_features_say_where(change, message):
    feature = {**QUPATH_FEATURES[2], **change}
    with pytest.raises(GeoJSONError, match=message):
        feature_to_annotation(feature, "bad.geojson, feature 3")


def test_a_description_written_before_under_metadata_description_moves_to_qupaths_key():
    """QuPath keeps an annotation's description as its metadata entry ANNOTATION_DESCRIPTION; slidesam once
    wrote `metadata.description`, which QuPath imports as a plain metadata entry."""
    legacy = {**QUPATH_FEATURES[1], "properties": {**QUPATH_FEATURES[1]["properties"], "metadata": {"description": "two parts", "reviewer": "AB"}}}
    annotation = feature_to_annotation(legacy, "test")
    assert annotation.description == "two parts"
    assert annotation_to_feature(annotation, base=legacy)["properties"]["metadata"] == {"reviewer": "AB", "ANNOTATION_DESCRIPTION": "two parts"}
