"""`slidesam-server precompute`: encode slides' tissue on the fixed window grid into a disk embedding store."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from slidesam.server.engine.embedding_store import EmbeddingStore
from slidesam.server.engine.precompute import precompute
from slidesam.server.errors import InvalidArgument
from slidesam.server.models.models_cli import add_model_options, registry_from
from slidesam.server.models.precision import ENCODER_PRECISIONS, PRECISION_HELP
from slidesam.server.models.registry import DEFAULT_MODEL
from slidesam.server.slides.regions import Resolution


def add_precompute_command(commands: argparse._SubParsersAction) -> None:
    """Adds `precompute` to slidesam-server's subcommands."""
    precompute_parser = commands.add_parser(
        "precompute", help="encode slides' tissue on the fixed window grid into a disk embedding store",
        description="Finds tissue on a thumbnail of each slide, then encodes every tissue window of the slide's fixed "
                    "grid of overlapping encoder windows (1024 px, 256 shared) at the resolution asked for, into "
                    "--store: one file per window, keyed by model and checkpoint hash, slide identity and grid. A server "
                    "given the same store reads these windows instead of encoding them. The store keeps within "
                    "--store-gb, evicting the least recently used windows. A killed run resumes where it stopped when "
                    "run again with the same arguments, and ends with the same bytes as an uninterrupted run.",
    )
    precompute_parser.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files (ids relative to --slide-root when given)")
    resolution = precompute_parser.add_mutually_exclusive_group(required=True)
    resolution.add_argument("--magnification", type=float, help="objective magnification of the grid, e.g. 5 or 10")
    resolution.add_argument("--mpp", type=float, help="or its resolution in µm/px")
    resolution.add_argument("--downsample", type=float, help="or its level-0 downsample")
    precompute_parser.add_argument("--model", default=DEFAULT_MODEL, help="model whose embeddings are stored (default mobile_sam)")
    precompute_parser.add_argument("--store", type=Path, required=True, help="embedding store directory (created when new)")
    precompute_parser.add_argument("--store-gb", type=float, default=20.0, help="disk budget of the whole store in GiB (default 20)")
    precompute_parser.add_argument("--batch-size", type=int, default=None, help="windows per encoder pass (default 8 on a GPU, 1 on the CPU)")
    precompute_parser.add_argument("--slide-root", type=Path, default=None, help="read SLIDE ids inside this directory only, as the server does")
    precompute_parser.add_argument("--dtype", choices=["float16", "float32"], default="float16", help="stored precision (default float16: half the bytes)")
    precompute_parser.add_argument("--device", default="auto", help="torch device: auto (CUDA when present), cpu, cuda ...")
    precompute_parser.add_argument("--compile", action="store_true",
                                   help="torch.compile the encoder's blocks first: faster windows after a warm-up "
                                        "(about a minute on a CPU); pays off on large runs (scripts/bench_models measures both)")
    precompute_parser.add_argument("--encoder-precision", choices=list(ENCODER_PRECISIONS), default="float32",
                                   help=PRECISION_HELP + "; a server reads these windows only at the same precision")
    add_model_options(precompute_parser)
    precompute_parser.set_defaults(run=run_precompute)


def run_precompute(args: argparse.Namespace) -> None:
    """Encodes the slides' tissue windows into the store and prints what was done."""
    if not (math.isfinite(args.store_gb) and args.store_gb > 0):
        raise InvalidArgument(f"--store-gb must be a positive number of GiB, got {args.store_gb:g}")
    kind = next(kind for kind in ("magnification", "mpp", "downsample") if getattr(args, kind) is not None)
    registry = registry_from(args)
    store = EmbeddingStore(args.store, int(args.store_gb * 2**30))
    report = precompute(args.slides, registry, args.model, Resolution(kind, getattr(args, kind)), store,
                        args.batch_size, args.slide_root, getattr(torch, args.dtype), compile_encoder_blocks=args.compile)
    stats = store.stats()
    print(
        f"{report.encoded} windows encoded ({report.windows_per_second:.2f}/s on {report.device}), "
        f"{sum(s.present for s in report.slides)} already present, {sum(s.background for s in report.slides)} "
        f"background skipped, {report.evicted} evicted; {args.store}: {stats.entries} windows, "
        f"{stats.bytes / 2**30:.3f} of {stats.budget_bytes / 2**30:.3f} GiB"
    )
