"""The engine of a `slidesam preannotate --ray ADDRESS --in-process` actor: a slidesam server inside the actor's own
process, on a loopback port, for the actor alone (anonymous, no TLS, no upload rate limit), on the devices Ray gave
the actor (its GPU; the CPU threads of its reservation where there is none).

`slidesam.qupath_bridge.ray_batch` names `start_engine` by import path and imports it inside the Ray worker, so the
bridge never imports the server and its driver process never loads torch.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

import torch

from slidesam.lab.local_server import LOOPBACK
from slidesam.server.edge.app import ServerThread
from slidesam.server.edge.config import ENV_PREFIX, load_config

PRIVATE = {"tokens_file": None, "tls_cert": None, "tls_key": None, "tls_client_ca": None, "metrics_port": None,
           "upload_mb_per_minute": float(2**30)}
"""Settings an actor's own engine never uses: only the actor reaches it."""


def start_engine(config_file: str | None, slide_root: str | None) -> ServerThread:
    """A server on 127.0.0.1 (a port the system picks) with the settings of config_file (TOML as `slidesam-server
    serve --config`; SLIDESAM_* variables apply too) and slide_root (else the settings', else an empty folder:
    every region is then uploaded by the actor). Returns once the default model is loaded and the server serves."""
    file = Path(config_file) if config_file else None
    in_settings = (file is not None and "slide_root" in tomllib.loads(file.read_text())) or f"{ENV_PREFIX}SLIDE_ROOT" in os.environ
    if slide_root is None and not in_settings:
        slide_root = tempfile.mkdtemp(prefix="slidesam-engine-")
    config = load_config(file, {"slide_root": slide_root, "host": LOOPBACK, "port": 0, "allow_anonymous": True})
    config = config.model_copy(update={**PRIVATE, "max_pending_per_user": config.max_pending})
    if config.threads:
        torch.set_num_threads(config.threads)
    return ServerThread(config)
