"""`slidesam preannotate --ray`: a real local Ray cluster (`ray start --head` on loopback, 2 CPUs, shared by the
module) pre-annotates generated slides while a worker running a request is SIGKILLed, and the project ends byte for
byte as a serial run leaves it; the same with the engine on a Ray actor (`--in-process`), the actor killed midway.
An unreachable Ray address is an error that leaves the project untouched."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support.ray_cluster import LOOPBACK_ENV, RayCluster
from bridge_helpers import cli_command, geojson_project, run_cli, run_process, tree

from slidesam.lab.local_server import LOOPBACK, free_port

SLIDES = 4  # two workers, one killed after the first image: the rest still spread over the cluster
SIZE = (2048, 1536)
ENV = {**os.environ, **LOOPBACK_ENV, "SOURCE_DATE_EPOCH": "1790000000"}
RUN_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def ray_cluster():
    cluster = RayCluster(cpus=2)
    yield cluster
    cluster.stop()
    assert not cluster.processes(), "processes of the Ray cluster outlived it"


@pytest.fixture(scope="module")
def ray_slides(slide_root):
    """Slides of their own (no other test has their regions in the server's cache), one object each."""
    from slidesam.lab.synthetic.slide_writer import write_synthetic_slide

    folder = slide_root / "ray"
    folder.mkdir(exist_ok=True)
    return [write_synthetic_slide(folder / f"ray-{i}.svs", *SIZE, levels=(1, 4), object_center=(700.0 + 90 * i, 600.0 + 50 * i),
                                  object_radii=(260.0 + 10 * i, 200.0), seed=40 + i) for i in range(SLIDES)]


@pytest.fixture(scope="module")
def serial_run(server, ray_slides, slide_root, tmp_path_factory):
    """The serial run over all the slides, made when first asked for (after a Ray run met a cold server cache)."""
    made: list[Path] = []

    def run() -> Path:
        if not made:
            made.append(geojson_project(tmp_path_factory.mktemp("serial"), [slide.path for slide in ray_slides]))
            alone = run_process("preannotate", str(made[0]), *_arguments(server.address, slide_root), "--workers", "1", env=ENV)
            assert alone.returncode == 0, alone.stderr
        return made[0]
    return run


def _arguments(server: str, slide_root: Path) -> list[str]:
    return ["--server", server, "--prompts", "tissue-boxes", "--min-size", "1024", "--slide-map", f"{slide_root.resolve()}=", "--no-progress"]


def _updated(report: str) -> int:
    """Images the run's report lists as updated."""
    return len(re.findall(r"^\S+\.svs\s+updated\s", report, re.MULTILINE))


def _finished(project: Path) -> int:
    try:
        return len(json.loads((project / ".slidesam" / "preannotate.json").read_text())["images"])
    except (FileNotFoundError, ValueError):
        return 0


def _kill_midway(process: subprocess.Popen, project: Path, cluster: RayCluster, title: str, after: int) -> int:
    """Once the driver has finished `after` images and a worker runs `title`, SIGKILLs that worker; its pid."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        running = cluster.running(title) if _finished(project) >= after else []
        if running:
            os.kill(running[0], signal.SIGKILL)
            return running[0]
        time.sleep(0.05)
    raise AssertionError(f"no worker ran {title} after {after} image(s) (driver exit code {process.poll()})")


def _drive(project: Path, *arguments: str, cluster: RayCluster, kill: str, after: int) -> tuple[subprocess.CompletedProcess, int, int]:
    """`slidesam preannotate PROJECT ARGUMENTS` as a driver process, a worker running `kill` killed once `after` images
    are finished: (the finished run, images finished when the worker was killed, its pid)."""
    process = subprocess.Popen(cli_command("preannotate", str(project), *arguments), env=ENV, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        killed = _kill_midway(process, project, cluster, kill, after)
        finished_then = _finished(project)
        out, err = process.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), finished_then, killed


def test_a_ray_cluster_ends_as_a_serial_run_though_a_worker_is_killed(server, ray_cluster, ray_slides, slide_root, serial_run, tmp_path):
    slides = [slide.path for slide in ray_slides]
    spread = geojson_project(tmp_path / "ray", slides)

    run, finished_then, killed = _drive(spread, *_arguments(server.address, slide_root), "--ray", ray_cluster.address,
                                        "--workers", "2", cluster=ray_cluster, kill="segment_region", after=1)
    assert run.returncode == 0, run.stderr
    assert finished_then < SLIDES, "the worker was killed after the last image"
    assert killed not in ray_cluster.processes()
    assert _updated(run.stdout) == SLIDES, run.stdout  # the killed request ran again

    serial = serial_run()
    assert tree(spread) == tree(serial)
    assert all(b'"SAM: tissue 1"' in tree(serial)[f"{path.name}.geojson"] for path in slides)


def test_engines_on_ray_actors_end_as_a_serial_run_though_one_is_killed(server, ray_cluster, ray_slides, slide_root, serial_run, tmp_path):
    chosen = [ray_slides[0].path]  # an actor's restart loads torch and the model again: one image keeps this short
    on_actor = geojson_project(tmp_path / "actor", chosen)
    engine_config = tmp_path / "engine.toml"
    engine_config.write_text("threads = 2\n")

    run, finished_then, _ = _drive(on_actor, *_arguments(server.address, slide_root), "--ray", ray_cluster.address, "--in-process",
                                   "--engine-config", str(engine_config), "--slide-root", str(slide_root.resolve()), "--workers", "1",
                                   cluster=ray_cluster, kill="EngineActor.segment", after=0)
    assert run.returncode == 0, run.stderr
    assert finished_then == 0, "the actor was killed after its request was answered"
    assert _updated(run.stdout) == len(chosen), run.stdout  # restarted, its request ran again

    files, serial = tree(on_actor), tree(serial_run())
    assert all(files[f"{path.name}.geojson"] == serial[f"{path.name}.geojson"] for path in chosen)
    state, serial_state = (json.loads(f[".slidesam/preannotate.json"])["images"] for f in (files, serial))
    assert state == {path.name: serial_state[path.name] for path in chosen}
    deadline = time.monotonic() + 10
    while ray_cluster.running("EngineActor") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not ray_cluster.running("EngineActor"), "the engine actor outlived its run"


def test_an_unreachable_ray_address_is_an_error_and_the_project_stays_untouched(server, ray_slides, slide_root, tmp_path, capsys):
    project = geojson_project(tmp_path / "project", [ray_slides[0].path])
    before = tree(project)
    nobody = f"{LOOPBACK}:{free_port()}"

    code, _, err = run_cli(capsys, "preannotate", str(project), *_arguments(server.address, slide_root)[:-1],
                           "--ray", nobody, "--connect-timeout", "1")
    assert code == 3 and f"no Ray cluster answers at {nobody}" in err
    code, _, err = run_cli(capsys, "preannotate", str(project), *_arguments(server.address, slide_root)[:-1], "--in-process")
    assert code == 2 and "give --ray ADDRESS" in err
    assert tree(project) == before and not (project / ".slidesam").exists()
