"""`slidesam sync` end to end: prompts in a GeoJSON project, the real server with MobileSAM, polygons back."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import shapely
from shapely.geometry import shape
from bridge_helpers import (
    cli_command,
    features,
    geojson_project,
    points,
    provenance,
    results,
    run_cli,
    tree,
    write_prompts,
)

from slidesam.qupath_bridge.geojson import write_geojson

CENTRE = (2000.0, 1500.0)  # the served slide's object (radii 500 x 350)


def _iou(a: shapely.Geometry, b: shapely.Geometry) -> float:
    return a.intersection(b).area / a.union(b).area


def _backup_runs(project: Path) -> int:
    folder = project / ".slidesam" / "backups"
    return len(list(folder.iterdir())) if folder.exists() else 0


def test_prompts_become_a_placed_result_once_and_are_replaced_when_changed(server, served_slide, slide_root, tmp_path, capsys):
    project = geojson_project(tmp_path / "project", [served_slide.path])
    prompts = [points("lesion 1", "SAM positive", CENTRE)]
    file = write_prompts(project, "served.svs", prompts)
    sync = ("sync", str(project), "--server", server.address, "--slide-map", f"{slide_root.resolve()}=")

    code, out, err = run_cli(capsys, *sync)
    assert code == 0, err
    assert re.search(r"served\.svs\s+updated\s+1\s+1", out)
    (result,) = results(file)
    record = provenance(result)
    assert result["properties"]["name"] == "SAM: lesion 1"
    assert result["properties"]["classification"]["name"] == "Tumor"
    assert record["source"] == "prompts" and record["group"] == "lesion 1" and record["clicks"] == [[*CENTRE, 1]]
    assert record["model_id"].startswith("mobile_sam@") and record["checkpoint_sha256"].startswith(record["model_id"].split("@")[1])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["created"])
    assert result["properties"]["measurements"]["SAM score"] == pytest.approx(record["score"]) and record["score"] > 0.8
    assert _iou(shape(result["geometry"]), served_slide.object_geometry) > 0.9  # placed in level-0 coordinates
    assert features(file)[:1] == prompts  # the prompts are left as they were
    assert "Tumor" in (project / "slidesam-project.json").read_text()

    before, backups = tree(project), _backup_runs(project)
    code, out, _ = run_cli(capsys, *sync)
    assert code == 0 and re.search(r"served\.svs\s+unchanged", out)
    assert tree(project) == before and _backup_runs(project) == backups  # nothing new: nothing written

    changed = [*prompts, points("lesion 1", "SAM negative", (CENTRE[0] - 250, CENTRE[1]), (CENTRE[0] + 250, CENTRE[1]))]
    write_geojson(file, {"type": "FeatureCollection", "features": changed})
    code, out, err = run_cli(capsys, *sync)
    assert code == 0, err
    (replaced,) = results(file)
    assert replaced["id"] == result["id"]
    assert provenance(replaced)["clicks"] == [[*CENTRE, 1], [CENTRE[0] - 250, CENTRE[1], 0], [CENTRE[0] + 250, CENTRE[1], 0]]
    assert provenance(replaced)["prompts_sha256"] != record["prompts_sha256"]
    assert shape(replaced["geometry"]).area < 0.8 * shape(result["geometry"]).area  # the negatives cut it
    assert features(file)[:2] == changed


def test_regions_of_slides_the_server_cannot_read_are_uploaded(server, local_slide, tmp_path, capsys):
    project = geojson_project(tmp_path / "project", [local_slide.path])
    file = write_prompts(project, "local.svs", [points(None, "SAM positive", (2300.0, 1400.0))])
    code, out, err = run_cli(capsys, "sync", str(project), "--server", server.address, "--magnification", "20")
    assert code == 0, err
    (result,) = results(file)
    assert result["properties"]["name"] == "SAM"
    assert provenance(result)["field_of_view"]["downsample"] == 2.0
    assert _iou(shape(result["geometry"]), local_slide.object_geometry) > 0.9


def test_real_slide(server, cmu_slide, slide_root, tmp_path, capsys):
    """CMU-1-Small-Region: the squamous epithelium, clicked as in the demo, at x10."""
    project = geojson_project(tmp_path / "project", [cmu_slide])
    positive = [(1350.0, 1920.0), (1175.0, 1850.0), (1230.0, 2234.0)]
    negative = [(1560.0, 2070.0), (1245.0, 2085.0), (966.0, 1849.0)]
    file = write_prompts(project, cmu_slide.name, [
        points("epithelium", "SAM positive", *positive),
        points("epithelium", "SAM negative", *negative),
    ])
    code, _, err = run_cli(capsys, "sync", str(project), "--server", server.address, "--magnification", "10",
                           "--slide-map", f"{slide_root.resolve()}=")
    assert code == 0, err
    (result,) = results(file)
    geometry = shape(result["geometry"])
    view = provenance(result)["field_of_view"]
    assert view["downsample"] == pytest.approx(2.0, rel=0.01)
    assert shapely.box(view["x"], view["y"], view["x"] + view["width"], view["y"] + view["height"]).buffer(1).contains(geometry)
    assert sum(geometry.contains(shapely.Point(p)) for p in positive) >= 2
    assert geometry.area > 20_000


def test_watch_picks_up_a_change_saved_while_it_runs(server, served_slide, slide_root, tmp_path):
    project = geojson_project(tmp_path / "project", [served_slide.path])
    file = write_prompts(project, "served.svs", [points("lesion 1", "SAM positive", CENTRE)])
    log = tmp_path / "watch.log"
    command = cli_command("sync", str(project), "--watch", "--interval", "0.2", "--max-cycles", "2", "--timeout", "120",
                          "--server", server.address, "--slide-map", f"{slide_root.resolve()}=")
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: "waiting for a save" in log.read_text(), 60, log)
        (first,) = results(file)
        changed = [points("lesion 1", "SAM positive", CENTRE), points("lesion 1", "SAM negative", (CENTRE[0] + 250, CENTRE[1]))]
        write_geojson(file, {"type": "FeatureCollection", "features": changed})  # as a save from QuPath would
        assert process.wait(timeout=90) == 0, log.read_text()
    finally:
        process.kill()
    (second,) = results(file)
    assert second["id"] == first["id"]
    assert provenance(second)["clicks"][-1] == [CENTRE[0] + 250, CENTRE[1], 0]
    assert "stopped after 2 sync(s)" in log.read_text()


def _wait_for(condition, seconds: float, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
