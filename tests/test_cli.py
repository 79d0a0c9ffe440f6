"""The two console scripts as a user runs them: --help, models, a real `serve` process, `segment` to GeoJSON."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from tests.conftest import SLIDE_ID

BIN = Path(sys.executable).parent


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=300, **kwargs)


HELP = [["slidesam-server", "--help"], ["slidesam-server", "serve", "--help"], ["slidesam-server", "models", "fetch", "--help"],
        ["slidesam", "--help"], ["slidesam", "segment", "--help"]]


def _run_key(item: pytest.Item):
    """A test's key in `started`: its --help command, or its name."""
    params = item.callspec.params if hasattr(item, "callspec") else {}
    return tuple(params["command"]) if "command" in params else item.originalname


@pytest.fixture(scope="module")
def started(request, tmp_path_factory):
    """The runs below that need neither a server nor a model, started side by side when the first of their tests
    begins: a `slidesam-server` process spends about 10 s of CPU importing torch, and together they use both cores.
    `started(key)` waits for one run (a test's own command, or its name) and gives it as subprocess.run would."""
    folder = tmp_path_factory.mktemp("cli")
    (folder / "empty").mkdir()
    runs = {tuple(command): command for command in HELP} | {
        "test_models_list_says_what_is_missing_and_how_to_get_it": ["slidesam-server", "models", "list", "--model-dir", str(folder / "empty")],
        "test_checkpoint_without_sha256_is_refused": ["slidesam-server", "models", "list", "--checkpoint", f"sam_vit_b={folder / 'x.pth'}"],
    }
    selected = {_run_key(item) for item in request.session.items if item.module is request.module}
    processes = {}
    for number, (key, args) in enumerate(item for item in runs.items() if item[0] in selected):
        with (folder / f"{number}.out").open("w") as out, (folder / f"{number}.err").open("w") as err:
            processes[key] = (subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=out, stderr=err, text=True), number)

    def result(key) -> subprocess.CompletedProcess:
        process, number = processes[key]
        process.wait(timeout=300)
        read = lambda suffix: (folder / f"{number}.{suffix}").read_text()  # noqa: E731
        return subprocess.CompletedProcess(process.args, process.returncode, read("out"), read("err"))

    yield result
    for process, _ in processes.values():
        process.kill()
        process.wait()


@pytest.mark.parametrize("command", HELP)
def test_help_explains(started, command):
    completed = started(tuple(command))
    assert completed.returncode == 0 and "usage:" in completed.stdout and len(completed.stdout) > 200


def test_models_list_says_what_is_missing_and_how_to_get_it(started):
    completed = started("test_models_list_says_what_is_missing_and_how_to_get_it")
    assert completed.returncode == 0, completed.stderr
    assert "mobile_sam" in completed.stdout and "missing" in completed.stdout
    assert "slidesam-server models fetch mobile_sam" in completed.stdout
    assert "--checkpoint sam_vit_b=PATH_OR_URL" in completed.stdout


def test_checkpoint_without_sha256_is_refused(started):
    completed = started("test_checkpoint_without_sha256_is_refused")
    assert completed.returncode != 0 and "--sha256" in completed.stderr


def test_segment_writes_qupath_geojson(server, synthetic_slide, tmp_path):
    out = tmp_path / "object.geojson"
    point = synthetic_slide.object_geometry.representative_point()
    minx, miny, maxx, maxy = synthetic_slide.object_geometry.bounds
    region = f"{minx - 500},{miny - 500},{maxx - minx + 1000},{maxy - miny + 1000}"
    completed = run("slidesam", "--server", server.address, "segment", "--slide", SLIDE_ID, "--region", region,
                    "--magnification", "5", "--click", f"{point.x},{point.y}", "--out", str(out))
    assert completed.returncode == 0, completed.stderr
    document = json.loads(out.read_text())
    (feature,) = document["features"]
    assert feature["properties"]["objectType"] == "annotation"
    assert feature["properties"]["classification"]["name"] == "Tumor"
    assert feature["geometry"]["type"] == "Polygon"


def test_segment_reports_the_servers_refusal(server, tmp_path):
    completed = run("slidesam", "--server", server.address, "segment", "--slide", "missing.svs", "--region", "0,0,100,100",
                    "--click", "50,50", "--out", str(tmp_path / "x.geojson"))
    assert completed.returncode == 2 and "NOT_FOUND" in completed.stderr and "missing.svs" in completed.stderr


def test_serve_process_answers_and_drains_on_sigterm(slide_root, model_registry):
    """The real entry point: starts, serves health, and exits cleanly on SIGTERM."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    env = dict(os.environ, SLIDESAM_MODEL_DIR=str(model_registry.model_dir))
    process = subprocess.Popen([str(BIN / "slidesam-server"), "serve", "--slide-root", str(slide_root), "--port", "0", "--no-preload",
                                "--allow-anonymous", "--drain-seconds", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = ""
        deadline = time.monotonic() + 120
        while not line.startswith("slidesam-server listening on") and time.monotonic() < deadline:
            line = process.stdout.readline()
        address = line.strip().rsplit(" ", 1)[-1]
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        assert "shutting down" in process.stdout.read()
    finally:
        process.kill()
