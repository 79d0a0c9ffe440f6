"""Honest resolution on the bridge side: the resolution the model saw goes into the provenance, and a
result the model saw coarser than asked for is said out loud (CLI line, WARNING, image report).

Real loopback server with MobileSAM; these need the server side of ModelResolution, window modes and
grid alignment."""

from __future__ import annotations

import json
import re

import pytest
import shapely
from shapely.geometry import shape
from bridge_helpers import geojson_project, points, provenance, results, run_cli, write_prompts

CENTRE = (2000.0, 1500.0)  # the served slide's object (radii 500 x 350); 40x, 0.25 µm/px


def _iou(a, b) -> float:
    return a.intersection(b).area / a.union(b).area


def test_segment_says_when_the_model_saw_less_than_asked(server, served_slide, tmp_path, capsys):
    """The whole 4096 x 3072 slide at x40 in one window: SAM sees it at x10."""
    out_file = tmp_path / "whole.geojson"
    code, out, err = run_cli(capsys, "segment", "--server", server.address, "--slide", "bridge/served.svs",
                             "--region", "0,0,4096,3072", "--magnification", "40", "--windows", "single",
                             "--click", f"{CENTRE[0]},{CENTRE[1]}", "--out", str(out_file))
    assert code == 0, err
    assert "slidesam: warning: the model saw x10 (1 µm/px), not the x40 asked for (4 times coarser)" in err
    assert "--windows multi" in err
    assert out_file.exists()


def test_sync_and_preannotate_record_the_resolution_and_warn(server, served_slide, slide_root, tmp_path, capsys, caplog):
    project = geojson_project(tmp_path / "project", [served_slide.path])
    file = write_prompts(project, "served.svs", [points("lesion 1", "SAM positive", CENTRE)])
    common = ("--server", server.address, "--slide-map", f"{slide_root.resolve()}=", "--magnification", "40")

    # the default field of view (2048 level-0 px) at x40 is twice SAM's window: single squeezes it
    code, out, err = run_cli(capsys, "sync", str(project), *common, "--windows", "single")
    assert code == 0, err
    (result,) = results(file)
    record = provenance(result)
    assert record["settings"]["fov"]["windows"] == "single"
    assert record["resolution"] == {"requested_downsample": 1.0, "requested_mpp": 0.25, "encoder_downsample": 2.0,
                                    "encoder_mpp": 0.5, "downsampled": True, "windows": 1}
    said = "served.svs, SAM: lesion 1: the model saw x20 (0.5 µm/px), not the x40 asked for (2 times coarser)"
    assert said in out  # the image's report
    assert any(r.levelname == "WARNING" and said in r.getMessage() for r in caplog.records)

    caplog.clear()
    prompts = write_prompts(tmp_path, "prompts", [points("lesion 1", "SAM positive", CENTRE)])
    code, out, err = run_cli(capsys, "preannotate", str(project), *common, "--windows", "single", "--prompts", "geojson", str(prompts))
    assert code == 0, err
    assert any(r.levelname == "WARNING" and "the model saw x20" in r.getMessage() for r in caplog.records)
    batch = [f for f in results(file) if provenance(f)["source"] == "geojson"]
    assert provenance(batch[0])["resolution"]["downsampled"] is True


def test_sync_at_the_resolution_asked_for_says_nothing(server, served_slide, slide_root, tmp_path, capsys, caplog):
    """x10: the field of view fits one window; the provenance says the model saw x10 and nothing is warned."""
    project = geojson_project(tmp_path / "project", [served_slide.path])
    file = write_prompts(project, "served.svs", [points(None, "SAM positive", CENTRE)])
    code, out, err = run_cli(capsys, "sync", str(project), "--server", server.address, "--slide-map",
                             f"{slide_root.resolve()}=", "--magnification", "10", "--align-to-grid")
    assert code == 0, err
    (result,) = results(file)
    record = provenance(result)
    assert record["resolution"]["encoder_downsample"] == pytest.approx(4.0) and not record["resolution"]["downsampled"]
    assert record["settings"]["fov"]["align_to_grid"] is True
    # the slide's grid at x10 has one window (1024 px = 4096 level-0 px): the server read that instead
    assert record["field_of_view"]["region_read"] == {"x": 0, "y": 0, "width": 4096, "height": 3072}
    assert _iou(shape(result["geometry"]), served_slide.object_geometry) > 0.9
    assert "the model saw" not in out + err and not [r for r in caplog.records if "the model saw" in r.getMessage()]
