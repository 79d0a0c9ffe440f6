"""`slidesam-server`: the composition root of the server's command line. Each command lives with what
it drives (serve and tokens with the edge, models with the models, precompute with the engine, eval,
train and eval-data in the lab); this module assembles them and runs the one asked for."""

from __future__ import annotations

import argparse
import sys

from slidesam.lab.cli import add_lab_commands
from slidesam.server.edge.logs import configure_logging
from slidesam.server.edge.serve_cli import add_serve_command
from slidesam.server.edge.tokens_cli import add_token_commands
from slidesam.server.engine.precompute_cli import add_precompute_command
from slidesam.server.errors import SlidesamError
from slidesam.server.models.models_cli import add_models_commands


def build_parser() -> argparse.ArgumentParser:
    """Every command of slidesam-server; each sets `run`, the function that carries it out."""
    parser = argparse.ArgumentParser(
        prog="slidesam-server",
        description="Segment Anything for whole-slide images: a gRPC server that turns clicks into polygons.",
    )
    parser.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="default INFO")
    commands = parser.add_subparsers(dest="command", required=True)
    add_serve_command(commands)
    add_token_commands(commands)
    add_models_commands(commands)
    add_lab_commands(commands)
    add_precompute_command(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level or "INFO")
    try:
        code = args.run(args)
    except SlidesamError as error:
        print(f"slidesam-server: {error}", file=sys.stderr)
        raise SystemExit(2) from error
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()
