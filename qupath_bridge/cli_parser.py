"""The `slidesam` command line's arguments: the commands, their options, and the options they share."""

from __future__ import annotations

import argparse
from pathlib import Path

from slidesam.v1.conventions import WINDOW_MODES
from slidesam.qupath_bridge.wire_requests import Click


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
# Options and commands


def _resolution(parser: argparse.ArgumentParser) -> None:
    resolution = parser.add_mutually_exclusive_group()
    resolution.add_argument("--mpp", type=_positive, help="read at this many µm per pixel")
    resolution.add_argument("--magnification", type=_positive, help="read at this objective magnification, e.g. 5 or 10")
    resolution.add_argument("--downsample", type=_positive, help="read at this downsample of level 0")


def _windows(parser: argparse.ArgumentParser, align: bool = True) -> None:
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


def _add_credentials(parser: argparse.ArgumentParser, default: str | None) -> None:
    """default: None on the main parser, argparse.SUPPRESS on a command's (so either place may give them)."""
    parser.add_argument("--token", default=default, help="your token from the server's admin (default: $SLIDESAM_TOKEN)")
    parser.add_argument("--tls", action="store_true", default=default or False, help="connect over TLS (the system's CAs)")
    parser.add_argument("--tls-ca", type=Path, default=default, help="PEM of the CA that signed the server's certificate (implies --tls)")
    parser.add_argument("--tls-client-cert", type=Path, default=default, help="this client's PEM certificate, for mutual TLS")
    parser.add_argument("--tls-client-key", type=Path, default=default, help="its PEM private key")


def _model_and_polygons(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("model and polygons")
    model.add_argument("--model", default="", help="model name (default: the server's)")
    model.add_argument("--simplify-um", type=float, default=0.0, help="polygon simplification tolerance in µm (default none)")
    model.add_argument("--max-vertices", type=int, default=0, help="vertex budget per object (default: the server's)")


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
    _model_and_polygons(parent)
    pixels = parent.add_argument_group("pixels")
    pixels.add_argument("--slide-map", action="append", default=[], metavar="LOCAL_PREFIX=SERVER_PREFIX",
                        help="the server reads slides whose path starts with LOCAL_PREFIX itself, as SERVER_PREFIX + the rest "
                             "(repeatable); other slides are read here with OpenSlide and uploaded")
    parent.add_argument("--image", action="append", default=[], metavar="NAME", help="only this image (repeatable; default all)")
    return parent


def _export_training(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", type=Path, metavar="PROJECT", help="QuPath project (.qpproj or its folder) or GeoJSON project folder")
    parser.add_argument("--classes", required=True, type=lambda t: tuple(c.strip() for c in t.split(",")), metavar="CLASS[,CLASS...]",
                        help="the classes to export (hand-drawn annotations of them, and results slidesam wrote as them)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new folder to write (it must not exist)")
    parser.add_argument("--accepted-class", metavar="CLASS",
                        help="reclassifying a result to this class accepts it (it is exported as the class slidesam wrote)")
    _resolution(parser)
    parser.add_argument("--context", type=float, default=0.25, help="added around each object on every side, as a fraction of its longer side (default 0.25)")
    parser.add_argument("--negatives-per-object", type=int, default=1, help="negative patches from the band around each object (default 1)")
    parser.add_argument("--validation-fraction", type=float, default=0.25, help="share of the images for validation (default 0.25; 0: all train)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the split and the negatives (default 0)")
    parser.add_argument("--slide-map", action="append", default=[], metavar="LOCAL_PREFIX=SERVER_PREFIX",
                        help="as for sync: a sample's slide id on the server (its JSON's 'slide'), for slides under LOCAL_PREFIX")
    parser.add_argument("--image", action="append", default=[], metavar="NAME", help="only this image (repeatable; default all)")


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
    cluster = preannotate.add_argument_group("Ray cluster (the ray extra: pip install 'slidesam[ray]')")
    cluster.add_argument("--ray", metavar="ADDRESS", help="spread the requests over the Ray cluster at ADDRESS (HOST:PORT "
                         "of its head, ray://HOST:10001, or auto); this process still writes every file")
    cluster.add_argument("--in-process", action="store_true",
                         help="with --ray: run the engine on Ray actors (one per GPU of the cluster, else one) instead of --server")
    cluster.add_argument("--engines", type=int, metavar="N", help="--in-process: engine actors (default: one per GPU, else 1)")
    cluster.add_argument("--engine-config", metavar="FILE",
                         help="--in-process: the engines' settings, TOML as for slidesam-server serve --config (read on each node)")
    cluster.add_argument("--slide-root", metavar="DIR",
                         help="--in-process: where the engines find the slide ids --slide-map makes (on each node)")
    cluster.add_argument("--retries", type=int, default=3, metavar="N", help="times a request runs again when its Ray worker dies (default 3)")

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
    _model_and_polygons(refine_)
    refine_.add_argument("--slide-map", action="append", default=[], metavar="LOCAL_PREFIX=SERVER_PREFIX",
                         help="as for sync: slides the server reads itself; others are read here and uploaded")
    refine_.add_argument("--image", action="append", default=[], metavar="NAME", help="only this image (repeatable; default all)")
    refine_.add_argument("--again", action="store_true", help="also refine outlines edited after their refine (the edit becomes the new original)")
    refine_.add_argument("--dry-run", action="store_true", help="say what would be refined; contact no server, write nothing")

    export = commands.add_parser("export", parents=[progress], help="write a project's annotations as a GeoJSON project",
                                 description="Writes DIR/slidesam-project.json and DIR/<image>.geojson for every image.")
    export.add_argument("project", type=Path, metavar="PROJECT")
    export.add_argument("--geojson", type=Path, required=True, metavar="DIR")

    _export_training(commands.add_parser(
        "export-training", parents=[progress], help="write the project's reviewed annotations as training patches",
        description="Patch/mask pairs (PNG, mask 0/255, JSON placement and provenance) cut around each annotation of the "
                    "classes, with context, tiled when larger than a 1024-px window, into DIR/train and DIR/validation "
                    "(split by image) with DIR/manifest.json. Exported: annotations drawn by hand; slidesam results the "
                    "user accepted (locked, or reclassified to --accepted-class or to another of the classes); results "
                    "the user corrected (their final geometry); negatives from the band around each object. Unreviewed "
                    "results are skipped. Resolution: x10 unless one of --magnification, --mpp, --downsample is given.",
    ))

    imports = commands.add_parser("import", parents=[progress], help="read annotations from QuPath GeoJSON into a project",
                                  description="From a GeoJSON project, or a folder of <image>.geojson files; matched by UUID.")
    imports.add_argument("project", type=Path, metavar="PROJECT")
    imports.add_argument("--geojson", type=Path, required=True, metavar="DIR")
    imports.add_argument("--replace", action="store_true", help="also remove annotations that the GeoJSON lacks")
    return parser
