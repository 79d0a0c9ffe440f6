"""Bad input: a clear message, a non-zero exit, and the project exactly as it was."""

from __future__ import annotations

import re
import socket
import uuid

import pytest
from bridge_helpers import box, geojson_project, points, run_cli, tree, write_prompts

GOOD = [points("lesion 1", "SAM positive", (2000.0, 1500.0))]


@pytest.fixture
def project(served_slide, tmp_path):
    return geojson_project(tmp_path / "project", [served_slide.path])


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _check_untouched(project, before):
    assert tree(project) == before
    assert not (project / ".slidesam").exists()


@pytest.mark.parametrize("prompts, message", [
    ("{not json", "served.svs.geojson is not valid JSON"),
    ('{"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Point"}, "properties": {}}]}',
     "served.svs.geojson, feature 0: missing or malformed geometry"),
    ([points("lesion 1", "SAM positive", (2000.0, 1500.0), (5000.0, 100.0))], r"the prompt at \(5000, 100\) lies outside the image"),
    ([points("lesion 1", "SAM negative", (2000.0, 1500.0))], "prompt group 'lesion 1': no positive point and no box"),
    ([{**points("lesion 1", "SAM positive"), "geometry": {"type": "MultiPoint", "coordinates": []}}], "holds no points"),
    ([points("lesion 1", "Sam Positive", (2000.0, 1500.0))], "unknown class 'Sam Positive'"),
    ([*GOOD, box("lesion 1", 10, 10, 100, 100), box("lesion 1", 20, 20, 100, 100)], "2 boxes; a group takes at most one"),
], ids=["not-json", "no-geometry", "outside", "no-positive", "empty-points", "unknown-class", "two-boxes"])
def test_sync_refuses_bad_prompts(server, project, prompts, message, capsys):
    path = project / "served.svs.geojson"
    if isinstance(prompts, str):
        path.write_text(prompts)
    else:
        write_prompts(project, "served.svs", prompts)
    before = tree(project)
    code, out, err = run_cli(capsys, "sync", str(project), "--server", server.address)
    assert code == 1 and "failed" in out
    assert re.search(message, err), err
    _check_untouched(project, before)


def test_unreachable_server(project, capsys):
    write_prompts(project, "served.svs", GOOD)
    before = tree(project)
    address = f"127.0.0.1:{_unused_port()}"
    code, _, err = run_cli(capsys, "sync", str(project), "--server", address, "--connect-timeout", "1")
    assert code == 3 and f"no slidesam server answered at {address}" in err
    _check_untouched(project, before)
    code, _, err = run_cli(capsys, "preannotate", str(project), "--server", address, "--connect-timeout", "1", "--prompts", "tissue-boxes")
    assert code == 3 and "no slidesam server answered" in err
    _check_untouched(project, before)


@pytest.mark.parametrize("arguments, message", [
    (["--prompts", "geojson", "{prompts}"], "unknown class 'Tumor'"),
    (["--prompts", "geojson", "{missing}"], "does not exist"),
    (["--prompts", "tissue-boxes", "extra"], "--prompts expects tissue-boxes, grid or geojson FILE"),
    (["--prompts", "grid", "--image", "nope.svs"], "no image named 'nope.svs'"),
    (["--prompts", "grid", "--mpp", "0"], "expected a positive number"),
    (["--prompts", "grid", "--slide-map", "no-equals-sign"], "LOCAL_PREFIX=SERVER_PREFIX"),
], ids=["unknown-class", "missing-file", "bad-kind", "unknown-image", "bad-mpp", "bad-slide-map"])
def test_preannotate_refuses_bad_arguments(server, project, tmp_path, arguments, message, capsys):
    prompts = write_prompts(tmp_path, "prompts", [*GOOD, box("lesion 1", 1500, 1100, 1000, 800, path_class="Tumor")])
    arguments = [a.format(prompts=prompts, missing=tmp_path / "missing.geojson") for a in arguments]
    before = tree(project)
    code, _, err = run_cli(capsys, "preannotate", str(project), "--server", server.address, *arguments)
    assert code == 2 and message in err, err
    _check_untouched(project, before)


def test_not_a_project(tmp_path, capsys):
    code, _, err = run_cli(capsys, "sync", str(tmp_path), "--server", "127.0.0.1:1")
    assert code == 2 and "neither a QuPath project" in err
    (tmp_path / "slidesam-project.json").write_text('{"format": "slidesam-geojson-project", "images": [{"name": 1}]}')
    code, _, err = run_cli(capsys, "export", str(tmp_path), "--geojson", str(tmp_path / "out"))
    assert code == 2 and '"images" must be a list of objects with a "name" and a "uri"' in err


def test_a_missing_slide_is_reported_and_skipped(server, served_slide, tmp_path, capsys):
    """Without a slide map the bridge reads pixels itself; a slide that is gone fails its image only."""
    gone = geojson_project(tmp_path / "gone-project", [served_slide.path])
    write_prompts(gone, "served.svs", GOOD)
    text = (gone / "slidesam-project.json").read_text().replace(str(served_slide.path.resolve()), str(tmp_path / f"{uuid.uuid4()}.svs"))
    (gone / "slidesam-project.json").write_text(text.replace('"width": 4096,', "").replace('"height": 3072,', ""))
    before = tree(gone)
    code, out, err = run_cli(capsys, "sync", str(gone), "--server", server.address)
    assert code == 1 and "does not exist" in err
    _check_untouched(gone, before)
