"""Which backend opens a project path: a GeoJSON project folder or a QuPath project."""

from __future__ import annotations

from pathlib import Path

from slidesam.qupath_bridge.geojson_project import MANIFEST, GeoJSONProject
from slidesam.qupath_bridge.paquo_project import PaquoProject
from slidesam.qupath_bridge.project import Project, ProjectError


def open_project(path: Path, *, writable: bool = True) -> Project:
    """A GeoJSON project (folder with `slidesam-project.json`) or a QuPath project (`.qpproj` or its folder)."""
    path = Path(path)
    if path.name == MANIFEST or (path / MANIFEST).is_file():
        return GeoJSONProject(path.parent if path.name == MANIFEST else path)
    if path.suffix == ".qpproj" or (path / "project.qpproj").is_file():
        return PaquoProject(path, writable=writable)
    raise ProjectError(
        f"{path} is neither a QuPath project (project.qpproj) nor a GeoJSON project ({MANIFEST}); "
        "create a GeoJSON project with `slidesam init DIR SLIDE...`"
    )
