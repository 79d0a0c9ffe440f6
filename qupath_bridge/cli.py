"""`slidesam`: the pathologist-side command line (talks to a slidesam server, never imports torch): what
each command does with its arguments (`cli_parser` defines them).

Exit codes: 0 done; 1 some image (for `refine`: some annotation) failed (each is reported, the others
went on); 2 bad input (arguments, project, prompt file, class); 3 no server answered.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from slidesam.qupath_bridge.cli_parser import build_parser
from slidesam.qupath_bridge.client import TOKEN_ENV, SlidesamClient
from slidesam.qupath_bridge.errors import ConnectionLost, ServerError
from slidesam.qupath_bridge.fov import FovSettings
from slidesam.qupath_bridge.geojson import annotation_feature, feature_collection, write_geojson
from slidesam.qupath_bridge.geojson_project import GeoJSONProject
from slidesam.qupath_bridge.pixels import LocalSlides, PixelSource, SlideMap, SlideUnreadable
from slidesam.qupath_bridge.preannotate import preannotate
from slidesam.qupath_bridge.project import ImageEntry, PathClass, ProjectError
from slidesam.qupath_bridge.project_backends import open_project
from slidesam.qupath_bridge.prompt_sources import GeoJSONPrompts, Grid, PromptSourceError, TissueBoxes
from slidesam.qupath_bridge.prompts import PromptClasses
from slidesam.qupath_bridge.refine import RefineReport, RefineSettings, refine
from slidesam.qupath_bridge.segmenter import Segmenter
from slidesam.qupath_bridge.sync import ImageReport, Settings, sync
from slidesam.qupath_bridge.tissue import TissueSettings
from slidesam.qupath_bridge.training_export import ExportError, ExportSettings, check_new_folder, export_training
from slidesam.qupath_bridge.transfer import export_geojson, import_geojson
from slidesam.qupath_bridge.tls import TlsSettings
from slidesam.qupath_bridge.watch import WatchLimits, watch
from slidesam.qupath_bridge.wire_requests import FieldOfView, PolygonOptions, SlideImage

if TYPE_CHECKING:
    from slidesam.qupath_bridge.ray_batch import RayRegions

EXIT_IMAGE_FAILED, EXIT_BAD_INPUT, EXIT_NO_SERVER = 1, 2, 3


class _BadInput(Exception):
    """Arguments that cannot work; the message says which."""


def _tls(args: argparse.Namespace) -> TlsSettings | None:
    if args.tls or args.tls_ca or args.tls_client_cert:
        return TlsSettings(args.tls_ca, args.tls_client_cert, args.tls_client_key)
    return None


def _connect(args: argparse.Namespace) -> SlidesamClient:
    return SlidesamClient(args.server, token=args.token, tls=_tls(args))


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
        polygon=_polygon_options(args),
    )


def _polygon_options(args: argparse.Namespace) -> PolygonOptions:
    return PolygonOptions(simplify_tolerance_um=args.simplify_um, max_vertices=args.max_vertices)


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
    if args.workers < 1 or args.retries < 0 or (args.engines is not None and args.engines < 1):
        raise _BadInput("--workers and --engines must be at least 1, --retries at least 0")
    if args.ray is None and (args.in_process or args.engines or args.engine_config or args.slide_root):
        raise _BadInput("--in-process, --engines, --engine-config and --slide-root run engines on a Ray cluster: give --ray ADDRESS")
    settings = _settings(args)
    source = _prompt_source(args, settings)
    segmenter = _segmenter(client, args, settings)
    opener = partial(open_project, args.project)
    opener().close()
    if args.ray is None:
        return _print_reports(preannotate(opener, args.image, source, segmenter, settings, args.workers, args.progress))
    try:
        runner = _ray_regions(args, settings, segmenter)
    except _NoCluster as error:  # nothing was written
        print(f"slidesam: {error}", file=sys.stderr)
        return EXIT_NO_SERVER
    try:
        return _print_reports(preannotate(opener, args.image, source, segmenter, settings, args.workers, args.progress, runner))
    finally:
        runner.close()


class _NoCluster(Exception):
    """The Ray cluster cannot run the batch (ray_batch.ClusterError)."""


def _ray_regions(args: argparse.Namespace, settings: Settings, segmenter: Segmenter) -> RayRegions:
    """The region runner of `preannotate --ray`, joined to the cluster (its engines started with --in-process)."""
    try:
        from slidesam.qupath_bridge import ray_batch
    except ImportError as error:
        raise _BadInput(f"--ray needs Ray on this machine: pip install 'slidesam[ray]' ({error})") from None
    if args.in_process and segmenter.pixels.slide_map.rules and args.slide_root is None and args.engine_config is None:
        raise _BadInput("--in-process with --slide-map needs --slide-root (or an --engine-config naming slide_root): "
                        "where the engines find the slide ids")
    worker = ray_batch.WorkerSettings(args.server, args.token or os.environ.get(TOKEN_ENV), _tls(args), segmenter.pixels.slide_map,
                                      settings.fov, settings.model, settings.polygon, args.connect_timeout)
    engines = ray_batch.EngineSettings(args.engines, args.engine_config, args.slide_root) if args.in_process else None
    try:
        return ray_batch.RayRegions(args.ray, worker, engines=engines, retries=args.retries, workers=args.workers,
                                    timeout=args.connect_timeout)
    except ray_batch.ClusterError as error:
        raise _NoCluster(str(error)) from None


def _run_refine(client: SlidesamClient, args: argparse.Namespace) -> int:
    if not args.refine_class.strip():
        raise _BadInput("--class must not be empty")
    try:
        fov = FovSettings(args.margin, args.min_size, args.mpp, args.magnification, args.downsample, args.windows)
        slide_map = SlideMap.parse(args.slide_map)
    except ValueError as error:
        raise _BadInput(str(error)) from None
    polygon = _polygon_options(args)
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


def _run_export_training(args: argparse.Namespace) -> int:
    settings = ExportSettings(
        args.classes, args.accepted_class, args.magnification, args.mpp, args.downsample, args.context,
        negatives_per_object=args.negatives_per_object, validation_fraction=args.validation_fraction, seed=args.seed,
    )
    try:
        slide_map = SlideMap.parse(args.slide_map)
    except ValueError as error:
        raise _BadInput(str(error)) from None
    check_new_folder(args.out)  # before opening the project (QuPath's are slow to open)
    project, local = open_project(args.project, writable=False), LocalSlides()
    try:
        summary = export_training(project, settings, args.out, PixelSource(slide_map, local), args.image, args.progress)
    finally:
        project.close()
        local.close()
    print("\n".join(summary.lines()))
    return 0


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "init":
            raise SystemExit(_run_init(args))
        if args.command in ("export", "import"):
            raise SystemExit(_run_transfer(args))
        if args.command == "export-training":
            raise SystemExit(_run_export_training(args))
        with _connect(args) as client:
            if args.command == "models":
                client.wait_ready(args.connect_timeout)
                models = client.list_models()
                name_width = max((len(model.name) for model in models), default=0)
                architecture_width = max((len(model.architecture) for model in models), default=0)
                for model in models:
                    flags = " ".join(f for f, on in (("default", model.is_default), ("loaded", model.loaded), ("available", model.available)) if on)
                    print(f"{model.name:<{name_width}} {model.architecture:<{architecture_width}} {model.device:<7} {flags}")
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
    except (_BadInput, ExportError, ProjectError, PromptSourceError, SlideUnreadable) as error:
        print(f"slidesam: {error}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from error


if __name__ == "__main__":
    main()
