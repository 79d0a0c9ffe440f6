"""End to end on QuPath's own projects: made by QuPath's classes (qupath-groovy, `qupath_project.groovy`) with the
real CMU-1-Small-Region slide added through QuPath's OpenSlide server, then `sync`, `refine`, `preannotate`,
`export` and `import`, and `sync --watch` picking up points that a separate QuPath process saves while it runs.
Every result is read back through QuPath (`ProjectIO.loadProject`, the image opened by its server); every
write is backed up first."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import shapely
from bridge_helpers import cli_command, points, run_cli, tree, write_prompts
from support.qupath import read_with_qupath, run_groovy

from slidesam.qupath_bridge.qupath_values import same_geometry

pytestmark = pytest.mark.qupath
SCRIPT = Path(__file__).with_name("qupath_project.groovy")
POSITIVE = "points|SAM positive|epithelium|1350,1920;1175,1850;1230,2234"  # the demo's clicks, in click order
NEGATIVE = "points|SAM negative|epithelium|1560,2070;1245,2085;966,1849"
CRUDE = "polygon|Tumor|crude|1050,1750;1450,1780;1480,2300;1020,2280"  # a rough outline for refine


def _qupath_project(qupath_dir: Path, folder: Path, slide: Path, *annotations: str) -> Path:
    """A project made by QuPath's classes holding the slide (through the server QuPath prefers) and annotations."""
    done = run_groovy(qupath_dir, SCRIPT, "create", folder, slide, *annotations)
    assert "(OpenSlide)" in done.stdout, done.stdout
    return folder


def _objects(qupath_dir: Path, *projects: Path) -> list[dict[tuple[str, str], dict]]:
    """Each project's objects by (name, class) as QuPath reads them, its one image opened through its server."""
    read = read_with_qupath(qupath_dir, *(p / "project.qpproj" for p in projects), open_images=True)
    result = []
    for project in projects:
        (image,) = read[str(project / "project.qpproj")]["images"]
        assert image["server"] == {"type": "OpenSlide", "width": 2220, "height": 2967}
        result.append({(o["name"], o["pathClass"]): o for o in image["objects"]})
    return result


def _backed_up(project: Path, data: bytes) -> bool:
    return any(p.read_bytes() == data for p in (project / ".slidesam" / "backups").rglob("data.qpdata"))


def test_sync_refine_preannotate_export_and_import(qupath_dir, server, cmu_slide, slide_root, tmp_path, capsys):
    project = _qupath_project(qupath_dir, tmp_path / "qupath", cmu_slide, POSITIVE, NEGATIVE, CRUDE)
    (data,) = project.glob("data/*/data.qpdata")
    made_by_qupath = data.read_bytes()
    common = ("--server", server.address, "--slide-map", f"{slide_root.resolve()}=", "--magnification", "10")

    code, out, err = run_cli(capsys, "sync", str(project), *common)
    assert code == 0 and re.search(r"CMU-1-Small-Region\.svs\s+updated\s+1\s+1", out), out + err
    assert _backed_up(project, made_by_qupath)
    synced = data.read_bytes()
    code, out, err = run_cli(capsys, "refine", str(project), "--class", "Tumor", *common)
    assert code == 0 and "1 refined" in out, out + err
    assert _backed_up(project, synced)
    prompts = write_prompts(tmp_path, "prompts", [points("gland", "SAM positive", (1350.0, 1920.0))])
    code, out, err = run_cli(capsys, "preannotate", str(project), *common, "--prompts", "geojson", str(prompts))
    assert code == 0, out + err

    # export, then import into a second project QuPath made: QuPath reads the same objects from both
    written = tree(project)
    exported = tmp_path / "exported"
    assert run_cli(capsys, "export", str(project), "--geojson", str(exported))[0] == 0
    assert tree(project) == written, "export leaves its source project as it was"
    other = _qupath_project(qupath_dir, tmp_path / "other", cmu_slide)
    code, out, err = run_cli(capsys, "import", str(other), "--geojson", str(exported))
    assert code == 0 and "5 added, 0 updated, 0 removed" in out, out + err
    before = tree(other)
    code, out, _ = run_cli(capsys, "import", str(other), "--geojson", str(exported))
    assert code == 0 and re.search(r"CMU-1-Small-Region\.svs\s+unchanged", out) and tree(other) == before
    original, imported = _objects(qupath_dir, project, other)  # one QuPath JVM reads both projects

    objects = original  # what sync, refine and preannotate wrote, read back through QuPath
    assert objects["epithelium", "SAM positive"]["points"] == [[1350.0, 1920.0], [1175.0, 1850.0], [1230.0, 2234.0]]  # untouched
    result = objects["SAM: epithelium", "Tumor"]
    record = json.loads(result["description"])
    assert result["pathClass"] == "Tumor" and result["classColor"] == [200, 0, 0] and result["roi"] in ("Polygon", "Geometry")
    assert record["source"] == "prompts" and record["clicks"][0] == [1350.0, 1920.0, 1] and record["clicks"][3] == [1560.0, 2070.0, 0]
    assert result["measurements"]["SAM score"] == pytest.approx(record["score"], abs=1e-6) and result["measurements"]["SAM clicks"] == 6
    assert shapely.from_wkt(result["wkt"]).area > 20_000
    refined = json.loads(objects["crude", "Tumor"]["description"])
    crude = shapely.from_wkt(objects["crude", "Tumor"]["wkt"])
    assert refined["source"] == "refine" and not crude.equals(shapely.from_wkt(refined["original"]))
    assert json.loads(objects["SAM: gland", "Tumor"]["description"])["source"] == "geojson"

    assert imported.keys() == original.keys()
    for key, qupath_object in original.items():  # ids, classes and colours, names, measurements, descriptions
        assert {**imported[key], "wkt": None} == {**qupath_object, "wkt": None}, key
        assert same_geometry(shapely.from_wkt(imported[key]["wkt"]), shapely.from_wkt(qupath_object["wkt"])), key


def test_watch_picks_up_points_a_qupath_process_saves(qupath_dir, server, cmu_slide, slide_root, tmp_path):
    project = _qupath_project(qupath_dir, tmp_path / "qupath", cmu_slide, POSITIVE)
    log = tmp_path / "watch.log"
    command = cli_command("sync", str(project), "--watch", "--interval", "0.3", "--max-cycles", "2", "--timeout", "240",
                          "--server", server.address, "--slide-map", f"{slide_root.resolve()}=", "--magnification", "10")
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "waiting for a save" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        first = _objects(qupath_dir, project)[0]["SAM: epithelium", "Tumor"]
        run_groovy(qupath_dir, SCRIPT, "add", project, cmu_slide.name, NEGATIVE)  # QuPath adds the points and saves
        assert process.wait(timeout=180) == 0, log.read_text()
    finally:
        process.kill()
    assert "stopped after 2 sync(s)" in log.read_text()
    second = _objects(qupath_dir, project)[0]["SAM: epithelium", "Tumor"]
    assert second["id"] == first["id"]
    assert len(json.loads(first["description"])["clicks"]) == 3 and len(json.loads(second["description"])["clicks"]) == 6
    backups = sorted((project / ".slidesam" / "backups").iterdir())
    assert len(backups) == 2 and all((run / "project.qpproj").exists() for run in backups)
