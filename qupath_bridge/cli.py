"""`slidesam`: the pathologist-side command line (talks to a slidesam server, never imports torch).

Exit codes: 0 done; 1 some image (for `refine`: some annotation) failed (each is reported, the others
went on); 2 bad input (arguments, project, prompt file, class); 3 no server answered.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from functools import partial
from pathlib import Path
from typing import Sequence

from slidesam.qupath_bridge.client import (
    WINDOW_MODES, Click, ConnectionLost, FieldOfView, PolygonOptions, ServerError, SlideImage, SlidesamClient, TlsSettings,
)
from slidesam.qupath_bridge.fov import FovSettings
from slidesam.qupath_bridge.geojson import annotation_feature, feature_collection, write_geojson
from slidesam.qupath_bridge.geojson_project import GeoJSONProject
from slidesam.qupath_bridge.pixels import LocalSlides, PixelSource, SlideMap, SlideUnreadable
from slidesam.qupath_bridge.preannotate import preannotate
from slidesam.qupath_bridge.project import ImageEntry, PathClass, ProjectError, open_project
from slidesam.qupath_bridge.prompt_sources import GeoJSONPrompts, Grid, PromptSourceError, TissueBoxes
from slidesam.qupath_bridge.prompts import PromptClasses
from slidesam.qupath_bridge.refine import RefineReport, RefineSettings, refine
from slidesam.qupath_bridge.segmenter import Segmenter
from slidesam.qupath_bridge.sync import ImageReport, Settings, sync
from slidesam.qupath_bridge.tissue import TissueSettings
from slidesam.qupath_bridge.transfer import export_geojson, import_geojson
from slidesam.qupath_bridge.watch import WatchLimits, watch

EXIT_IMAGE_FAILED, EXIT_BAD_INPUT, EXIT_NO_SERVER = 1, 2, 3


class _BadInput(Exception):
    """Arguments that cannot work; the message says which."""


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


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


# ------------------------------------------------------------------------------------------------
# Parser


def _resolution(parser: argparse.ArgumentParser) -> None:
    resolution = parser.add_mutually_exclusive_group()
    resolution.add_argument("--mpp", type=_positive, help="read at this many µm per pixel")
    resolution.add_argument("--magnification", type=_positive, help="read at this objective magnification, e.g. 5 or 10")
    resolution.add_argument("--downsample", type=_positive, help="read at this downsample of level 0")


def _windows(parser, align: bool = True) -> None:
    parser.add_argument("--windows", choices=list(WINDOW_MODES), default="auto",
                        help="a field of view larger than SAM's 1024-px window at that resolution: auto (default: "
                             "multi for such regions), multi (coarse to fine over windows at the resolution asked for) "
                             "or single (shrunk into one window: coarser than asked for, and the result says so)")
    if align:
        parser.add_argument("--align-to-grid", action="store_true",
                            help="let the server move a field of view that fits one window onto its embedding grid, "
                                 "so a precomputed slide serves it without an encode")


def _progress_option() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="progress bars on stderr (default: when stderr is a terminal)")
    return parent


def _server_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--server", default=argparse.SUPPRESS, help="HOST:PORT of the slidesam server")
    parent.add_argument("--connect-timeout", type=_positive, default=10.0, help="seconds to wait for the server (default 10)")
    _add_credentials(parent, argparse.SUPPRESS)
    return parent


def _add_credentials(parser: argparse.ArgumentParser, default) -> None:
    parser.add_argument("--token", default=default, help="your token from the server's admin (default: $SLIDESAM_TOKEN)")
    parser.add_argument("--tls", action="store_true", default=default or False, help="connect over TLS (the system's CAs)")
    parser.add_argument("--tls-ca", type=Path, default=default, help="PEM of the CA that signed the server's certificate (implies --tls)")
    parser.add_argument("--tls-client-cert", type=Path, default=default, help="this client's PEM certificate, for mutual TLS")
    parser.add_argument("--tls-client-key", type=Path, default=default, help="its PEM private key")


def _connect(args: argparse.Namespace) -> SlidesamClient:
    tls = None
    if args.tls or args.tls_ca or args.tls_client_cert:
        tls = TlsSettings(args.tls_ca, args.tls_client_cert, args.tls_client_key)
    return SlidesamClient(args.server, token=args.token, tls=tls)


def _segmentation_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    prompts = parent.add_argument_group("prompt convention")
    prompts.add_argument("--positive-class", default="SAM positive", help="class of positive point prompts (default 'SAM positive')")
    prompts.add_argument("--negative-class", default="SAM negative", help="class of negative point prompts (default 'SAM negative')")
    prompts.add_argument("--box-class", default="SAM box", help="class of rectangle prompts (default 'SAM box')")
    prompts.add_argument("--target-class", default="Tumor", help="class of the result annotations (default Tumor)")
    fov = parent.add_argument_group("field of view (level-0 bounding box of a group's prompts, grown by the margin, at least the minimum size, inside the image)")
    fov.add_argument("--margin", type=float, default=0.25, help="added on every side, as a fraction of the prompts' longer extent (default 0.25)")
    fov.add_argument("--min-size", type=_positive, default=2048.0, help="smallest side in level-0 pixels (default 2048)")
    _resolution(fov)
    _windows(fov)
    model = parent.add_argument_group("model and polygons")
    model.add_argument("--model", default="", help="model name (default: the server's)")
    model.add_argument("--simplify-um", type=float, default=0.0, help="polygon simplification tolerance in µm (default none)")
    model.add_argument("--max-vertices", type=int, default=0, help="vertex budget per object (default: the server's)")
    pixels = parent.add_argument_group("pixels")
    pixels.add_argument("--slide-map", action="append", default=[], metavar="LOCAL_PREFIX=SERVER_PREFIX",
                        help="the server reads slides whose path starts with LOCAL_PREFIX itself, as SERVER_PREFIX + the rest "
                             "(repeatable); other slides are read here with OpenSlide and uploaded")
    parent.add_argument("--image", action="append", default=[], metavar="NAME", help="only this image (repeatable; default all)")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slidesam",
        description="Talk to a slidesam server from the pathologist's side: segment objects, sync QuPath projects, pre-annotate.",
    )
    parser.add_argument("--server", default="127.0.0.1:50051", help="HOST:PORT of the slidesam server")
    _add_credentials(parser, None)
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    commands = parser.add_subparsers(dest="command", required=True)
    server, segmentation, progress = _server_options(), _segmentation_options(), _progress_option()

    commands.add_parser("models", help="list the server's models", parents=[server])

    segment = commands.add_parser(
        "segment", help="segment one object from clicks and/or a box and write it as QuPath GeoJSON",
        description="Coordinates are QuPath's: level-0 pixels, origin top-left.", parents=[server],
    )
    segment.add_argument("--slide", required=True, help="slide id, relative to the server's slide root")
    segment.add_argument("--region", required=True, type=lambda t: _numbers(t, 4, "--region"), metavar="X,Y,W,H",
                         help="level-0 field of view")
    _resolution(segment)
    _windows(segment)
    segment.add_argument("--click", action="append", type=_click, default=[], metavar="X,Y[,+|-]",
                         help="a click; '+' (default) inside the object, '-' outside (repeatable, in order)")
    segment.add_argument("--box", type=lambda t: _numbers(t, 4, "--box"), metavar="X,Y,W,H", help="a box prompt")
    segment.add_argument("--model", default="", help="model name (default: the server's)")
    segment.add_argument("--classification", default="Tumor", help="QuPath class of the annotation (default Tumor)")
    segment.add_argument("--out", type=Path, required=True, help="GeoJSON file to write (QuPath: File > Import objects)")

    init = commands.add_parser(
        "init", help="create a GeoJSON project (manifest) listing slides",
        description="Writes DIR/slidesam-project.json naming each slide (by file name), its path and size. "
                    "Annotations then live in DIR/<image>.geojson, as QuPath exports and imports them.",
    )
    init.add_argument("folder", type=Path, metavar="DIR")
    init.add_argument("slides", type=Path, nargs="+", metavar="SLIDE")

    sync = commands.add_parser(
        "sync", parents=[server, segmentation, progress], help="turn prompt annotations into result polygons, once or on every save",
        description="Finds prompt groups (Points annotations of the positive/negative classes and a rectangle of the box "
                    "class, grouped by annotation name; unnamed prompts form one group per image) that have no result "
                    "yet or changed since it, sends their clicks in order through an interactive session, and writes "
                    "each polygon as an annotation of the target class named 'SAM: <group>', replacing the group's "
                    "earlier result.",
    )
    sync.add_argument("project", type=Path, metavar="PROJECT", help="QuPath project (.qpproj or its folder) or GeoJSON project folder")
    sync.add_argument("--watch", action="store_true", help="keep watching the project and sync after every save")
    sync.add_argument("--interval", type=_positive, default=1.0, help="--watch: seconds between polls (default 1)")
    sync.add_argument("--max-cycles", type=int, help="--watch: stop after this many syncs")
    sync.add_argument("--timeout", type=_positive, help="--watch: stop after this many seconds")

    preannotate = commands.add_parser(
        "preannotate", parents=[server, segmentation, progress], help="pre-annotate every image in batch (resumable, parallel)",
        description="Prompts per image from tissue detection (one box per tissue piece), a grid of points over tissue "
                    "(one object per tile) or a GeoJSON file; results are written image by image. A re-run skips "
                    "finished images (state in PROJECT/.slidesam/preannotate.json); a failing image is reported and "
                    "the rest go on.",
    )
    preannotate.add_argument("project", type=Path, metavar="PROJECT")
    preannotate.add_argument("--prompts", nargs="+", required=True, metavar="KIND",
                             help="tissue-boxes | grid | geojson FILE (a file for every image, or a folder of <image>.geojson)")
    preannotate.add_argument("--workers", type=int, default=4, help="requests in flight at once (default 4)")
    preannotate.add_argument("--grid-spacing", type=_positive, default=2048.0, help="grid: tile side in level-0 pixels (default 2048)")
    preannotate.add_argument("--min-tissue", type=float, default=0.25, help="grid: least tissue fraction of a tile (default 0.25)")
    preannotate.add_argument("--min-tissue-area", type=float, default=0.001,
                             help="smallest tissue piece as a fraction of the slide area (default 0.001)")

    refine_ = commands.add_parser(
        "refine", parents=[server, progress], help="refine existing outlines of one class with SAM, in place",
        description="Every annotation of the class whose geometry is a polygon (e.g. an outline drawn at low zoom) is "
                    "the prompt: SAM sees its bounding box grown by the margin, at the resolution asked for, and its "
                    "answer replaces the outline (same id, class and name; the original goes into the description as "
                    "provenance). The project is backed up before the first write. A re-run changes nothing; an outline "
                    "edited after its refine is skipped with a warning (--again refines it anew). Points, lines and "
                    "self-intersecting polygons are reported and left as they are.",
    )
    refine_.add_argument("project", type=Path, metavar="PROJECT", help="QuPath project (.qpproj or its folder) or GeoJSON project folder")
    refine_.add_argument("--class", dest="refine_class", required=True, metavar="CLASS", help="the class of the outlines to refine")
    view = refine_.add_argument_group("field of view (the outline's level-0 bounding box grown by the margin, at least the minimum size, inside the image)")
    view.add_argument("--margin", type=float, default=0.25, help="added on every side, as a fraction of the outline's longer extent (default 0.25)")
    view.add_argument("--min-size", type=_positive, default=1024.0, help="smallest side in level-0 pixels (default 1024)")
    _resolution(view)
    _windows(view, align=False)
    refine_model = refine_.add_argument_group("model and polygons")
    refine_model.add_argument("--model", default="", help="model name (default: the server's)")
    refine_model.add_argument("--simplify-um", type=float, default=0.0, help="polygon simplification tolerance in µm (default none)")
    refine_model.add_argument("--max-vertices", type=int, default=0, help="vertex budget per object (default: the server's)")
    refine_.add_argument("--slide-map", action="append", default=[], metavar="LOCAL_PREFIX=SERVER_PREFIX",
                         help="as for sync: slides the server reads itself; others are read here and uploaded")
    refine_.add_argument("--image", action="append", default=[], metavar="NAME", help="only this image (repeatable; default all)")
    refine_.add_argument("--again", action="store_true", help="also refine outlines edited after their refine (the edit becomes the new original)")
    refine_.add_argument("--dry-run", action="store_true", help="say what would be refined; contact no server, write nothing")

    export = commands.add_parser("export", parents=[progress], help="write a project's annotations as a GeoJSON project",
                                 description="Writes DIR/slidesam-project.json and DIR/<image>.geojson for every image.")
    export.add_argument("project", type=Path, metavar="PROJECT")
    export.add_argument("--geojson", type=Path, required=True, metavar="DIR")

    imports = commands.add_parser("import", parents=[progress], help="read annotations from QuPath GeoJSON into a project",
                                  description="From a GeoJSON project, or a folder of <image>.geojson files; matched by UUID.")
    imports.add_argument("project", type=Path, metavar="PROJECT")
    imports.add_argument("--geojson", type=Path, required=True, metavar="DIR")
    imports.add_argument("--replace", action="store_true", help="also remove annotations that the GeoJSON lacks")
    return parser


# ------------------------------------------------------------------------------------------------
# Commands


def _segment(client: SlidesamClient, args: argparse.Namespace) -> None:
    if not args.click and args.box is None:
        raise SystemExit("give at least one --click or a --box")
    fov = FieldOfView(SlideImage(args.slide), *args.region, mpp=args.mpp, magnification=args.magnification,
                      downsample=args.downsample, windows=args.windows, align_to_grid=args.align_to_grid)
    result = client.segment(fov, args.click, tuple(args.box) if args.box else None, model=args.model)
    if result.downsampled:
        print(f"slidesam: warning: {result.resolution.describe_downsampling(args.magnification)}", file=sys.stderr)
    measurements = {"SAM score": result.score, "Area px^2": result.area_px}
    if result.area_um2 is not None:
        measurements["Area µm^2"] = result.area_um2
    feature = annotation_feature(
        result.geometry, classification=args.classification, name=f"SAM {result.model_id}", measurements=measurements
    )
    write_geojson(args.out, feature_collection([feature]))
    print(f"{args.out}: {len(result.geometry.geoms)} part(s), area {result.area_px:.0f} px², score {result.score:.3f}, "
          f"model {result.model_id}, {result.timings.total_ms:.0f} ms on the server")


def _settings(args: argparse.Namespace) -> Settings:
    try:
        fov = FovSettings(args.margin, args.min_size, args.mpp, args.magnification, args.downsample, args.windows, args.align_to_grid)
    except ValueError as error:
        raise _BadInput(str(error)) from None
    if not args.target_class.strip():
        raise _BadInput("--target-class must not be empty")
    return Settings(
        classes=PromptClasses(args.positive_class, args.negative_class, args.box_class),
        target=PathClass(args.target_class),
        model=args.model,
        fov=fov,
        polygon=PolygonOptions(simplify_tolerance_um=args.simplify_um, max_vertices=args.max_vertices),
    )


def _segmenter(client: SlidesamClient, args: argparse.Namespace, settings: Settings) -> Segmenter:
    try:
        slide_map = SlideMap.parse(args.slide_map)
    except ValueError as error:
        raise _BadInput(str(error)) from None
    return Segmenter(client, PixelSource(slide_map, LocalSlides()), settings.fov, settings.model, settings.polygon, args.connect_timeout)


def _print_reports(reports: Sequence[ImageReport]) -> int:
    """Prints one line per image (and its messages); returns the exit code."""
    width = max([len(r.image) for r in reports] + [5])
    print(f"{'image':<{width}}  {'status':<9} {'regions':>7} {'objects':>7} {'seconds':>8}")
    for report in reports:
        print(f"{report.image:<{width}}  {report.status:<9} {report.regions:>7} {report.objects:>7} {report.seconds:>8.2f}")
        for message in report.messages:
            print(f"    {message}", file=sys.stderr if report.failed else sys.stdout)
    failed = sum(r.failed for r in reports)
    print(f"{len(reports)} image(s): {sum(r.status == 'updated' for r in reports)} updated, "
          f"{sum(r.status in ('unchanged', 'skipped') for r in reports)} unchanged, {failed} failed")
    return EXIT_IMAGE_FAILED if failed else 0


def _run_sync(client: SlidesamClient, args: argparse.Namespace) -> int:
    settings = _settings(args)
    segmenter = _segmenter(client, args, settings)
    opener = partial(open_project, args.project)
    project = opener()  # a project that cannot be opened is bad input, before any watching
    files = project.watched_files
    if not args.watch:
        project.close()
        return _print_reports(sync(opener, args.image, segmenter, settings, args.progress))
    codes = []

    def once() -> None:
        fresh = Segmenter(client, segmenter.pixels, settings.fov, settings.model, settings.polygon, args.connect_timeout)
        try:  # a new Segmenter each cycle: a server that was down may be back
            codes.append(_print_reports(sync(opener, args.image, fresh, settings, args.progress)))
        except (ProjectError, ConnectionLost) as error:
            print(f"slidesam: {error}; waiting for the next save", file=sys.stderr)
            codes.append(EXIT_IMAGE_FAILED)
        sys.stdout.flush()

    limits = WatchLimits(args.interval, args.max_cycles, args.timeout)
    print(f"watching {args.project} (every {args.interval:g} s; Ctrl-C stops)", flush=True)
    try:
        cycles = watch(files, once, limits, lambda: print("waiting for a save", flush=True))
    except KeyboardInterrupt:
        cycles = len(codes)
    print(f"stopped after {cycles} sync(s)")
    return codes[-1] if codes else 0


def _prompt_source(args: argparse.Namespace, settings: Settings):
    kind, *rest = args.prompts
    tissue = TissueSettings(min_area_fraction=args.min_tissue_area)
    if kind == "tissue-boxes" and not rest:
        return TissueBoxes(tissue)
    if kind == "grid" and not rest:
        return Grid(args.grid_spacing, args.min_tissue, tissue)
    if kind == "geojson" and len(rest) == 1:
        return GeoJSONPrompts(Path(rest[0]), settings.classes)
    raise _BadInput(f"--prompts expects tissue-boxes, grid or geojson FILE, got {' '.join(args.prompts)!r}")


def _run_preannotate(client: SlidesamClient, args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise _BadInput("--workers must be at least 1")
    settings = _settings(args)
    source = _prompt_source(args, settings)
    segmenter = _segmenter(client, args, settings)
    opener = partial(open_project, args.project)
    opener().close()
    return _print_reports(preannotate(opener, args.image, source, segmenter, settings, args.workers, args.progress))


def _run_refine(client: SlidesamClient, args: argparse.Namespace) -> int:
    if not args.refine_class.strip():
        raise _BadInput("--class must not be empty")
    try:
        fov = FovSettings(args.margin, args.min_size, args.mpp, args.magnification, args.downsample, args.windows)
        slide_map = SlideMap.parse(args.slide_map)
    except ValueError as error:
        raise _BadInput(str(error)) from None
    polygon = PolygonOptions(simplify_tolerance_um=args.simplify_um, max_vertices=args.max_vertices)
    segmenter = Segmenter(client, PixelSource(slide_map, LocalSlides()), fov, args.model, polygon, args.connect_timeout)
    settings = RefineSettings(args.refine_class, again=args.again, dry_run=args.dry_run)
    recorded = {"model": args.model, "fov": fov.to_json(), "polygon": dataclasses.asdict(polygon)}
    report = refine(partial(open_project, args.project), args.image, segmenter, settings, recorded, args.progress)
    return _print_refine(report, settings)


def _print_refine(report: RefineReport, settings: RefineSettings) -> int:
    """The summary on stdout (each problem was logged as a WARNING on stderr as it was found)."""
    if settings.dry_run:
        for name in report.refined:
            print(f"would refine {name}")
    print(f"{report.summary(settings.path_class, settings.dry_run)} ({report.seconds:.1f} s)")
    return EXIT_IMAGE_FAILED if report.failed else 0


def _run_init(args: argparse.Namespace) -> int:
    local = LocalSlides()
    images = []
    for slide in args.slides:
        width, height = local.size(slide)
        images.append(ImageEntry(slide.name, str(slide), slide, width, height))
    local.close()
    GeoJSONProject.create(args.folder, images)
    print(f"{args.folder}: a GeoJSON project with {len(images)} image(s)")
    return 0


def _run_transfer(args: argparse.Namespace) -> int:
    project = open_project(args.project)
    try:
        if args.command == "export":
            return _print_reports(export_geojson(project, args.geojson, args.progress))
        return _print_reports(import_geojson(project, args.geojson, args.replace, args.progress))
    finally:
        project.close()


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "init":
            raise SystemExit(_run_init(args))
        if args.command in ("export", "import"):
            raise SystemExit(_run_transfer(args))
        with _connect(args) as client:
            if args.command == "models":
                client.wait_ready(args.connect_timeout)
                for model in client.list_models():
                    flags = " ".join(f for f, on in (("default", model.is_default), ("loaded", model.loaded), ("available", model.available)) if on)
                    print(f"{model.name:<12} {model.architecture:<6} {model.device:<7} {flags}")
            elif args.command == "segment":
                client.wait_ready(args.connect_timeout)
                _segment(client, args)
            elif args.command == "sync":
                raise SystemExit(_run_sync(client, args))
            elif args.command == "refine":
                raise SystemExit(_run_refine(client, args))
            else:
                raise SystemExit(_run_preannotate(client, args))
    except ServerError as error:
        print(f"slidesam: the server refused: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from error
    except ConnectionLost as error:
        print(f"slidesam: {error}; is `slidesam-server serve` running there?", file=sys.stderr)
        raise SystemExit(EXIT_NO_SERVER) from error
    except (_BadInput, ProjectError, PromptSourceError, SlideUnreadable) as error:
        print(f"slidesam: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from error


if __name__ == "__main__":
    main()
