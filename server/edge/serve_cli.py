"""`slidesam-server serve`: its options, the settings they make (defaults, then --config, then SLIDESAM_*
environment variables, then the flags given), and running the server until SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import torch

from slidesam.server.edge.app import serve_forever
from slidesam.server.edge.config import ConfigError, ServerConfig, load_config
from slidesam.server.edge.logs import configure_logging
from slidesam.server.engine.strategies import STRATEGIES
from slidesam.server.models.models_cli import add_model_options, checkpoints_from
from slidesam.server.models.precision import ENCODER_PRECISIONS, PRECISION_HELP


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    """Adds `serve` to slidesam-server's subcommands."""
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
    capacity.add_argument("--encoder-precision", choices=list(ENCODER_PRECISIONS), default=S, help=PRECISION_HELP)
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
    add_model_options(serve)
    serve.set_defaults(run=run_serve)


SERVE_FLAGS = {
    "slide_root", "host", "port", "default_model", "device", "threads", "preload", "tokens_file", "allow_anonymous",
    "tls_cert", "tls_key", "tls_client_ca", "max_streams_per_user", "upload_mb_per_minute", "cache_mb", "cache_dtype", "encoder_precision",
    "upload_mb", "decode_mb", "decode_workers", "decodes_per_user", "max_stream_minutes", "embedding_store", "store_gb", "max_object_mpixels", "max_step_encodes", "max_message_mb", "session_idle_seconds", "max_pending", "max_pending_per_user", "max_batch",
    "max_vertices", "strategy", "metrics_port", "metrics_host", "drain_seconds", "grace_seconds", "log_format", "model_dir",
}


def serve_config(args: argparse.Namespace) -> ServerConfig:
    """The serve settings from --config, SLIDESAM_* and the flags actually given."""
    flags = {name: value for name, value in vars(args).items() if name in SERVE_FLAGS}
    if args.log_level is not None:
        flags["log_level"] = args.log_level
    checkpoints = checkpoints_from(args)
    if checkpoints:
        flags["checkpoints"] = checkpoints
    try:
        config = load_config(args.config, flags)
    except ConfigError as error:
        raise SystemExit(f"slidesam-server serve: {error}") from error
    if not config.slide_root.is_dir():
        raise SystemExit(f"slidesam-server serve: slide root {config.slide_root} is not a directory")
    return config


def run_serve(args: argparse.Namespace) -> None:
    """Serves with the settings the arguments make, until SIGTERM."""
    config = serve_config(args)
    configure_logging(config.log_level, config.log_format)
    if config.threads:
        torch.set_num_threads(config.threads)
    asyncio.run(serve_forever(config))
