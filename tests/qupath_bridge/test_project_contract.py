"""The `Project` contract, run against every backend: GeoJSON always, paquo wherever QuPath exists."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import shapely

from bridge_helpers import geojson_project
from qupath_bridge.project import Annotation, PathClass, ProjectChanged, open_project

TUMOUR = Annotation(
    "6f0b9d3e-1c2a-4f5b-9e8d-7a6b5c4d3e21",
    shapely.MultiPolygon([shapely.box(1000, 1000, 1800, 1600).difference(shapely.box(1200, 1200, 1400, 1400)), shapely.box(2000, 2000, 2300, 2200)]),
    "Tumor",
    "SAM: lesion 1",
    description='{"slidesam": 1}',
    measurements={"SAM score": 0.93},
)
PROMPT = Annotation("6f0b9d3e-1c2a-4f5b-9e8d-7a6b5c4d3e22", shapely.MultiPoint([(1500, 1300), (1600, 1350)]), "SAM positive", "lesion 1")


def _paquo_project(folder: Path, slides: list[Path]) -> Path:
    from paquo.projects import QuPathProject

    with QuPathProject(folder, mode="x") as qupath:
        for slide in slides:
            qupath.add_image(slide)
    return folder


@pytest.fixture(params=["geojson", pytest.param("paquo", marks=pytest.mark.qupath)])
def project_path(request, tmp_path, served_slide, local_slide) -> Path:
    slides = [served_slide.path, local_slide.path]
    if request.param == "geojson":
        return geojson_project(tmp_path / "project", slides)
    request.getfixturevalue("qupath_dir")
    return _paquo_project(tmp_path / "project", slides)


def _same(a: Annotation, b: Annotation) -> bool:
    return (a.id, a.path_class, a.name, a.description or None, dict(a.measurements), a.locked) == (
        b.id, b.path_class, b.name, b.description or None, dict(b.measurements), b.locked
    ) and a.geometry.equals(b.geometry)


def test_lists_images_with_paths_and_sizes(project_path, served_slide, local_slide):
    project = open_project(project_path)
    images = {image.name: image for image in project.images()}
    assert set(images) == {"served.svs", "local.svs"}
    for slide in (served_slide, local_slide):
        image = images[slide.path.name]
        assert Path(image.path).resolve() == slide.path.resolve()
        assert (image.width, image.height) == (slide.width, slide.height)


def test_add_update_remove_and_read_back(project_path):
    project = open_project(project_path)
    project.ensure_path_class(PathClass("Tumor", (200, 0, 0)))
    project.add_annotation("served.svs", PROMPT)
    project.add_annotation("served.svs", TUMOUR)
    assert project.save()
    reopened = open_project(project_path)
    prompt, tumour = reopened.annotations("served.svs")
    assert _same(prompt, PROMPT) and _same(tumour, TUMOUR)
    assert reopened.annotations("local.svs") == []
    assert [c.name for c in reopened.path_classes()].count("Tumor") == 1

    moved = Annotation(TUMOUR.id, shapely.box(0, 0, 10, 10), "Stroma", "moved", measurements={"SAM score": 0.5}, locked=True)
    reopened.update_annotation("served.svs", moved)
    reopened.remove_annotation("served.svs", PROMPT.id)
    reopened.save()
    (only,) = open_project(project_path).annotations("served.svs")
    assert _same(only, moved)


def test_classes_are_added_once(project_path):
    project = open_project(project_path)
    for _ in range(2):
        project.ensure_path_class(PathClass("Necrosis", (50, 50, 50)))
    project.save()
    names = [c.name for c in open_project(project_path).path_classes()]
    assert names.count("Necrosis") == 1


def test_saving_nothing_writes_nothing(project_path):
    project = open_project(project_path)
    project.annotations("served.svs")
    before = {p: p.stat().st_mtime_ns for p in project_path.rglob("*") if p.is_file()}
    assert project.save() == []
    assert {p: p.stat().st_mtime_ns for p in project_path.rglob("*") if p.is_file()} == before
    assert not (project_path / ".slidesam").exists()


def test_a_write_is_backed_up_first(project_path):
    project = open_project(project_path)
    project.add_annotation("served.svs", PROMPT)
    (first, *_) = project.save()
    earlier = first.read_bytes()
    project.add_annotation("served.svs", TUMOUR)
    project.save()
    assert first.read_bytes() != earlier
    backups = list((project_path / ".slidesam" / "backups").rglob(first.name))
    assert any(b.read_bytes() == earlier for b in backups)


def test_a_file_saved_elsewhere_meanwhile_is_not_overwritten(project_path):
    project = open_project(project_path)
    project.add_annotation("served.svs", PROMPT)
    (written, *_) = project.save()
    reader = open_project(project_path)
    reader.annotations("served.svs")
    stat = written.stat()
    os.utime(written, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # QuPath saved it meanwhile
    content = written.read_bytes()
    reader.add_annotation("served.svs", TUMOUR)
    with pytest.raises(ProjectChanged, match="changed on disk"):
        reader.save()
    assert written.read_bytes() == content
