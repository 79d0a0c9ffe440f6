"""`slidesam-server tune` end to end on a small GeoJSON project of generated slides, with the real
MobileSAM: export, train, register, evaluate, compare; then a real server answers clicks with the tuned
model by name. And its bad input: a clear error, nothing written."""

from __future__ import annotations

import contextlib
import io
import json
import uuid
from pathlib import Path

import pytest
import shapely

from slidesam.qupath_bridge.geojson import feature_collection, write_geojson
from slidesam.qupath_bridge.geojson_project import GeoJSONProject
from slidesam.qupath_bridge.project import ImageEntry
from slidesam.qupath_bridge.wire_requests import FieldOfView, SlideImage
from slidesam.server.cli import main
from slidesam.server.models.registry import ModelRegistry
from tests.conftest import make_server

CENTERS = [(1500.0, 1250.0), (1580.0, 1300.0), (1520.0, 1240.0)]
NAME = "mobile_sam-tuned-test"


@pytest.fixture(scope="module")
def slides(slide_root):
    """Three small slides in the test server's slide root, one tumour-like object each, with room around it for
    negatives; by the export's seeded split, slide-3 is held out."""
    from slidesam.lab.synthetic.slide_writer import write_synthetic_slide

    folder = slide_root / "tune"
    folder.mkdir(exist_ok=True)
    return [write_synthetic_slide(folder / f"slide-{i + 1}.svs", 3072, 2560, levels=(1, 4), object_center=center,
                                  object_radii=(230.0 + 15 * i, 170.0), seed=40 + i)
            for i, center in enumerate(CENTERS)]


@pytest.fixture(scope="module")
def project(slides, tmp_path_factory) -> Path:
    """A GeoJSON project: each slide's object outlined by hand as Tumor."""
    folder = tmp_path_factory.mktemp("tune-project")
    GeoJSONProject.create(folder, [ImageEntry(s.path.name, str(s.path), s.path, s.width, s.height) for s in slides])
    for slide in slides:
        feature = {"type": "Feature", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, slide.path.name)),
                   "geometry": shapely.geometry.mapping(slide.object_geometry),
                   "properties": {"objectType": "annotation", "classification": {"name": "Tumor", "color": [200, 0, 0]}}}
        write_geojson(folder / f"{slide.path.name}.geojson", feature_collection([feature]))
    return folder


@pytest.fixture(scope="module")
def model_dir(model_registry, tmp_path_factory) -> Path:
    """A model directory of its own, holding the base MobileSAM (a link to the session's checkpoint)."""
    folder = tmp_path_factory.mktemp("tune-models")
    (folder / "mobile_sam.pt").symlink_to(model_registry.spec("mobile_sam").checkpoint)
    return folder


def tune_args(project: Path, out: Path, model_dir: Path, device: str, *extra: str) -> list[str]:
    return ["tune", "--project", str(project), "--classes", "Tumor", "--out", str(out), "--model-dir", str(model_dir),
            "--device", device, *extra]


@pytest.fixture(scope="module")
def tuned(project, model_dir, model_registry, slide_root, tmp_path_factory):
    """One tune run through the real command line: 1 epoch, 1 augmentation, 3 clicks per held-out object.
    Its output folder and what it printed."""
    out = tmp_path_factory.mktemp("tune-run") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main(tune_args(project, out, model_dir, str(model_registry.device), "--epochs", "1", "--augmentations", "1",
                       "--max-clicks", "3", "--learning-rate", "1e-4", "--negatives-per-object", "2", "--name", NAME,
                       "--slide-map", f"{slide_root}="))
    print(printed.getvalue())
    return out, printed.getvalue()


def test_tune_runs_the_loop_and_the_server_serves_the_tuned_model(tuned, model_dir, model_registry, slide_root, slides):
    tuned, printed = tuned
    assert f"serve it: slidesam-server serve --model-dir {model_dir} --model {NAME}" in printed
    assert "NoC@85" in printed and printed.count(NAME) >= 3, printed
    manifest = json.loads((tuned / "data" / "manifest.json").read_text())
    held_out = manifest["images"]["validation"]
    assert held_out == ["slide-3.svs"] and manifest["images"]["train"] == ["slide-1.svs", "slide-2.svs"]
    assert manifest["counts"]["train"]["negative"] > 0 and manifest["counts"]["validation"]["negative"] > 0
    base = json.loads((tuned / "eval" / "mobile_sam" / "results.json").read_text())
    mine = json.loads((tuned / "eval" / NAME / "results.json").read_text())
    objects = sum(n for kind, n in manifest["counts"]["validation"].items() if kind != "negative")
    assert base["summary"]["samples"] == mine["summary"]["samples"] == objects, "negatives are skipped by the evaluation"
    placements = [json.loads(p.read_text()) for p in sorted((tuned / "data" / "validation").glob("*.json"))]
    assert {p["slide"] for p in placements} == {f"tune/{name}" for name in held_out}, "--slide-map names the slides on the server"
    assert (tuned / "compare" / "results.md").read_text().count(NAME) >= 2 and (tuned / "compare" / "noc.png").is_file()
    sidecar = json.loads((model_dir / f"{NAME}.slidesam.json").read_text())
    assert sidecar["scenario"] == "md" and sidecar["base_model"] == "mobile_sam" and sidecar["origin"]["export"] == str(tuned / "data")
    assert mine["config"]["model_id"].startswith(f"{NAME}@") and mine["config"]["checkpoint_sha256"] == sidecar["sha256"]

    registry = ModelRegistry.create(model_dir=model_dir, device=str(model_registry.device))
    server = make_server(registry, slide_root)
    try:
        from slidesam.qupath_bridge.client import SlidesamClient

        slide = next(s for s in slides if s.path.name == held_out[0])
        with SlidesamClient(server.address) as client:
            assert NAME in {m.name for m in client.list_models()}
            minx, miny, maxx, maxy = slide.object_geometry.bounds
            fov = FieldOfView(SlideImage(f"tune/{slide.path.name}"), minx - 300, miny - 300, maxx - minx + 600, maxy - miny + 600, magnification=10)
            with client.open_object(fov, model=NAME) as session:
                point = slide.object_geometry.representative_point()
                result = session.click(point.x, point.y)
        assert result.model_id == registry.spec(NAME).model_id == mine["config"]["model_id"] and not result.geometry.is_empty
    finally:
        server.stop()


@pytest.mark.parametrize("case", ["out exists", "unknown base", "no annotations of the class", "name taken"])
def test_bad_input_is_a_clear_error_and_writes_nothing(case, project, model_dir, model_registry, tuned, tmp_path, capsys):
    out = tmp_path / "run"
    extra: list[str] = []
    if case == "out exists":
        out.mkdir()
    elif case == "unknown base":
        extra = ["--base", "sam_vit_x"]
    elif case == "name taken":
        extra = ["--name", NAME]
    args = tune_args(project, out, model_dir, str(model_registry.device), *extra)
    if case == "no annotations of the class":
        args[args.index("--classes") + 1] = "Stroma"
    before = sorted(p.name for p in model_dir.iterdir())
    with pytest.raises(SystemExit) as raised:
        main(args)
    message = str(raised.value.code) + capsys.readouterr().err
    expected = {"out exists": "exists; give a new folder", "unknown base": "unknown model 'sam_vit_x'",
                "no annotations of the class": "'Stroma'",
                "name taken": f"a model named {NAME!r} exists"}[case]
    assert expected in message, message
    assert sorted(p.name for p in model_dir.iterdir()) == before
    assert list(out.iterdir()) == [] if case == "out exists" else not out.exists()
    assert not list(tmp_path.glob(".*partial*"))
