"""`slidesam`: the pathologist-side command line (talks to a slidesam server, never imports torch)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from qupath_bridge.client import Click, FieldOfView, ServerError, SlideImage, SlidesamClient
from qupath_bridge.geojson import annotation_feature, feature_collection, write_geojson


def _numbers(text: str, count: int, what: str) -> list[float]:
    parts = text.split(",")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"{what} expects {count} comma-separated numbers, got {text!r}")
    return values


def _click(text: str) -> Click:
    """'x,y' or 'x,y,+' is positive, 'x,y,-' negative."""
    body, sign = text, "+"
    if text.endswith((",+", ",-")):
        body, sign = text[:-2], text[-1]
    x, y = _numbers(body, 2, "--click")
    return Click(x, y, sign == "+")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slidesam",
        description="Talk to a slidesam server from the pathologist's side: list models, segment objects into QuPath GeoJSON.",
    )
    parser.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the slidesam server")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser("models", help="list the server's models")

    segment = commands.add_parser(
        "segment", help="segment one object from clicks and/or a box and write it as QuPath GeoJSON",
        description="Coordinates are QuPath's: level-0 pixels, origin top-left.",
    )
    segment.add_argument("--slide", required=True, help="slide id, relative to the server's slide root")
    segment.add_argument("--region", required=True, type=lambda t: _numbers(t, 4, "--region"), metavar="X,Y,W,H",
                         help="level-0 field of view")
    resolution = segment.add_mutually_exclusive_group()
    resolution.add_argument("--mpp", type=float, help="read at this many µm per pixel")
    resolution.add_argument("--magnification", type=float, help="read at this objective magnification, e.g. 5 or 10")
    resolution.add_argument("--downsample", type=float, help="read at this downsample of level 0")
    segment.add_argument("--click", action="append", type=_click, default=[], metavar="X,Y[,+|-]",
                         help="a click; '+' (default) inside the object, '-' outside (repeatable, in order)")
    segment.add_argument("--box", type=lambda t: _numbers(t, 4, "--box"), metavar="X,Y,W,H", help="a box prompt")
    segment.add_argument("--model", default="", help="model name (default: the server's)")
    segment.add_argument("--classification", default="Tumor", help="QuPath class of the annotation (default Tumor)")
    segment.add_argument("--out", type=Path, required=True, help="GeoJSON file to write (QuPath: File > Import objects)")
    return parser


def _segment(client: SlidesamClient, args: argparse.Namespace) -> None:
    if not args.click and args.box is None:
        raise SystemExit("give at least one --click or a --box")
    fov = FieldOfView(SlideImage(args.slide), *args.region, mpp=args.mpp, magnification=args.magnification, downsample=args.downsample)
    result = client.segment(fov, args.click, tuple(args.box) if args.box else None, model=args.model)
    measurements = {"SAM score": result.score, "Area px^2": result.area_px}
    if result.area_um2 is not None:
        measurements["Area µm^2"] = result.area_um2
    feature = annotation_feature(
        result.geometry, classification=args.classification, name=f"SAM {result.model_id}", measurements=measurements
    )
    write_geojson(args.out, feature_collection([feature]))
    print(f"{args.out}: {len(result.geometry.geoms)} part(s), area {result.area_px:.0f} px², score {result.score:.3f}, "
          f"model {result.model_id}, {result.timings.total_ms:.0f} ms on the server")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with SlidesamClient(args.server) as client:
        try:
            if args.command == "models":
                for model in client.list_models():
                    flags = " ".join(f for f, on in (("default", model.is_default), ("loaded", model.loaded), ("available", model.available)) if on)
                    print(f"{model.name:<12} {model.architecture:<6} {model.device:<7} {flags}")
            else:
                _segment(client, args)
        except ServerError as error:
            print(f"slidesam: the server refused: {error}", file=sys.stderr)
            raise SystemExit(2) from error


if __name__ == "__main__":
    main()
