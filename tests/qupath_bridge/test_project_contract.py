"""The `Project` contract, run against every backend: GeoJSON always, paquo wherever QuPath exists."""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import pytest
import shapely
from bridge_helpers import geojson_project, paquo_project

from slidesam.qupath_bridge.project import Annotation, PathClass, ProjectChanged
from slidesam.qupath_bridge.project_backends import open_project
from slidesam.qupath_bridge.qupath_values import geometry_sha256, qupath_class_colour, qupath_geometry, qupath_measurement, same_geometry

TUMOUR = Annotation(
    "6f0b9d3e-1c2a-4f5b-9e8d-7a6b5c4d3e21",
    shapely.MultiPolygon([shapely.box(1000, 1000, 1800, 1600).difference(shapely.box(1200, 1200, 1400, 1400)), shapely.box(2000, 2000, 2300, 2200)]),
    "Tumor",
    "SAM: lesion 1",
    description='{"slidesam": 1}',
    measurements={"SAM score": 0.93},
)
PROMPT = Annotation("6f0b9d3e-1c2a-4f5b-9e8d-7a6b5c4d3e22", shapely.MultiPoint([(1600, 1350), (1500, 1300.005)]), "SAM positive", "lesion 1")


@pytest.fixture(params=["geojson", pytest.param("paquo", marks=pytest.mark.qupath)])
def project_path(request, tmp_path, served_slide, local_slide) -> Path:
    slides = [served_slide.path, local_slide.path]
    if request.param == "geojson":
        return geojson_project(tmp_path / "project", slides)
    request.getfixturevalue("qupath_dir")
    return paquo_project(tmp_path / "project", slides)


def _as_kept(annotation: Annotation, class_color: tuple[int, int, int]) -> Annotation:
    """What a project gives back for an annotation written: the values QuPath keeps, the class list's colour."""
    return dataclasses.replace(
        annotation, geometry=qupath_geometry(annotation.geometry), class_color=class_color,
        measurements={k: qupath_measurement(v) for k, v in annotation.measurements.items()},
    )


def _same(a: Annotation, b: Annotation) -> bool:
    """Equal in every field; geometries with the same coordinates (`same_geometry`)."""
    fields = ("id", "path_class", "name", "description", "locked", "class_color")
    return ([getattr(a, f) for f in fields] == [getattr(b, f) for f in fields] and dict(a.measurements) == dict(b.measurements)
            and same_geometry(a.geometry, b.geometry))


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
    assert _same(prompt, _as_kept(PROMPT, qupath_class_colour("SAM positive"))) and _same(tumour, _as_kept(TUMOUR, (200, 0, 0)))
    assert reopened.annotations("local.svs") == []
    assert {c.name: c.color for c in reopened.path_classes()} == {"Tumor": (200, 0, 0), "SAM positive": (225, 4, 32)}

    moved = Annotation(TUMOUR.id, shapely.box(0.004, 0, 10.333333, 10), "Stroma", "moved", measurements={"SAM score": 0.5}, locked=True)
    reopened.update_annotation("served.svs", moved)
    reopened.remove_annotation("served.svs", PROMPT.id)
    reopened.save()
    (only,) = open_project(project_path).annotations("served.svs")
    assert _same(only, _as_kept(moved, (150, 200, 150)))
    assert only.geometry.bounds == (0.0, 0.0, 10.33, 10.0)


def test_the_geometry_hash_survives_the_round_trip(project_path):
    """What a result records of its geometry (`geometry_sha256`) names what the project gives back, whatever QuPath
    does to ring starts, orientations, part order and one-part MultiPolygons; an edit of one vertex changes it."""
    off_grid = shapely.Polygon([(1000.123456, 1200.987654), (1300.3333, 1210.5555), (1320.7777, 1400.1111), (990.4444, 1380.6666)])
    shapes = {"one part": shapely.MultiPolygon([off_grid]), "holes and parts": TUMOUR.geometry, "points": PROMPT.geometry}
    project = open_project(project_path)
    for name, geometry in shapes.items():
        project.add_annotation("served.svs", Annotation(str(uuid.uuid5(uuid.NAMESPACE_URL, name)), geometry, "Tumor", name))
    project.save()
    back = {a.name: a.geometry for a in open_project(project_path).annotations("served.svs")}
    assert {name: geometry_sha256(back[name]) for name in shapes} == {name: geometry_sha256(g) for name, g in shapes.items()}
    (kept,) = shapely.get_parts(back["one part"])
    first, *rest = kept.exterior.coords[:-1]
    assert geometry_sha256(shapely.Polygon([(first[0] + 1, first[1]), *rest])) != geometry_sha256(kept) == geometry_sha256(kept.reverse())


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


@pytest.mark.qupath
def test_both_backends_give_back_the_same(qupath_dir, tmp_path, served_slide, local_slide):
    """Off-grid coordinates, a measurement float32 cannot hold, a derived class: both backends give back what
    QuPath keeps, field for field."""
    slides = [served_slide.path, local_slide.path]
    off_grid = Annotation(
        "6f0b9d3e-1c2a-4f5b-9e8d-7a6b5c4d3e23", shapely.Polygon([(100.123456, 200.987654), (300.3333, 210.5555), (320.7777, 400.1111), (90.4444, 380.6666)]),
        "Tumor: Positive", "off grid", description="ü", measurements={"ratio": 1 / 3},
    )
    projects = [open_project(geojson_project(tmp_path / "geojson", slides)), open_project(paquo_project(tmp_path / "qupath", slides))]
    for project in projects:
        for annotation in (PROMPT, TUMOUR, off_grid):
            project.add_annotation("served.svs", annotation)
        project.save()
    from_geojson, from_qupath = (open_project(project.root).annotations("served.svs") for project in projects)
    assert len(from_geojson) == 3 and all(_same(a, b) for a, b in zip(from_geojson, from_qupath))
    assert _same(from_qupath[2], _as_kept(off_grid, (200, 50, 50)))
    assert from_qupath[2].measurements["ratio"] == 0.3333333432674408 and from_qupath[2].geometry.exterior.coords[0] != (100.123456, 200.987654)
    assert sorted(open_project(projects[0].root).path_classes(), key=str) == sorted(open_project(projects[1].root).path_classes(), key=str)
