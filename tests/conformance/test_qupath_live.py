"""The live client on QuPath's own classes (the headless QuPath 0.6.0 in PAQUO_QUPATH_DIR).

- The GUI glue, qupath/slidesam_live.groovy, type-checks against QuPath 0.6.0's GUI API with the client jar
  (`qupath-typecheck --strict`), and the check catches a method QuPath does not have.
- Its headless part, org.slidesam.qupath.LiveHierarchy in the jar, runs in `qupath-groovy` on a real
  PathObjectHierarchy with real hierarchy events and the real server (live_hierarchy_session.groovy): adding,
  dragging, removing and deleting points makes the one result annotation appear, update in place and undo,
  and every result equals what `slidesam sync` writes for the same points; with the GUI's default field of view,
  SAM sees the selected area annotation.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import shapely
from support.qupath import run_groovy

from slidesam.qupath_bridge.geojson import feature_to_annotation
from tests.qupath_bridge.bridge_helpers import geojson_project, points, results, run_cli, write_prompts

ROOT = Path(__file__).resolve().parents[2]
LIVE_SCRIPT = ROOT / "qupath" / "slidesam_live.groovy"
SESSION = Path(__file__).with_name("live_hierarchy_session.groovy")
EPOCH = "1790000000"


def typecheck(command: Path, jar: Path, script: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(command), *options, "--cp", str(jar), str(script)], capture_output=True, text=True, timeout=300, check=False)


def test_live_script_type_checks_against_qupaths_gui_api(qupath_typecheck, client_jar, tmp_path):
    checked = typecheck(qupath_typecheck, client_jar, LIVE_SCRIPT, "--strict")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # The check is real: the name the script once used for PathObject.getID() fails it.
    broken = tmp_path / "broken.groovy"
    broken.write_text(LIVE_SCRIPT.read_text().replace("live.undoLast()", "imageData.getHierarchy().getSelectionModel().getSelectedObject().getId()"))
    refused = typecheck(qupath_typecheck, client_jar, broken)
    assert refused.returncode == 1 and "getId()" in refused.stdout + refused.stderr, refused.stdout + refused.stderr


@pytest.fixture(scope="module")
def small_slide(slide_root):
    """A slide no larger than sync's smallest field of view (2048 px a side): live and sync both read all of it
    at every step (live keeps an object's field of view while its points stay inside; sync plans one per run)."""
    from slidesam.lab.synthetic.slide_writer import write_synthetic_slide

    path = slide_root / "live" / "small.svs"
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_synthetic_slide(path, 2048, 1536, levels=(1, 4), object_center=(1000.0, 760.0), object_radii=(450.0, 320.0), seed=5)


@pytest.fixture(scope="module")
def session(qupath_dir, client_jar, server, small_slide, slide_root, tmp_path_factory) -> dict[str, dict]:
    """The steps of one headless live session on the small slide, by name."""
    slide = small_slide.path.resolve()
    point = small_slide.object_geometry.representative_point()
    off_object = small_slide.object_geometry.bounds[0] - 120
    out = tmp_path_factory.mktemp("live") / "steps.json"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("SOURCE_DATE_EPOCH", EPOCH)  # results are stamped with this time, as sync's below
        env.setenv("JAVA_TOOL_OPTIONS", "-Djna.nosys=false")  # the headless QuPath's JNA loads OpenSlide's binding from its lib
        run_groovy(qupath_dir, SESSION, server.address, slide, f"{slide_root.resolve()}=", out, point.x, point.y, off_object,
                   classpath=client_jar)
    return {step["step"]: step for step in json.loads(out.read_text())}


def clicks(result: dict) -> list[list[float]]:
    return json.loads(result["description"])["clicks"]


def test_points_make_the_result_appear_update_and_undo(session):
    (first,) = session["click"]["results"]
    assert (first["name"], first["class"], first["roi"]) == ("SAM", "Tumor", "Polygon") and not first["locked"]
    assert len(clicks(first)) == 1 and first["measurements"]["SAM clicks"] == 1
    # One result, updated in place (same object) at every step.
    steps = [s for name, s in session.items() if name != "in the selection"]
    assert {r["id"] for s in steps for r in s["results"]} == {first["id"]}
    assert all(len(s["results"]) == 1 for s in steps)
    assert len(clicks(session["second point"]["results"][0])) == 2
    # While a point is dragged nothing is sent; on release the moved click replaces it.
    assert session["dragging"]["results"] == session["second point"]["results"]
    dragged = session["dragged"]["results"][0]
    assert clicks(dragged)[0] != clicks(first)[0] and clicks(dragged)[1] == clicks(session["second point"]["results"][0])[1]
    negative = session["negative"]["results"][0]
    assert [c[2] for c in clicks(negative)] == [1, 1, 0]
    # Deleting the negative point undoes its click on the server: exactly the earlier result comes back.
    assert session["negative deleted"]["results"] == session["dragged"]["results"]
    # The undo key takes the last point of the object worked on last away.
    assert [p["points"] for p in session["undo key"]["prompts"]] == [[clicks(dragged)[0][:2]]]
    assert clicks(session["undo key"]["results"][0]) == clicks(dragged)[:1]
    # Deleting every prompt leaves the result; a locked result is left alone, and the user is told.
    assert session["prompts deleted"]["prompts"] == [] and session["prompts deleted"]["results"] == session["undo key"]["results"]
    locked = session["locked result"]
    assert locked["results"][0]["locked"] and {**locked["results"][0], "locked": False} == session["undo key"]["results"][0]
    assert locked["problems"] == ["SAM is locked: left as it is"]
    assert all(s["problems"] == [] for s in steps if s["step"] != "locked result")


def test_the_selected_area_annotation_is_the_field_of_view(session):
    """The GUI's default FOV_MODE: SAM sees the selected area annotation that holds the points (here 800 x 600
    around the click), not the region the bridge would plan (the whole of this small slide)."""
    (result,) = session["in the selection"]["results"]
    x, y = (math.floor(c + 0.5) for c in clicks(result)[0][:2])  # as Java's Math.round in the session
    view = json.loads(result["description"])["field_of_view"]
    assert [view[k] for k in ("x", "y", "width", "height")] == [x - 400, y - 300, 800, 600]
    assert json.loads(result["description"])["settings"]["fov"]["region"] == "selection or view"


@pytest.mark.parametrize("step", ["click", "second point", "dragged", "negative", "undo key"])
def test_each_result_is_what_sync_writes_for_the_same_points(session, step, server, small_slide, slide_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    state = session[step]
    project = geojson_project(tmp_path / "project", [small_slide.path])
    prompts = [points(p.get("name"), p["class"], *map(tuple, p["points"])) for p in state["prompts"]]
    file = write_prompts(project, small_slide.path.name, prompts)
    code, _, err = run_cli(capsys, "sync", str(project), "--server", server.address, "--slide-map", f"{slide_root.resolve()}=")
    assert code == 0, err
    (feature,) = results(file)
    synced = feature_to_annotation(feature, file.name)  # as the bridge reads it back
    (live,) = state["results"]
    assert (live["name"], live["class"], live["description"]) == (synced.name, synced.path_class, synced.description)
    assert live["measurements"] == pytest.approx(synced.measurements, rel=1e-6)  # QuPath may keep float32
    ours = shapely.from_wkt(live["wkt"])
    assert ours.symmetric_difference(synced.geometry).area < 1e-4 * synced.geometry.area
    assert shapely.hausdorff_distance(ours, synced.geometry) < 0.01  # QuPath's polygon ROI keeps float32 vertices
