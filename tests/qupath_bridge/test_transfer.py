"""`slidesam init`, `export` and `import`: annotations between projects and QuPath GeoJSON, idempotently."""

from __future__ import annotations

import json
import re

from bridge_helpers import box, features, points, run_cli, tree, write_prompts

from slidesam.qupath_bridge.geojson import feature_collection, write_geojson
from slidesam.qupath_bridge.project_backends import open_project


def test_init_export_import_round_trip(served_slide, local_slide, tmp_path, capsys):
    source = tmp_path / "source"
    code, out, err = run_cli(capsys, "init", str(source), str(served_slide.path), str(local_slide.path))
    assert code == 0, err
    manifest = json.loads((source / "slidesam-project.json").read_text())
    assert [(i["name"], i["width"], i["height"]) for i in manifest["images"]] == [("served.svs", 4096, 3072), ("local.svs", 4096, 3072)]
    annotations = [points("a", "SAM positive", (10.0, 20.0)), box("a", 5, 5, 50, 50, path_class="Tumor")]
    write_prompts(source, "served.svs", annotations)

    exported = tmp_path / "exported"
    code, out, err = run_cli(capsys, "export", str(source), "--geojson", str(exported))
    assert code == 0, err
    assert features(exported / "served.svs.geojson") == annotations
    assert not (exported / "local.svs.geojson").exists() or features(exported / "local.svs.geojson") == []
    before = tree(exported)
    code, out, _ = run_cli(capsys, "export", str(source), "--geojson", str(exported))
    assert code == 0 and "2 unchanged" in out and tree(exported) == before

    # QuPath's "Export objects as GeoJSON" of a second image: a plain folder, one file per image stem
    qupath_export = tmp_path / "from-qupath"
    extra = points("b", "SAM positive", (30.0, 40.0))
    write_geojson(qupath_export / "local.geojson", feature_collection([extra]))
    write_geojson(qupath_export / "served.svs.geojson", feature_collection(annotations[:1]))
    code, out, err = run_cli(capsys, "import", str(exported), "--geojson", str(qupath_export))
    assert code == 0, err
    assert re.search(r"local\.svs\s+updated", out) and re.search(r"served\.svs\s+unchanged", out)
    assert features(exported / "local.svs.geojson") == [extra]
    before = tree(exported)
    code, out, _ = run_cli(capsys, "import", str(exported), "--geojson", str(qupath_export))
    assert code == 0 and tree(exported) == before

    code, out, _ = run_cli(capsys, "import", str(exported), "--geojson", str(qupath_export), "--replace")
    assert code == 0 and "0 added, 0 updated, 1 removed" in out
    assert [a.path_class for a in open_project(exported).annotations("served.svs")] == ["SAM positive"]
    assert list((exported / ".slidesam" / "backups").iterdir())


def test_import_of_a_malformed_file_leaves_that_image_alone(served_slide, tmp_path, capsys):
    project = tmp_path / "project"
    run_cli(capsys, "init", str(project), str(served_slide.path))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "served.svs.geojson").write_text('{"type": "FeatureCollection", "features": [{"type": "Feature"}]}')
    before = tree(project)
    code, out, err = run_cli(capsys, "import", str(project), "--geojson", str(tmp_path / "in"))
    assert code == 1 and "served.svs.geojson, feature 0: missing or malformed geometry" in err
    assert tree(project) == before
