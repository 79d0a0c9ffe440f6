"""`slidesam-server tune`: the fine-tuning loop on a QuPath project in one command (lab/tune.py)."""

from __future__ import annotations

import argparse
from pathlib import Path

from slidesam.lab.evaluation.metrics import IOU_AT_CLICKS
from slidesam.lab.training.loop import TrainConfig
from slidesam.lab.training.scenarios import SCENARIOS
from slidesam.lab.tune import TuneResult, tune
from slidesam.qupath_bridge.pixels import LocalSlides, PixelSource, SlideMap
from slidesam.qupath_bridge.project import ProjectError
from slidesam.qupath_bridge.training_export import ExportSettings
from slidesam.server.models.models_cli import add_model_options, registry_from
from slidesam.server.models.registry import DEFAULT_MODEL


def add_tune_command(commands: argparse._SubParsersAction) -> None:
    """Adds `tune` to slidesam-server's subcommands."""
    parser = commands.add_parser(
        "tune", help="fine-tune on a QuPath project: export, train, register, evaluate, compare",
        description="Exports the project's reviewed annotations of --classes (hand-drawn, accepted and corrected "
                    "results, negatives around them; split by image), fine-tunes --base on the training images, "
                    "registers the tuned model in --model-dir (where `serve` finds it by name), evaluates base and "
                    "tuned on the held-out images and writes their side-by-side report. OUT must not exist: "
                    "OUT/data (the export), OUT/train (checkpoints, metrics), OUT/eval/MODEL, OUT/compare.",
    )
    parser.add_argument("--project", type=Path, required=True, help="QuPath project (.qpproj or its folder) or GeoJSON project folder")
    parser.add_argument("--classes", required=True, type=lambda t: tuple(c.strip() for c in t.split(",")), metavar="CLASS[,CLASS...]",
                        help="the classes to learn (hand-drawn annotations of them, and results slidesam wrote as them)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="a new folder for everything the run writes")
    parser.add_argument("--accepted-class", metavar="CLASS", help="reclassifying a result to this class accepts it")
    resolution = parser.add_mutually_exclusive_group()
    resolution.add_argument("--magnification", type=float, help="cut patches at this magnification (default x10)")
    resolution.add_argument("--mpp", type=float, help="cut patches at this many µm per pixel")
    parser.add_argument("--negatives-per-object", type=int, default=1, help="negative patches around each object (default 1)")
    parser.add_argument("--validation-fraction", type=float, default=0.25, help="share of the images held out for evaluation (default 0.25)")
    parser.add_argument("--slide-map", action="append", default=[], metavar="LOCAL_PREFIX=SERVER_PREFIX",
                        help="as for `slidesam sync`: a patch's slide id on the server, for slides under LOCAL_PREFIX")
    parser.add_argument("--base", default=DEFAULT_MODEL, help="model to fine-tune (default mobile_sam)")
    parser.add_argument("--scenario", default="md", choices=list(SCENARIOS),
                        help="default md, the decoder only (the paper's cheap scenario); " + "; ".join(f"{k}: {v}" for k, v in SCENARIOS.items()))
    parser.add_argument("--name", default="", help="name of the tuned model (default BASE-SCENARIO-DATAHASH)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=1e-5, help="AdamW learning rate (default 1e-5)")
    parser.add_argument("--augmentations", type=int, default=4, help="fixed augmentations per patch when the encoder is frozen")
    parser.add_argument("--max-clicks", type=int, default=20, help="simulated clicks per held-out object (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the export's split and negatives, and training")
    parser.add_argument("--device", default="auto")
    add_model_options(parser)
    parser.set_defaults(run=run_tune)


def run_tune(args: argparse.Namespace) -> None:
    """Runs the loop and prints base against tuned, and how to serve the tuned model."""
    try:
        settings = ExportSettings(args.classes, args.accepted_class, args.magnification, args.mpp,
                                  negatives_per_object=args.negatives_per_object,
                                  validation_fraction=args.validation_fraction, seed=args.seed)
        slide_map = SlideMap.parse(args.slide_map)
    except ValueError as error:
        raise SystemExit(f"slidesam-server tune: {error}") from error
    if not (args.validation_fraction > 0 and args.epochs > 0 and args.max_clicks > 0):
        raise SystemExit("slidesam-server tune: --validation-fraction, --epochs and --max-clicks must be positive "
                         "(the run evaluates on held-out images)")
    registry = registry_from(args)
    config = TrainConfig(args.scenario, args.epochs, args.batch_size, args.learning_rate,
                         augmentations_per_patch=args.augmentations, seed=args.seed)
    local = LocalSlides()
    try:
        result = tune(registry, args.base, args.project, settings, PixelSource(slide_map, local), args.out, config,
                      args.max_clicks, args.name)
    except (ValueError, ProjectError) as error:
        raise SystemExit(f"slidesam-server tune: {error}") from error
    finally:
        local.close()
    print("\n".join(summary_lines(result, args.max_clicks, registry.model_dir, args.project)))


def summary_lines(result: TuneResult, max_clicks: int, model_dir: Path, project: Path) -> list[str]:
    """The export, base against tuned on the held-out images, and the commands that use the tuned model."""
    ks = [k for k in IOU_AT_CLICKS if k <= max_clicks]
    columns = ["NoC@85", "NoC@90", *(f"IoU@{k}" for k in ks)]
    keys = ["noc@85", "noc@90", *(f"iou@{k}" for k in ks)]
    width = max(len(r["config"]["model"]) for r in (result.base, result.tuned))
    lines = [*result.export.lines(), "", f"held-out images, {result.base['summary']['samples']} object(s), "
             f"up to {max_clicks} clicks:", f"{'model':<{width}}  " + "  ".join(f"{c:>7}" for c in columns)]
    for results in (result.base, result.tuned):
        values = ["-" if results["summary"].get(k) is None else f"{results['summary'][k]:.3g}" for k in keys]
        lines.append(f"{results['config']['model']:<{width}}  " + "  ".join(f"{v:>7}" for v in values))
    return lines + [
        "",
        f"tuned model: {result.name} ({result.tuned['config']['model_id']}), registered as {result.checkpoint}",
        f"side by side: {', '.join(str(path) for path in result.compare)}",
        f"serve it: slidesam-server serve --model-dir {model_dir} --model {result.name} --slide-root SLIDES",
        f"use it:   slidesam sync {project} --server HOST:PORT --model {result.name}",
    ]
