"""Batch pre-annotation throughput: regions per minute with 1 versus N requests in flight.

Run through ./scripts/bench_preannotate. Writes generated slides (two sets with the same layout and
different pixels, so neither run profits from the other's cached embeddings), starts a server in
its own process on them, and pre-annotates one set with 1 worker and the other with N, in one run,
with the grid prompt source (one region per tile over tissue). By default the bridge reads every
region here with OpenSlide and uploads it (`--mode upload`); `--mode slide-id` lets the server read.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

from slidesam.lab.local_server import LocalServer
from slidesam.lab.synthetic.slide_writer import write_synthetic_slide
from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.fov import FovSettings
from slidesam.qupath_bridge.geojson_project import GeoJSONProject
from slidesam.qupath_bridge.pixels import LocalSlides, PixelSource, SlideMap
from slidesam.qupath_bridge.preannotate import preannotate
from slidesam.qupath_bridge.project import ImageEntry
from slidesam.qupath_bridge.prompt_sources import Grid
from slidesam.qupath_bridge.segmenter import Segmenter
from slidesam.qupath_bridge.sync import Settings

SIZE = (4096, 3072)


def write_set(folder: Path, name: str, count: int, seed: int) -> Path:
    """`count` slides with one large object each; returns a GeoJSON project listing them."""
    slides = []
    for index in range(count):
        path = folder / "slides" / name / f"slide-{index}.svs"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_synthetic_slide(path, *SIZE, levels=(1, 4), object_center=(2048.0, 1536.0), object_radii=(1500.0, 1100.0), seed=seed + index)
        slides.append(ImageEntry(path.name, str(path), path, *SIZE))
    project = folder / "projects" / name
    GeoJSONProject.create(project, slides)
    return project


def run(project: Path, client: SlidesamClient, workers: int, slide_map: SlideMap, grid: Grid, fov: FovSettings) -> dict:
    settings = Settings(fov=fov)
    segmenter = Segmenter(client, PixelSource(slide_map, LocalSlides()), settings.fov, connect_timeout=120)
    started = time.perf_counter()
    reports = preannotate(partial(GeoJSONProject, project), [], grid, segmenter, settings, workers, progress=False)
    seconds = time.perf_counter() - started
    failed = [r for r in reports if r.failed]
    if failed:
        raise SystemExit(f"pre-annotation failed: {failed}")
    regions = sum(r.regions for r in reports)
    return {"workers": workers, "regions": regions, "seconds": round(seconds, 2), "regions_per_minute": round(regions / seconds * 60, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slides", type=int, default=2, help="slides per run (default 2)")
    parser.add_argument("--workers", type=int, default=4, help="requests in flight in the parallel run (default 4)")
    parser.add_argument("--grid-spacing", type=float, default=1024.0, help="grid tile side in level-0 pixels (default 1024)")
    parser.add_argument("--mode", choices=["upload", "slide-id"], default="upload", help="how pixels reach the server (default upload)")
    parser.add_argument("--device", default="cpu", help="the server's torch device (default cpu)")
    parser.add_argument("--out", type=Path, help="folder for slides, projects and the server log (default: a temporary folder)")
    args = parser.parse_args()

    folder = args.out or Path(tempfile.mkdtemp(prefix="bench-preannotate-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"writing {2 * args.slides} slides of {SIZE[0]}x{SIZE[1]} under {folder}")
    serial, parallel = write_set(folder, "serial", args.slides, 100), write_set(folder, "parallel", args.slides, 200)
    slide_map = SlideMap.parse([f"{(folder / 'slides').resolve()}="]) if args.mode == "slide-id" else SlideMap()
    grid, fov = Grid(spacing=args.grid_spacing, min_tissue=0.25), FovSettings(min_size=1024.0)

    print(f"starting the server (log: {folder / 'server.log'})")
    with LocalServer(folder / "slides", folder / "server.log", device=args.device) as server:
        with SlidesamClient(server.address) as client:
            client.list_models()
            results = [run(serial, client, 1, slide_map, grid, fov), run(parallel, client, args.workers, slide_map, grid, fov)]

    for result in results:
        print(f"{result['workers']} in flight: {result['regions']} regions in {result['seconds']:.1f} s = {result['regions_per_minute']:.1f} regions/min")
    ratio = results[1]["regions_per_minute"] / results[0]["regions_per_minute"]
    print(f"{args.workers} in flight vs 1: x{ratio:.2f}")
    print(json.dumps({
        "benchmark": "preannotate", "mode": args.mode, "device": args.device, "slides_per_run": args.slides,
        "grid_spacing": args.grid_spacing, "runs": results, "speedup": round(ratio, 3),
        "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
