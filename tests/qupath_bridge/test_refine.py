"""`slidesam refine`: crude outlines of a known object, refined in place through the real server (MobileSAM),
on both project backends; re-runs, edits, backups and bad annotations.

The tests that talk to the server need its side of the outline prompt (SegmentRequest.outline); the
others (provenance round trip, dry runs, bad input) run without one.
"""

from __future__ import annotations

import dataclasses
import json
import re
import uuid
from pathlib import Path

import numpy as np
import pytest
import shapely
import shapely.affinity
import shapely.geometry
from bridge_helpers import features, geojson_project, run_cli, server_answer, tree, write_prompts
from bridge_helpers import provenance as recorded

from slidesam.qupath_bridge.geojson import write_geojson
from slidesam.qupath_bridge.project_backends import open_project
from slidesam.qupath_bridge.refine import decide, refined_annotation, same_outline
from slidesam.qupath_bridge.results import provenance

BOWTIE = shapely.Polygon([(1500, 1100), (2500, 1900), (2500, 1100), (1500, 1900)])
LINE = shapely.LineString([(1500, 1500), (2500, 1500)])
POINT = shapely.Point(2000, 1500)


def crude_outlines(truth: shapely.Polygon) -> dict[str, shapely.Polygon]:
    """Outlines of the known object as drawn roughly at low zoom: loose, tight, a few clicks around it, off-centre."""
    return {
        "loose": truth.simplify(80).buffer(60, join_style="mitre"),
        "tight": truth.buffer(-60).simplify(60),
        "few vertices": shapely.Polygon(np.asarray(truth.exterior.coords)[::90]),
        "shifted": shapely.affinity.translate(truth.simplify(40), 70, -50),
    }


def iou(a: shapely.Geometry, b: shapely.Geometry) -> float:
    return a.intersection(b).area / a.union(b).area


def feature(name: str | None, geometry: shapely.Geometry, path_class: str = "Tumor", **properties) -> dict:
    """An annotation feature as QuPath exports it."""
    props = {"objectType": "annotation", **({"name": name} if name else {}),
             "classification": {"name": path_class, "color": [200, 0, 0]}, **properties}
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": shapely.geometry.mapping(geometry), "properties": props}


def by_name(path: Path) -> dict[str, dict]:
    return {f["properties"].get("name"): f for f in features(path)}


def backup_runs(project: Path) -> list[Path]:
    folder = project / ".slidesam" / "backups"
    return sorted(folder.iterdir()) if folder.exists() else []


def summary(out: str) -> dict[str, int]:
    match = re.search(r"(\d+) (?:refined|would refine), (\d+) already refined, (\d+) edited since refined.*?, (\d+) failed", out)
    assert match, out
    return dict(zip(("refined", "already", "edited", "failed"), map(int, match.groups())))


@pytest.fixture
def outlines(served_slide) -> dict[str, shapely.Polygon]:
    return crude_outlines(served_slide.object_geometry)


@pytest.fixture
def project(served_slide, outlines, tmp_path) -> Path:
    """A GeoJSON project: four crude Tumor outlines, a Tumor point, line and bow-tie, a Stroma polygon."""
    folder = geojson_project(tmp_path / "project", [served_slide.path])
    write_prompts(folder, "served.svs", [
        *(feature(name, geometry) for name, geometry in outlines.items()),
        feature("a point", POINT), feature("a line", LINE), feature("bow tie", BOWTIE),
        feature("stroma", shapely.box(100, 100, 600, 500), "Stroma"),
    ])
    return folder


# ------------------------------------------------------------------------------------------------
# Without a server


def test_provenance_round_trip_and_what_a_rerun_or_an_edit_sees(project, served_slide, outlines):
    truth = served_slide.object_geometry
    store = open_project(project)
    original = next(a for a in store.annotations("served.svs") if a.name == "loose")
    original = dataclasses.replace(original, description="drawn by Dr X at x2", measurements={"Num spots": 3.0})
    refined = refined_annotation(original, server_answer(truth), "Tumor", {"model": "", "fov": {"magnification": 10}})
    store.update_annotation("served.svs", refined)
    store.save()

    (back,) = [a for a in open_project(project).annotations("served.svs") if a.name == "loose"]
    record = provenance(back)
    assert (back.id, back.path_class, back.name) == (original.id, "Tumor", "loose")
    assert record["source"] == "refine" and record["class"] == "Tumor" and record["refinements"] == 1
    assert shapely.from_wkt(record["original"]).equals_exact(outlines["loose"], 0)  # nothing of the original is lost
    assert same_outline(shapely.from_wkt(record["refined"]), truth)
    assert record["model_id"] == "mobile_sam@6dbb90523a35" and record["score"] == 0.97
    assert record["resolution"] == {"requested_downsample": 4.0, "requested_mpp": 1.0, "encoder_downsample": 4.0,
                                    "encoder_mpp": 1.0, "downsampled": False, "windows": 1}
    assert record["field_of_view"] == {"x": 1250, "y": 900, "width": 1500, "height": 1200, "downsample": 4.0}
    assert record["user_description"] == "drawn by Dr X at x2"
    assert back.measurements["Num spots"] == 3.0 and back.measurements["SAM score"] == pytest.approx(0.97)
    assert decide(back, 4096, 3072, again=False).action == "already"

    # QuPath keeps float32 coordinates and may start a ring elsewhere: still the same outline
    ring = np.asarray(truth.exterior.coords)[:-1].astype(np.float32).astype(np.float64)
    stored = dataclasses.replace(back, geometry=shapely.Polygon(np.roll(ring, 123, axis=0)))
    assert decide(stored, 4096, 3072, again=False).action == "already"

    # a person moved one vertex by 2 px, or smoothed the outline: an edit, kept unless --again
    moved = ring.copy()
    moved[200] += (2.0, 0.0)
    for edit in (shapely.Polygon(moved), truth.buffer(1.0)):
        edited = dataclasses.replace(back, geometry=edit)
        assert decide(edited, 4096, 3072, again=False).action == "edited"
        again = decide(edited, 4096, 3072, again=True)
        assert again.action == "refine" and again.outline.equals(shapely.MultiPolygon([edit]))
    rerefined = refined_annotation(dataclasses.replace(back, geometry=shapely.Polygon(moved)), server_answer(truth), "Tumor", {})
    record = json.loads(rerefined.description)
    assert record["refinements"] == 2 and record["user_description"] == "drawn by Dr X at x2"
    assert shapely.from_wkt(record["original"]).equals(shapely.Polygon(moved))


def test_what_refine_would_do_without_a_server(project, capsys, caplog):
    """A dry run decides everything (bad annotations included) without contacting the server or writing."""
    file = project / "served.svs.geojson"
    before = tree(project)
    code, out, err = run_cli(capsys, "refine", str(project), "--class", "Tumor", "--dry-run", "--server", "127.0.0.1:1")
    assert code == 1, err  # the bad annotations are failures
    assert summary(out) == {"refined": 4, "already": 0, "edited": 0, "failed": 3}
    for name in ("loose", "tight", "few vertices", "shifted"):
        assert f"would refine served.svs: annotation {name!r} ({by_name(file)[name]['id']})" in out
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 3, warnings
    assert re.search(r"annotation 'a point' .*must be a polygon, got a Point.*left as it is", warnings[0])
    assert re.search(r"annotation 'a line' .*must be a polygon, got a LineString", warnings[1])
    assert re.search(r"annotation 'bow tie' .*not a valid polygon \(Self-intersection", warnings[2])
    assert tree(project) == before and not (project / ".slidesam").exists()


def test_an_unknown_class_lists_the_classes_present(project, capsys):
    before = tree(project)
    code, _, err = run_cli(capsys, "refine", str(project), "--class", "tumor", "--dry-run")
    assert code == 2
    assert "no annotation has the class 'tumor' (did you mean 'Tumor'?); the classes present are: 'Stroma', 'Tumor'" in err
    assert tree(project) == before


def test_unreadable_projects_and_images(project, served_slide, tmp_path, capsys, caplog):
    code, _, err = run_cli(capsys, "refine", str(tmp_path / "nowhere"), "--class", "Tumor")
    assert code == 2 and "neither a QuPath project" in err
    (tmp_path / "bad" ).mkdir()
    (tmp_path / "bad" / "slidesam-project.json").write_text("{not json")
    code, _, err = run_cli(capsys, "refine", str(tmp_path / "bad"), "--class", "Tumor")
    assert code == 2 and "is not valid JSON" in err

    second = project / "second.svs.geojson"
    manifest = json.loads((project / "slidesam-project.json").read_text())
    manifest["images"].append({**manifest["images"][0], "name": "second.svs", "annotations": second.name})
    (project / "slidesam-project.json").write_text(json.dumps(manifest))
    second.write_text('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}')
    before = tree(project)
    code, out, err = run_cli(capsys, "refine", str(project), "--class", "Tumor", "--dry-run")
    assert code == 1, err
    assert re.search(r"second\.svs: second\.svs\.geojson, feature 0: .*; nothing of this image was written", caplog.text)
    assert summary(out)["refined"] == 4  # the readable image went on
    assert tree(project) == before


# ------------------------------------------------------------------------------------------------
# Through the real server (needs its side of the outline prompt)


def _refine(capsys, server, slide_root, project, *extra):
    return run_cli(capsys, "refine", str(project), "--class", "Tumor", "--server", server.address,
                   "--slide-map", f"{slide_root.resolve()}=", *extra)


def test_refine_a_geojson_project(server, served_slide, slide_root, project, outlines, capsys, caplog):
    truth = served_slide.object_geometry
    file = project / "served.svs.geojson"
    written = file.read_bytes()
    untouched = {n: by_name(file)[n] for n in ("a point", "a line", "bow tie", "stroma")}

    code, out, err = _refine(capsys, server, slide_root, project, "--magnification", "10")
    assert code == 1, err  # the three bad annotations
    assert summary(out) == {"refined": 4, "already": 0, "edited": 0, "failed": 3}, out + err
    after = by_name(file)
    measured = {}
    for name, crude in outlines.items():
        refined = after[name]
        record = recorded(refined)
        geometry = shapely.geometry.shape(refined["geometry"])
        measured[name] = (round(iou(crude, truth), 3), round(iou(geometry, truth), 3))
        assert refined["id"] == by_name(project / ".slidesam" / "backups" / backup_runs(project)[0].name / file.name)[name]["id"]
        assert refined["properties"]["classification"]["name"] == "Tumor"
        assert record["source"] == "refine" and shapely.from_wkt(record["original"]).equals_exact(crude, 1e-9)
        assert record["model_id"].startswith("mobile_sam@") and record["score"] > 0.5
        assert record["resolution"]["requested_downsample"] == pytest.approx(4.0)
        assert record["resolution"]["encoder_downsample"] == pytest.approx(4.0) and not record["resolution"]["downsampled"]
        assert record["field_of_view"]["downsample"] == pytest.approx(4.0)
    with capsys.disabled():
        print("IoU with the known object, crude -> refined:", measured)
    for name, (before, after_) in measured.items():
        assert after_ > before, f"{name}: refine made it worse ({before} -> {after_})"
        assert after_ > 0.9, f"{name}: {before} -> {after_}"
    assert {n: by_name(file)[n] for n in untouched} == untouched
    (run,) = backup_runs(project)
    assert (run / file.name).read_bytes() == written  # backed up before the first write

    # a re-run changes nothing: byte for byte, no new backup
    before = tree(project)
    code, out, _ = _refine(capsys, server, slide_root, project, "--magnification", "10")
    assert summary(out) == {"refined": 0, "already": 4, "edited": 0, "failed": 3}
    assert tree(project) == before and backup_runs(project) == [run]

    # a person edits a refined outline: never overwritten silently
    document = json.loads(file.read_text())
    target = next(f for f in document["features"] if f["properties"].get("name") == "loose")
    edited = shapely.geometry.shape(target["geometry"]).buffer(25).simplify(5)
    target["geometry"] = shapely.geometry.mapping(edited)
    write_geojson(file, document)
    before = tree(project)
    caplog.clear()
    code, out, err = _refine(capsys, server, slide_root, project, "--magnification", "10")
    assert summary(out) == {"refined": 0, "already": 3, "edited": 1, "failed": 3}
    assert re.search(rf"WARNING .*annotation 'loose' \({target['id']}\): its outline was edited after slidesam refined it: skipped",
                     caplog.text)
    assert tree(project) == before

    code, out, err = _refine(capsys, server, slide_root, project, "--magnification", "10", "--again")
    assert summary(out) == {"refined": 1, "already": 3, "edited": 0, "failed": 3}, out + err
    again = by_name(file)["loose"]
    record = recorded(again)
    assert again["id"] == target["id"] and record["refinements"] == 2
    assert shapely.from_wkt(record["original"]).equals_exact(edited, 1e-9)  # the edit became the original
    assert iou(shapely.geometry.shape(again["geometry"]), truth) > iou(edited, truth)
    assert len(backup_runs(project)) == 2


def test_a_large_outline_is_refined_over_several_windows(server, served_slide, slide_root, tmp_path, outlines, capsys):
    """At x40 the outline's field of view (1500 x 1200 px) is larger than SAM's window: multi-window, at x40."""
    truth = served_slide.object_geometry
    project = geojson_project(tmp_path / "project", [served_slide.path])
    file = write_prompts(project, "served.svs", [feature("loose", outlines["loose"])])
    code, out, err = _refine(capsys, server, slide_root, project, "--magnification", "40")
    assert code == 0, err
    (refined,) = features(file)
    resolution = recorded(refined)["resolution"]
    assert resolution["windows"] > 1 and not resolution["downsampled"]
    assert resolution["encoder_downsample"] == pytest.approx(1.0) and resolution["requested_mpp"] == pytest.approx(0.25)
    geometry = shapely.geometry.shape(refined["geometry"])
    print("IoU at x40, multi-window:", round(iou(outlines["loose"], truth), 3), "->", round(iou(geometry, truth), 3))
    assert iou(geometry, truth) > max(0.9, iou(outlines["loose"], truth))


def test_an_empty_answer_leaves_the_outline(server, served_slide, slide_root, project, caplog):
    """The server drops every polygon smaller than the polygon options' minimum area: an empty answer,
    reported per annotation, and the outline stays as it was (the library API, as a script would call it)."""
    from functools import partial

    from slidesam.qupath_bridge.client import SlidesamClient
    from slidesam.qupath_bridge.fov import FovSettings
    from slidesam.qupath_bridge.pixels import LocalSlides, PixelSource, SlideMap
    from slidesam.qupath_bridge.refine import RefineSettings, refine
    from slidesam.qupath_bridge.segmenter import Segmenter
    from slidesam.qupath_bridge.wire_requests import PolygonOptions

    before = tree(project)
    with SlidesamClient(server.address) as client:
        pixels = PixelSource(SlideMap.parse([f"{slide_root.resolve()}="]), LocalSlides())
        segmenter = Segmenter(client, pixels, FovSettings(min_size=1024, magnification=10), polygon=PolygonOptions(min_area_px=1e9))
        report = refine(partial(open_project, project), ["served.svs"], segmenter, RefineSettings("Tumor"), {})
    assert len(report.refined) == 0 and len(report.failed) == 7
    assert sum("SAM found no object in it; left as it is" in m for m in report.messages) == 4
    assert caplog.text.count("SAM found no object in it") == 4
    assert tree(project) == before and not (project / ".slidesam").exists()


# ------------------------------------------------------------------------------------------------
# QuPath projects (paquo)


def _paquo():
    from paquo.classes import QuPathPathClass
    from paquo.projects import QuPathProject

    return QuPathProject, QuPathPathClass


def _qupath_geometries(path: Path) -> dict[str, tuple[str, shapely.Geometry, str | None]]:
    QuPathProject, _ = _paquo()
    with QuPathProject(path, mode="r") as qupath:
        (entry,) = qupath.images
        return {a.name: (str(a.uuid) if hasattr(a, "uuid") else a.to_geojson().get("id"), a.roi, a.description)
                for a in entry.hierarchy.annotations}


@pytest.mark.qupath
def test_refine_a_qupath_project(qupath_dir, server, served_slide, slide_root, tmp_path, outlines, capsys, caplog):
    QuPathProject, QuPathPathClass = _paquo()
    truth = served_slide.object_geometry
    path = tmp_path / "qupath"
    with QuPathProject(path, mode="x") as qupath:
        entry = qupath.add_image(served_slide.path)
        tumour = QuPathPathClass("Tumor")
        for name, geometry in {**outlines, "a point": POINT, "a line": LINE}.items():
            entry.hierarchy.add_annotation(geometry, path_class=tumour).name = name
    before_geometries = _qupath_geometries(path)

    code, out, err = _refine(capsys, server, slide_root, path, "--magnification", "10")
    assert code == 1, err
    assert summary(out) == {"refined": 4, "already": 0, "edited": 0, "failed": 2}, out + err
    assert "must be a polygon, got a Point" in caplog.text and "must be a polygon, got a LineString" in caplog.text
    after = _qupath_geometries(path)
    measured = {}
    for name, crude in outlines.items():
        annotation_id, geometry, description = after[name]
        assert annotation_id == before_geometries[name][0]
        record = json.loads(description)
        assert record["source"] == "refine" and same_outline(shapely.from_wkt(record["original"]), before_geometries[name][1], 0.01)
        measured[name] = (round(iou(crude, truth), 3), round(iou(geometry, truth), 3))
    with capsys.disabled():
        print("IoU with the known object (QuPath project), crude -> refined:", measured)
    for name, (before, after_) in measured.items():
        assert after_ > before and after_ > 0.9, f"{name}: {before} -> {after_}"
    for name in ("a point", "a line"):
        assert after[name][1].equals(before_geometries[name][1])
    (run,) = backup_runs(path)
    assert list(run.rglob("data.qpdata")) and (run / "project.qpproj").exists()

    # re-run: nothing written (float32 coordinates are recognised as the refined outline)
    stamps = {p: p.read_bytes() for p in path.rglob("*") if p.is_file() and ".slidesam" not in p.parts}
    code, out, _ = _refine(capsys, server, slide_root, path, "--magnification", "10")
    assert summary(out) == {"refined": 0, "already": 4, "edited": 0, "failed": 2}
    assert {p: p.read_bytes() for p in path.rglob("*") if p.is_file() and ".slidesam" not in p.parts} == stamps
    assert backup_runs(path) == [run]

    # an edit in QuPath is kept, and --again refines it
    with QuPathProject(path, mode="r+") as qupath:
        (entry,) = qupath.images
        target = next(a for a in entry.hierarchy.annotations if a.name == "tight")
        edited = target.roi.buffer(20)
        target.update_roi(edited)
    caplog.clear()
    code, out, err = _refine(capsys, server, slide_root, path, "--magnification", "10")
    assert summary(out)["edited"] == 1 and re.search("annotation 'tight' .*edited after slidesam refined it", caplog.text)
    assert same_outline(_qupath_geometries(path)["tight"][1], edited)
    code, out, err = _refine(capsys, server, slide_root, path, "--magnification", "10", "--again")
    assert summary(out) == {"refined": 1, "already": 3, "edited": 0, "failed": 2}, out + err
    _, geometry, description = _qupath_geometries(path)["tight"]
    assert json.loads(description)["refinements"] == 2 and iou(geometry, truth) > 0.9
