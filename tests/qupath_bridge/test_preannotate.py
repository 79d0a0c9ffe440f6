"""`slidesam preannotate` over a project of generated slides: killed midway and restarted, it ends
with the same files as an uninterrupted run; a failing image is reported and the others go on."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import shapely
from shapely.geometry import shape
from bridge_helpers import cli_command, geojson_project, provenance, results, run_cli, run_process, tree

EPOCH = {"SOURCE_DATE_EPOCH": "1790000000"}  # the provenance time, so that two runs can be compared byte for byte


def _finished(project) -> int:
    state = project / ".slidesam" / "preannotate.json"
    try:
        return len(json.loads(state.read_text())["images"])
    except (FileNotFoundError, ValueError):
        return 0


def test_killed_and_restarted_ends_as_an_uninterrupted_run(server, batch_slides, slide_root, tmp_path):
    slides = [s.path for s in batch_slides]
    killed, whole = geojson_project(tmp_path / "killed", slides), geojson_project(tmp_path / "whole", slides)
    arguments = ("--server", server.address, "--prompts", "tissue-boxes", "--slide-map", f"{slide_root.resolve()}=")
    env = {**os.environ, **EPOCH}

    process = subprocess.Popen(cli_command("preannotate", str(killed), *arguments, "--workers", "1"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while _finished(killed) < 1 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_when_killed = _finished(killed)
    assert 1 <= done_when_killed < len(slides), "the run was not killed midway"

    restarted = run_process("preannotate", str(killed), *arguments, "--workers", "2", env=env)
    assert restarted.returncode == 0, restarted.stderr
    assert len(re.findall(r"\bskipped\b", restarted.stdout)) == done_when_killed
    uninterrupted = run_process("preannotate", str(whole), *arguments, "--workers", "3", env=env)
    assert uninterrupted.returncode == 0, uninterrupted.stderr

    assert tree(killed) == tree(whole)
    for slide in batch_slides:
        (result,) = results(whole / f"{slide.path.name}.geojson")
        assert result["properties"]["name"] == "SAM: tissue 1"
        assert provenance(result)["source"] == "tissue-boxes" and provenance(result)["box"]
        assert shape(result["geometry"]).intersection(slide.object_geometry).area > 0.85 * slide.object_geometry.area

    again = run_process("preannotate", str(whole), *arguments, env=env)
    assert again.returncode == 0 and again.stdout.count("skipped") == len(slides)
    assert tree(whole) == tree(killed)


def test_a_failing_image_is_reported_and_the_rest_go_on(server, batch_slides, slide_root, tmp_path, capsys):
    project = geojson_project(tmp_path / "project", [batch_slides[0].path])
    manifest = json.loads((project / "slidesam-project.json").read_text())
    manifest["images"].insert(0, {"name": "gone.svs", "uri": str(tmp_path / "deleted.svs"), "width": 4096, "height": 3072})
    (project / "slidesam-project.json").write_text(json.dumps(manifest))

    code, out, err = run_cli(capsys, "preannotate", str(project), "--server", server.address, "--prompts", "grid",
                             "--grid-spacing", "512", "--min-tissue", "0.5", "--min-size", "4096", "--slide-map", f"{slide_root.resolve()}=")
    assert code == 1
    assert re.search(r"gone\.svs\s+failed", out) and "deleted.svs does not exist" in err
    assert re.search(r"case-0\.svs\s+updated\s+(\d+)\s+\1", out)
    grid = results(project / "case-0.svs.geojson")
    assert grid and all(re.fullmatch(r"SAM: grid \d+,\d+", r["properties"]["name"]) for r in grid)
    assert all(batch_slides[0].object_geometry.contains(shapely.Point(provenance(r)["clicks"][0][:2])) for r in grid)
    assert not (project / "gone.svs.geojson").exists()
