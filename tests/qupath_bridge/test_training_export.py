"""`slidesam export-training` on a GeoJSON project and on a QuPath project holding the same annotations: drawn
by hand, results accepted (locked; reclassified), corrected, unreviewed, results older than `geometry_sha256`,
a large object (tiled), and the negatives around them; kinds, provenance and masks, the split by image, byte-
identical re-runs, the folder the lab reads, and bad input (nothing written)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import shapely
import shapely.affinity
from bridge_helpers import geojson_project, paquo_project, run_cli, server_answer, tree

from slidesam.lab.evaluation.datasets import PatchFolder
from slidesam.lab.synthetic.slide_writer import write_synthetic_slide
from slidesam.qupath_bridge.export_tiles import Window, object_windows, rasterise, tissue_fraction
from slidesam.qupath_bridge.pixels import LocalSlides, PixelSource, SlideMap
from slidesam.qupath_bridge.project import Annotation, PathClass
from slidesam.qupath_bridge.project_backends import open_project
from slidesam.qupath_bridge.prompts import PromptGroup
from slidesam.qupath_bridge.refine import refined_annotation
from slidesam.qupath_bridge.results import Job, result_annotation
from slidesam.qupath_bridge.sync import Settings
from slidesam.qupath_bridge.training_export import ExportError, ExportSettings, export_training
from slidesam.qupath_bridge.wire_requests import Click
from slidesam.server.engine.geometry import RegionTransform, geometry_to_mask

SIZE = (2048, 1536)
DOWNSAMPLE = 4.0  # x10 on the slides' x40
SETTINGS = ExportSettings(("Tumor",), accepted_class="Tumor accepted", min_size=64, window=128, overlap=32,
                          negatives_per_object=2, validation_fraction=0.5)
EXPECTED = {"hand": "hand-drawn", "large": "hand-drawn", "SAM: locked": "accepted", "SAM: reclassified": "accepted",
            "SAM: corrected": "corrected", "old refine": "accepted", "hand b": "hand-drawn"}


def hexagon(cx: float, cy: float, radius: float) -> shapely.Polygon:
    """Off QuPath's grid, as a model's or a person's outline is."""
    return shapely.Polygon([(cx + radius * math.cos(a) + 0.337, cy + 0.8 * radius * math.sin(a) + 0.123)
                            for a in np.linspace(0, 2 * math.pi, 7)[:-1]])


def result(name: str, geometry: shapely.Geometry, without_hash: bool = False) -> Annotation:
    """A result as sync writes it (optionally as slidesam wrote it before `geometry_sha256`)."""
    group, settings = PromptGroup(name, (Click(*geometry.centroid.coords[0], True),)), Settings().hashed()
    annotation = result_annotation("a.svs", Job(group, group.sha256(settings)), server_answer(geometry), "prompts", "Tumor", settings)
    return _without_hash(annotation) if without_hash else annotation


def _without_hash(annotation: Annotation) -> Annotation:
    record = json.loads(annotation.description)
    del record["geometry_sha256"]
    return dataclasses.replace(annotation, description=json.dumps(record))


def drawn(name: str, geometry: shapely.Geometry, path_class: str = "Tumor") -> Annotation:
    return Annotation(str(uuid.uuid5(uuid.NAMESPACE_URL, name)), geometry, path_class, name)


def _fill(path: Path) -> Path:
    """The annotations as written, then the pathologist's review of them, saved later."""
    project = open_project(path)
    project.ensure_path_class(PathClass("Necrosis"))  # a class no annotation has
    refine_source = drawn("old refine", hexagon(800, 1240, 100))
    a = [drawn("hand", hexagon(250, 240, 100)), result("locked", hexagon(800, 240, 100)),
         result("reclassified", hexagon(1350, 240, 100)), result("corrected", hexagon(250, 690, 100)),
         result("unreviewed", hexagon(800, 690, 100)), result("old result", hexagon(250, 1240, 100), without_hash=True),
         _without_hash(refined_annotation(refine_source, server_answer(refine_source.geometry), "Tumor", {})),
         drawn("large", shapely.affinity.scale(shapely.Point(1550.3, 1000.7).buffer(250), 1.2, 1.0))]
    b = [drawn("hand b", hexagon(1000, 700, 120)), drawn("stroma", hexagon(1300, 700, 100), "Stroma"),
         drawn("clicks", shapely.MultiPoint([(500, 500), (600, 600)]))]
    for image, annotations in (("a.svs", a), ("b.svs", b)):
        for annotation in annotations:
            project.add_annotation(image, annotation)
    project.save()
    project = open_project(path)
    by_name = {a.name: a for a in project.annotations("a.svs")}
    for name, change in {"SAM: locked": {"locked": True}, "SAM: reclassified": {"path_class": "Tumor accepted"},
                         "SAM: corrected": {"geometry": by_name["SAM: corrected"].geometry.buffer(20)},
                         "SAM: old result": {"locked": True}, "old refine": {"locked": True}}.items():
        project.update_annotation("a.svs", dataclasses.replace(by_name[name], **change))
    project.save()
    return path


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("training-slides")
    return [write_synthetic_slide(folder / f"{name}.svs", *SIZE, levels=(1, 4), object_center=(1000.0, 800.0),
                                  object_radii=(200.0, 150.0), seed=seed).path for seed, name in enumerate("ab")]


@pytest.fixture(scope="module")
def geojson_case(slides, tmp_path_factory) -> Path:
    return _fill(geojson_project(tmp_path_factory.mktemp("geojson") / "project", slides))


@pytest.fixture(scope="module")
def qupath_case(slides, tmp_path_factory, qupath_dir) -> Path:
    return _fill(paquo_project(tmp_path_factory.mktemp("qupath") / "project", slides))


@pytest.fixture(scope="module", params=["geojson", pytest.param("qupath", marks=pytest.mark.qupath)])
def case(request) -> Path:
    return request.getfixturevalue(f"{request.param}_case")


def export(project_path: Path, out: Path, settings: ExportSettings = SETTINGS, **options):
    project, local = open_project(project_path, writable=False), LocalSlides()
    try:
        return export_training(project, settings, out, PixelSource(SlideMap(), local), progress=False, **options)
    finally:
        project.close()
        local.close()


@pytest.fixture(scope="module")
def exported(case, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("exports") / "training"
    summary = export(case, out)
    assert summary.skipped == {"not a polygon": 1, "unknown provenance": 1, "unreviewed": 1}
    assert len(summary.warnings) == 1 and "SAM: old result" in summary.warnings[0]
    return out


def test_kinds_provenance_and_masks(case, exported):
    project = open_project(case, writable=False)
    by_image = {image: project.annotations(image) for image in ("a.svs", "b.svs")}
    annotations = {a.id: a for image in by_image.values() for a in image}
    manifest = json.loads((exported / "manifest.json").read_text())
    samples = manifest["samples"]
    positives = [s for s in samples if s["kind"] != "negative"]
    assert {annotations[s["annotation_id"]].name: s["kind"] for s in positives} == EXPECTED
    assert all(s["class"] == "Tumor" and (s["model_id"] is None) == (s["kind"] == "hand-drawn") for s in positives)
    tiles = [s["tile"] for s in positives if annotations[s["annotation_id"]].name == "large"]
    assert len(tiles) > 2 and all(tile is not None for tile in tiles)
    assert all(s["tile"] is None for s in positives if annotations[s["annotation_id"]].name != "large")
    labelled = {image: shapely.union_all([a.geometry for a in found if a.path_class in ("Tumor", "Tumor accepted")])
                for image, found in by_image.items()}
    negatives = 0
    for sample in samples:
        folder = exported / sample["split"]
        meta = json.loads((folder / f"{sample['name']}.json").read_text())
        mask = cv2.imread(str(folder / f"{sample['name']}_mask.png"), cv2.IMREAD_UNCHANGED)
        image = cv2.imread(str(folder / f"{sample['name']}.png"))
        assert meta["provenance"] == {k: sample[k] for k in ("image", "annotation_id", "kind", "class", "model_id", "tile")}
        assert meta["downsample"] == DOWNSAMPLE and meta["mpp"] == 0.25 and image.shape[:2] == mask.shape and set(np.unique(mask)) <= {0, 255}
        (x, y), (rows, columns) = meta["origin"], mask.shape
        box = shapely.box(x, y, x + columns * DOWNSAMPLE, y + rows * DOWNSAMPLE)
        if sample["kind"] == "negative":
            negatives += 1
            assert not mask.any() and shapely.intersection(box, labelled[sample["image"]]).area == 0 and max(rows, columns) <= SETTINGS.window
            continue
        inside = shapely.intersection(annotations[sample["annotation_id"]].geometry, box)  # the user's final geometry
        # pixels whose centre is inside, and those the outline crosses (as the server draws masks): within a pixel
        assert abs((mask > 0).sum() - inside.area / DOWNSAMPLE**2) <= inside.boundary.length / DOWNSAMPLE
        assert max(rows, columns) <= SETTINGS.window
    assert negatives >= 6


def test_split_by_image_and_the_lab_reads_it(exported):
    manifest = json.loads((exported / "manifest.json").read_text())
    train, validation = set(manifest["images"]["train"]), set(manifest["images"]["validation"])
    assert train | validation == {"a.svs", "b.svs"} and not train & validation and train and validation
    assert all(s["image"] in (train if s["split"] == "train" else validation) for s in manifest["samples"])
    for split in ("train", "validation"):
        folder = PatchFolder(exported / split)
        entries = {s["name"]: s for s in manifest["samples"] if s["split"] == split}
        assert folder.names() == sorted(entries)
        for sample in folder:
            assert sample.downsample == DOWNSAMPLE and sample.mpp == 0.25 and sample.slide is None
            assert sample.gt.any() == (entries[sample.name]["kind"] != "negative")
    counts = manifest["counts"]
    assert sum(counts[s][k] for s in counts for k in counts[s]) == len(manifest["samples"])


def test_a_rerun_writes_the_same_bytes(case, exported, tmp_path):
    export(case, tmp_path / "again")
    assert tree(tmp_path / "again") == tree(exported)


@pytest.mark.qupath
def test_both_backends_export_the_same(geojson_case, qupath_case, tmp_path):
    export(geojson_case, tmp_path / "geojson")
    export(qupath_case, tmp_path / "qupath")
    assert tree(tmp_path / "geojson") == tree(tmp_path / "qupath")


def test_the_command_line(geojson_case, tmp_path, capsys):
    out = tmp_path / "cli"
    code, stdout, stderr = run_cli(capsys, "export-training", str(geojson_case), "--classes", "Tumor", "--accepted-class",
                                   "Tumor accepted", "--out", str(out), "--validation-fraction", "0.5")
    assert code == 0, stderr
    assert "train (1 image(s))" in stdout and "validation (1 image(s))" in stdout
    assert "skipped: 1 not a polygon, 1 unknown provenance, 1 unreviewed" in stdout
    one = tmp_path / "one image"
    code, stdout, stderr = run_cli(capsys, "export-training", str(geojson_case), "--classes", "Tumor", "--out", str(one),
                                   "--image", "a.svs", "--validation-fraction", "0", "--magnification", "5")
    manifest = json.loads((one / "manifest.json").read_text())
    assert code == 0 and manifest["images"] == {"train": ["a.svs"], "validation": []} and not list((one / "validation").iterdir())
    assert {json.loads(p.read_text())["downsample"] for p in (one / "train").glob("*.json")} == {8.0}


@pytest.mark.parametrize("args, message", [
    (["--classes", ""], "a class name is empty"),
    (["--classes", "Tumor,"], "a class name is empty"),
    (["--classes", "Tumour"], "no annotation has the class 'Tumour'"),
    (["--classes", "Tumor", "--accepted-class", "Accepted"], "no annotation has the class 'Accepted'"),
    (["--classes", "Tumor", "--accepted-class", "Tumor"], "must be a name other than the exported classes"),
    (["--classes", "Necrosis"], "nothing to export for the classes 'Necrosis'"),
    (["--classes", "Tumor", "--image", "a.svs"], "cannot be split by image"),
    (["--classes", "Tumor", "--image", "c.svs"], "no image named 'c.svs'"),
])
def test_bad_input_writes_nothing(geojson_case, tmp_path, capsys, args, message):
    code, _, stderr = run_cli(capsys, "export-training", str(geojson_case), "--out", str(tmp_path / "out"), *args)
    assert code == 2 and message in stderr, stderr
    assert list(tmp_path.iterdir()) == []


def test_a_missing_slide_or_an_existing_folder_writes_nothing(slides, tmp_path, capsys):
    copy = Path(shutil.copy(slides[0], tmp_path / "gone.svs"))
    project = geojson_project(tmp_path / "project", [copy])
    store = open_project(project)
    store.add_annotation("gone.svs", drawn("hand", hexagon(250, 240, 100)))
    store.save()
    copy.unlink()
    code, _, stderr = run_cli(capsys, "export-training", str(project), "--classes", "Tumor", "--out", str(tmp_path / "out"),
                              "--validation-fraction", "0")
    assert code == 2 and f"gone.svs: its slide {copy} is missing on disk" in stderr, stderr
    assert not (tmp_path / "out").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["project"]
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists; give a new folder"):
        export(project, existing, ExportSettings(("Tumor",), validation_fraction=0))
    assert tree(existing) == {"keep.txt": b"mine"}


def test_masks_are_drawn_as_the_server_draws_them():
    ring = shapely.box(10.3, 20.7, 300.1, 250.9).difference(shapely.box(80.2, 90.6, 200.4, 180.8))
    geometry = shapely.MultiPolygon([ring, shapely.box(120.5, 120.5, 150.25, 150.75), hexagon(350, 120, 40)])
    for window in (Window(0, 0, 120, 90, 4.0), Window(7, 13, 150, 111, 2.5), Window(101, 57, 200, 170, 1.37)):
        theirs = geometry_to_mask(geometry, RegionTransform(window.x, window.y, window.downsample, window.downsample), (window.rows, window.columns))
        ours = rasterise(geometry, window)
        assert theirs.any() and np.array_equal(ours > 0, theirs)


def test_a_large_object_is_tiled_with_overlap_inside_the_image():
    windows = object_windows((100.0, 50.0, 1900.0, 700.0), SIZE, 4.0, 0.25, 64, 128, 32)
    columns = sorted({w.x for w in windows})
    assert all((w.columns, w.rows) == (128, 128) for w in windows) and len(windows) == len(columns) * len({w.y for w in windows})
    assert all(b - a == 96 * 4 for a, b in zip(columns[:-2], columns[1:-1])) and columns[0] == 0
    assert max(w.x + w.columns * 4 for w in windows) <= SIZE[0] and max(w.y + w.rows * 4 for w in windows) <= SIZE[1]
    (single,) = object_windows((500.0, 500.0, 600.0, 560.0), SIZE, 4.0, 0.25, 64, 128, 32)
    assert (single.columns, single.rows, single.tile) == (64, 64, None)


def test_tissue_is_stained():
    pink = np.full((8, 8, 3), (236, 204, 220), np.uint8)
    assert tissue_fraction(pink) == 1.0 and tissue_fraction(np.full_like(pink, 245)) == 0.0
