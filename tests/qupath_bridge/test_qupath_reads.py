"""QuPath reads everything slidesam writes: every GeoJSON file (`segment`, `sync` and `preannotate` on a GeoJSON
project, `export`, the demo) through QuPath's own `PathIO.readObjects`, and the `.qpproj` the bridge writes
(`import`) through `ProjectIO.loadProject`, all in one QuPath JVM. Each object must come back as written: type,
id, class and class colour, name, holes and parts, coordinates, point order, measurements, description and
metadata, locked flag."""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely
from shapely.geometry import shape
from bridge_helpers import box, features, geojson_project, points, write_prompts
from support.qupath import read_with_qupath

from slidesam.lab.demo_object import click_on_epithelium, result_feature
from slidesam.qupath_bridge import cli
from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.geojson import DESCRIPTION_KEY, annotation_to_feature, feature_collection, write_geojson
from slidesam.qupath_bridge.project import Annotation
from slidesam.qupath_bridge.project_backends import open_project
from slidesam.qupath_bridge.qupath_values import qupath_class_colour, same_geometry

pytestmark = pytest.mark.qupath
CENTRE = (2000.0, 1500.0)  # the served slide's object
X10 = ("--magnification", "10", "--align-to-grid")  # the whole served slide in one grid window: one encode for all
TUMOUR = Annotation(
    "0b7e1f00-5d8e-4c1e-9f3a-1a2b3c4d5e6f",
    shapely.MultiPolygon([shapely.box(1000, 1000, 1800.004, 1600).difference(shapely.box(1200, 1200, 1400, 1400.333)),
                          shapely.box(2000, 2000, 2300, 2200)]),
    "Tumor", "two parts, one hole", description="by hand", measurements={"ratio": 1 / 3}, locked=True,
)
CLASSES = ("SAM positive", "SAM negative", "Lesion: Positive")  # none whose parent the files use


def _cli(*args: str) -> None:
    try:
        cli.main(list(args))
    except SystemExit as exit_:
        assert exit_.code in (0, None), f"slidesam {' '.join(args)} exited with {exit_.code}"


@pytest.fixture(scope="module")
def written(qupath_dir, server, served_slide, cmu_slide, slide_root, tmp_path_factory) -> dict[str, Path]:
    """Every kind of file slidesam writes, made by the real commands against the real server."""
    folder = tmp_path_factory.mktemp("written")
    slide_map = ("--server", server.address, "--slide-map", f"{slide_root.resolve()}=")
    files = {"segment": folder / "segment.geojson"}
    _cli("segment", "--server", server.address, "--slide", "bridge/served.svs", "--region", "0,0,4096,3072", *X10,
         "--click", f"{CENTRE[0]},{CENTRE[1]}", "--out", str(files["segment"]))

    synced = geojson_project(folder / "synced", [served_slide.path])
    files["sync"] = write_prompts(synced, "served.svs", [
        points("lesion 1", "SAM positive", (2100.0, 1500.0), CENTRE),  # click order: right, then centre
        points("lesion 1", "SAM negative", (2600.0, 1500.0)),
        box("lesion 2", 1400, 1100, 1200, 800),
    ])
    _cli("sync", str(synced), *slide_map, *X10, "--no-progress")
    project = open_project(synced)
    project.add_annotation("served.svs", TUMOUR)
    project.save()

    pre = geojson_project(folder / "pre", [served_slide.path])
    write_prompts(folder, "prompts", [points("lesion 1", "SAM positive", CENTRE)])
    _cli("preannotate", str(pre), *slide_map, *X10, "--prompts", "geojson", str(folder / "prompts.geojson"), "--no-progress")
    files["preannotate"] = pre / "served.svs.geojson"

    from paquo.projects import QuPathProject

    with QuPathProject(folder / "qupath", mode="x") as qupath:
        qupath.add_image(served_slide.path)
    _cli("import", str(folder / "qupath"), "--geojson", str(synced), "--no-progress")
    files["qpproj"] = folder / "qupath" / "project.qpproj"
    _cli("export", str(folder / "qupath"), "--geojson", str(folder / "exported"), "--no-progress")
    files["export"] = folder / "exported" / "served.svs.geojson"

    with SlidesamClient(server.address) as client:
        final = click_on_epithelium(client, report=lambda line: None)
    files["demo"] = folder / "CMU-1-Small-Region.geojson"
    write_geojson(files["demo"], feature_collection([result_feature(final)]))
    return files


@pytest.fixture(scope="module")
def read(qupath_dir, written) -> dict[str, dict]:
    """What QuPath made of each file (one JVM for all), by kind; and of the class names (`class:NAME`)."""
    answer = read_with_qupath(qupath_dir, *(f"class:{name}" for name in CLASSES), *written.values())
    return {**{kind: answer[str(path)] for kind, path in written.items()}, **{k: v for k, v in answer.items() if k.startswith("class:")}}


def _assert_read_as_written(feature: dict, read: dict) -> None:
    properties = feature["properties"]
    where = f"{properties.get('name')!r} ({feature['id']})"
    geometry = shape(feature["geometry"])
    assert read["type"] == "PathAnnotationObject" and read["id"] == feature["id"], where
    assert (read["pathClass"], read["classColor"]) == (properties["classification"]["name"], properties["classification"]["color"]), where
    assert read["name"] == properties.get("name") and read["locked"] == properties.get("isLocked", False), where
    assert read["measurements"] == properties.get("measurements", {}), where  # exactly: slidesam writes float32 values
    metadata = dict(properties.get("metadata", {}))
    assert read["description"] == metadata.get(DESCRIPTION_KEY) and read["metadata"] == metadata, where
    if read["points"] is not None:
        assert [tuple(p) for p in read["points"]] == [tuple(c) for c in shapely.get_coordinates(geometry).tolist()], where
    else:
        assert same_geometry(shapely.from_wkt(read["wkt"]), geometry), where  # on QuPath's grid: exactly
        polygons = list(getattr(geometry, "geoms", [geometry]))
        assert (read["parts"], read["holes"]) == (len(polygons), sum(len(p.interiors) for p in polygons)), where
    assert read["children"] == []


def _assert_file_read_as_written(path: Path, read: dict) -> None:
    assert "error" not in read, read.get("error")
    written = features(path)
    assert [o["id"] for o in read["objects"]] == [f["id"] for f in written]
    for feature, qupath_object in zip(written, read["objects"]):
        _assert_read_as_written(feature, qupath_object)


@pytest.mark.parametrize("kind", ["segment", "sync", "preannotate", "export", "demo"])
def test_qupath_reads_the_geojson_as_written(kind, written, read):
    _assert_file_read_as_written(written[kind], read[kind])
    assert any(f["properties"].get("name", "").startswith("SAM") for f in features(written[kind]))


def test_holes_parts_and_click_order_survive(written, read):
    objects = {o["name"]: o for o in read["sync"]["objects"]}
    assert (objects["two parts, one hole"]["parts"], objects["two parts, one hole"]["holes"]) == (2, 1)
    assert objects["two parts, one hole"]["locked"] and objects["two parts, one hole"]["description"] == "by hand"
    (clicks,) = [o["points"] for o in read["sync"]["objects"] if o["pathClass"] == "SAM positive"]
    assert clicks == [[2100.0, 1500.0], [*CENTRE]]


def test_qupath_opens_the_project_the_bridge_wrote(written, read):
    project = read["qpproj"]
    assert "error" not in project, project.get("error")
    bridge = open_project(written["qpproj"])
    assert sorted((c["name"], tuple(c["color"])) for c in project["pathClasses"]) == sorted((c.name, c.color) for c in bridge.path_classes())
    (image,) = project["images"]
    assert image["name"] == "served.svs" and image["uris"] == [Path(bridge.images()[0].path).as_uri()]
    imported = open_project(written["sync"].parent).annotations("served.svs")
    assert [o["id"] for o in image["objects"]] == [a.id for a in imported]
    colours = {c.name: c.color for c in bridge.path_classes()}
    for annotation, qupath_object in zip(imported, image["objects"]):
        _assert_read_as_written(annotation_to_feature(annotation, color=colours[annotation.path_class]), qupath_object)


def test_classes_slidesam_creates_get_qupaths_colours(read):
    for name in CLASSES:
        assert tuple(read[f"class:{name}"]["color"]) == qupath_class_colour(name), name
