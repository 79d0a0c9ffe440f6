"""Helpers for the bridge tests: prompt features shaped as QuPath writes them, projects, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import shapely

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.qupath_bridge import cli
from slidesam.qupath_bridge.geojson import feature_collection, write_geojson
from slidesam.qupath_bridge.geojson_project import GeoJSONProject
from slidesam.qupath_bridge.pixels import LocalSlides
from slidesam.qupath_bridge.project import ImageEntry
from slidesam.qupath_bridge.qupath_values import qupath_class_colour
from slidesam.qupath_bridge.results import Segmentation
from slidesam.qupath_bridge.wire_geometry import polygons_to_pb
from slidesam.qupath_bridge.wire_results import ObjectResult


def points(name: str | None, path_class: str, *xy: tuple[float, float]) -> dict:
    """A QuPath Points annotation (MultiPoint)."""
    return _feature({"type": "MultiPoint", "coordinates": [[float(x), float(y)] for x, y in xy]}, name, path_class)


def box(name: str | None, x: float, y: float, width: float, height: float, path_class: str = "SAM box") -> dict:
    """A QuPath rectangle annotation (a closed Polygon ring)."""
    ring = [[x, y], [x + width, y], [x + width, y + height], [x, y + height], [x, y]]
    return _feature({"type": "Polygon", "coordinates": [[[float(a), float(b)] for a, b in ring]]}, name, path_class)


def _feature(geometry: dict, name: str | None, path_class: str) -> dict:
    properties: dict = {"objectType": "annotation"}
    if name is not None:
        properties["name"] = name
    properties["classification"] = {"name": path_class, "color": list(qupath_class_colour(path_class))}  # as QuPath gives it
    return {"type": "Feature", "id": str(uuid.uuid4()), "geometry": geometry, "properties": properties}


def geojson_project(folder: Path, slides: list[Path]) -> Path:
    """A GeoJSON project listing the slides (absolute paths, sizes read with OpenSlide)."""
    local = LocalSlides()
    images = [ImageEntry(s.name, str(s.resolve()), s.resolve(), *local.size(s)) for s in slides]
    local.close()
    GeoJSONProject.create(folder, images)
    return folder


def paquo_project(folder: Path, slides: list[Path]) -> Path:
    """A QuPath project (through paquo) holding the slides."""
    from paquo.projects import QuPathProject

    with QuPathProject(folder, mode="x") as qupath:
        for slide in slides:
            qupath.add_image(slide)
    return folder


def server_answer(geometry: shapely.Geometry) -> Segmentation:
    """A server answer as it comes off the wire (for provenance written without a model)."""
    raw = pb.SegmentationResult(
        object_id="x", polygons=polygons_to_pb(geometry), score=0.97, area_px=geometry.area, area_um2=geometry.area / 16,
        mpp_known=True, model_id="mobile_sam@6dbb90523a35", downsample=4.0,
        region=pb.Rect(x=1250, y=900, width=1500, height=1200),
        resolution=pb.ModelResolution(requested_downsample=4, requested_mpp=1, encoder_downsample=4, encoder_mpp=1, windows=1, windows_decoded=1),
    )
    return Segmentation(ObjectResult(raw), (1250, 900, 1500, 1200), "6dbb90523a35" + "0" * 52)


def write_prompts(project: Path, image: str, features: list[dict]) -> Path:
    path = project / f"{image}.geojson"
    write_geojson(path, feature_collection(features))
    return path


def features(path: Path) -> list[dict]:
    return json.loads(path.read_text())["features"]


def results(path: Path) -> list[dict]:
    """The slidesam result features of an image file."""
    return [f for f in features(path) if (f["properties"].get("name") or "").startswith("SAM")]


def provenance(feature: dict) -> dict:
    return json.loads(feature["properties"]["metadata"]["ANNOTATION_DESCRIPTION"])


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder (backups left out) by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "backups" not in p.relative_to(folder).parts
    }


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """`slidesam ARGS` in this process: (exit code, stdout, stderr)."""
    try:
        cli.main([*args, "--no-progress"] if args and args[0] not in ("init", "models", "segment") else list(args))
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def cli_command(*args: str) -> list[str]:
    """The command line of `slidesam ARGS` as a separate process."""
    return [sys.executable, "-m", "slidesam.qupath_bridge.cli", *args]


def run_process(*args: str, env: dict | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, env=env, timeout=timeout)
