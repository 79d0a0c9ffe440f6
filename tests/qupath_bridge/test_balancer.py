"""Several servers behind a real HAProxy (deploy/haproxy/slidesam.cfg), all real processes on loopback:
the affinity key keeps an image on one server (its cache hits show it), tokens work on every server, a
server killed mid-object loses nothing (the client replays on the other one, with the same polygons), and
a missing or garbage key, or a balancer with no server up, gets a clear answer.

HAProxy is a Debian package (.ci/run installs it): without it these tests skip with the reason, and fail
under CI (CI=true)."""

from __future__ import annotations

import io
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from bridge_helpers import geojson_project, points, run_cli, tree, write_prompts
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from PIL import Image

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc
from slidesam.v1.conventions import AFFINITY_METADATA, affinity_key
from slidesam.lab.haproxy import PASSTHROUGH_TEMPLATE, Backend, Haproxy, HaproxyMissing, find_haproxy
from slidesam.lab.local_server import LOOPBACK, free_port
from slidesam.lab.stack import Stack
from slidesam.lab.synthetic.slide_writer import write_synthetic_slide
from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.errors import ConnectionLost, ServerError
from slidesam.qupath_bridge.tls import TlsSettings
from slidesam.qupath_bridge.wire_requests import FieldOfView, SlideImage, UploadedRegion
from slidesam.qupath_bridge.wire_results import ObjectResult
from slidesam.server.edge.tokens import TokenStore

SLIDE_SIZE = (2048, 1536)
CENTER = (1024.0, 768.0)
USERS = 4


def _require_haproxy() -> None:
    try:
        find_haproxy()
    except HaproxyMissing as missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing}; .ci/run installs it")
        pytest.skip(f"{missing}; .ci/run installs it")


@dataclass
class Lab:
    stack: Stack
    tokens: TokenStore
    token: str
    slides: dict[str, list[str]]  # backend name -> slide ids the balancer sends there


@pytest.fixture(scope="module")
def lab(slide_root, tmp_path_factory):
    """Two servers (one torch thread each, one tokens file) behind HAProxy, and four small slides, two of
    which the balancer sends to each server."""
    _require_haproxy()
    folder = tmp_path_factory.mktemp("balancer")
    tokens = TokenStore(folder / "tokens.json")
    token, _ = tokens.add("pathologist")
    with Stack(slide_root, folder, 2, tokens_file=tokens.path, server_args=["--threads", "1"]) as stack:
        slides: dict[str, list[str]] = {b.name: [] for b in stack.backends}
        (slide_root / "balancer").mkdir(exist_ok=True)
        for index in range(64):
            slide_id = f"balancer/case-{index}.svs"
            chosen = slides[stack.backend_for(affinity_key(slide_id=slide_id))]
            if len(chosen) < USERS // 2:
                chosen.append(slide_id)
                write_synthetic_slide(slide_root / slide_id, *SLIDE_SIZE, levels=(1, 4), object_center=CENTER,
                                      object_radii=(300.0, 200.0), seed=index)
        assert all(len(ids) == USERS // 2 for ids in slides.values()), slides
        yield Lab(stack, tokens, token, slides)


def _fov(slide_id: str) -> FieldOfView:
    return FieldOfView(SlideImage(slide_id), CENTER[0] - 400, CENTER[1] - 300, 800, 600)


def _backend_log(lab: Lab, name: str) -> str:
    return lab.stack.servers[name].log_path.read_text()


def test_the_fields_of_view_of_one_image_stay_on_one_server(lab):
    """Fresh clients (new connections) opening fields of view of one slide all reach the server holding its
    embedding: one encode, then cache hits. The same for uploaded pixels, whose upload and open meet on one server."""
    slide_id = lab.slides["slidesam-1"][0]
    key = affinity_key(slide_id=slide_id)
    assert {lab.stack.backend_for(key) for _ in range(5)} == {"slidesam-1"}
    hits = []
    for _ in range(3):
        with SlidesamClient(lab.stack.address, token=lab.token) as client, \
                client.open_object(FieldOfView(SlideImage(slide_id), 700, 500, 640, 480)) as obj:
            hits.append(obj.result.cache_hit)
    assert hits == [False, True, True]

    pixels = np.random.default_rng(0).integers(0, 255, (96, 128, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    upload = UploadedRegion(buffer.getvalue())
    server = lab.stack.backend_for(upload.affinity_key)
    hits = []
    for _ in range(2):
        with SlidesamClient(lab.stack.address, token=lab.token) as client, \
                client.open_object(FieldOfView(upload, 0, 0, 128, 96)) as obj:
            hits.append(obj.result.cache_hit)
    assert hits == [False, True]
    uploads = {name: _backend_log(lab, name).count(f"sha256={upload.sha256[:12]}") for name in lab.stack.servers}
    assert uploads[server] == 1 and sum(uploads.values()) == 1, uploads


def test_tokens_work_on_every_server_and_a_revoke_reaches_all(lab):
    secret, _ = lab.tokens.add("resident")
    keys = {name: affinity_key(slide_id=ids[0]) for name, ids in lab.slides.items()}
    with SlidesamClient(lab.stack.address, token=secret) as client:
        for name, key in keys.items():
            assert client._unary(client._stub.ListModels, pb.ListModelsRequest(), key).models
        lab.tokens.revoke("resident")
        for name, key in keys.items():
            with pytest.raises(ServerError) as refused:
                client._unary(client._stub.ListModels, pb.ListModelsRequest(), key)
            assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED, name


def test_a_missing_affinity_key_routes_by_client_and_a_garbage_one_is_refused(lab):
    """Without a key a client stays on one server (its address is hashed: uploads and opens meet); a malformed
    key is routed like any other and refused by the server with INVALID_ARGUMENT, saying what it expects."""
    assert len({lab.stack.backend_for(None) for _ in range(6)}) == 1
    bearer = ("authorization", f"Bearer {lab.token}")
    with grpc.insecure_channel(lab.stack.address) as channel:
        stub = pb_grpc.SegmentationStub(channel)
        assert stub.ListModels(pb.ListModelsRequest(), metadata=(bearer,), timeout=30).models
        for garbage in ("cases/a.svs", "A" * 64, "0" * 63, "sha256:" + "0" * 64):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ListModels.with_call(pb.ListModelsRequest(), metadata=(bearer, (AFFINITY_METADATA, garbage)), timeout=30)
            assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert f"malformed '{AFFINITY_METADATA}' metadata" in refused.value.details()
            answered = dict(refused.value.initial_metadata()) | dict(refused.value.trailing_metadata())
            assert "slidesam-backend" in answered  # the balancer routed it to a server, which refused it
        key = affinity_key(slide_id="x")
        with pytest.raises(grpc.RpcError) as refused:
            stub.ListModels(pb.ListModelsRequest(), metadata=(bearer, (AFFINITY_METADATA, key), (AFFINITY_METADATA, key)), timeout=30)
        assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "send at most one" in refused.value.details()


def test_tls_terminated_at_the_balancer(lab, tmp_path):
    from support.certificates import write_certificates

    certificates = write_certificates(tmp_path / "tls")
    pem = tmp_path / "balancer.pem"
    pem.write_bytes(certificates.server_cert.read_bytes() + certificates.server_key.read_bytes())
    with Haproxy(tmp_path / "tls-balancer", f"{LOOPBACK}:{free_port()}", lab.stack.backends, tls_pem=pem) as balancer:
        for backend in lab.stack.backends:
            balancer.wait_state(backend.name, "UP")
        with SlidesamClient(balancer.bind, token=lab.token, tls=TlsSettings(ca=certificates.ca_cert)) as client:
            assert client.list_models()
        with SlidesamClient(balancer.bind, token=lab.token, call_timeout=2) as plaintext:
            with pytest.raises(ServerError):
                plaintext.list_models()


def test_tls_passed_through_to_the_servers(model_registry, slide_root, tmp_path):
    """deploy/haproxy/slidesam-passthrough.cfg: the balancer forwards TLS untouched (mode tcp) to a server
    that terminates it, and health-checks it with the gRPC health request inside TLS."""
    from support.certificates import write_certificates

    from tests.conftest import make_server

    _require_haproxy()
    certificates = write_certificates(tmp_path / "tls")
    template = tmp_path / "passthrough.cfg"
    template.write_text(PASSTHROUGH_TEMPLATE.read_text().replace("/etc/haproxy/slidesam-ca.pem", str(certificates.ca_cert)))
    server = make_server(model_registry, slide_root, tls_cert=certificates.server_cert, tls_key=certificates.server_key)
    try:
        with Haproxy(tmp_path / "balancer", f"{LOOPBACK}:{free_port()}", [Backend("tls", server.address)],
                     template=template, passthrough=True) as balancer:
            balancer.wait_state("tls", "UP", 10)
            with SlidesamClient(balancer.bind, tls=TlsSettings(ca=certificates.ca_cert)) as client:
                assert client.list_models()
    finally:
        server.stop()


def test_the_health_check_asks_the_grpc_health_service(tmp_path):
    """A server whose gRPC health says NOT_SERVING (as a draining slidesam-server does) is taken out;
    SERVING brings it back: the check reads the health service's answer, not just an open port."""
    _require_haproxy()
    server = grpc.server(ThreadPoolExecutor(2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port(f"{LOOPBACK}:0")
    server.start()
    try:
        with Haproxy(tmp_path, f"{LOOPBACK}:{free_port()}", [Backend("only", f"{LOOPBACK}:{port}")]) as balancer:
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            balancer.wait_state("only", "UP", 10)
            servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
            balancer.wait_state("only", "DOWN", 10)
            servicer.set("", health_pb2.HealthCheckResponse.SERVING)
            balancer.wait_state("only", "UP", 10)
    finally:
        server.stop(0)


def test_a_balancer_with_no_server_up_says_so_and_leaves_the_project_untouched(lab, tmp_path, capsys):
    slide_id = lab.slides["slidesam-1"][0]
    with Haproxy(tmp_path / "empty", f"{LOOPBACK}:{free_port()}", [Backend("gone", f"{LOOPBACK}:{free_port()}")]) as balancer:
        balancer.wait_state("gone", "DOWN", 10)
        with SlidesamClient(balancer.bind, token=lab.token, ready_timeout=1) as client:
            with pytest.raises(ConnectionLost, match="no slidesam server is up behind the load balancer"):
                client.open_object(_fov(slide_id))
            with pytest.raises(ServerError, match="no slidesam server is up behind the load balancer") as refused:
                client.list_models()
            assert refused.value.code is grpc.StatusCode.UNAVAILABLE
        project = geojson_project(tmp_path / "project", [Path(lab.stack.slide_root) / slide_id])
        write_prompts(project, Path(slide_id).name, [points("lesion 1", "SAM positive", CENTER)])
        before = tree(project)
        code, _, err = run_cli(capsys, "sync", str(project), "--server", balancer.bind, "--connect-timeout", "1")
        assert code == 3 and "no slidesam server is up behind the load balancer" in err, err
        assert tree(project) == before and not (project / ".slidesam").exists()


CLICKS = [(CENTER, True), ((700.0, 500.0), False), ((1100.0, 800.0), True), ("undo", None), ((950.0, 740.0), True)]


def _user(address: str, token: str, slide_id: str, barrier: threading.Barrier, results: dict, index: int) -> None:
    """Two objects on one field of view, the clicks of CLICKS each; waits at `barrier` in the middle of the
    first. results[index]: (polygon WKB, score, reconnects) of each object, or the error that ended the user."""
    outcome: list[tuple[bytes, float, int]] = []
    try:
        with SlidesamClient(address, token=token) as client:
            for number in range(2):
                with client.open_object(_fov(slide_id)) as obj:
                    for step, (xy, positive) in enumerate(CLICKS):
                        if number == 0 and step == 2:
                            barrier.wait()
                        if xy == "undo":
                            obj.undo()
                        else:
                            obj.click(*xy, positive=positive)
                    final: ObjectResult = obj.finish()
                    outcome.append((final.geometry.wkb, round(final.score, 6), obj.reconnects))
    except Exception as error:  # noqa: BLE001 - reported by the test
        barrier.abort()
        results[index] = repr(error)
        return
    results[index] = outcome


def _run_users(lab: Lab, during_barrier=lambda: None) -> dict[int, list[tuple[bytes, float, int]]]:
    slide_ids = [*lab.slides["slidesam-1"], *lab.slides["slidesam-2"]]
    barrier = threading.Barrier(USERS + 1)
    results: dict[int, list] = {}
    threads = [threading.Thread(target=_user, args=(lab.stack.address, lab.token, slide_id, barrier, results, index))
               for index, slide_id in enumerate(slide_ids)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=120)
    during_barrier()
    for thread in threads:
        thread.join(timeout=180)
    return results


def test_a_server_killed_mid_object_loses_nothing(lab):
    """4 users clicking, 2 on each server; slidesam-1 is SIGKILLed while every user is in the middle of an
    object. Its users' objects are replayed on slidesam-2: no object lost, every polygon as without the fault."""
    fault_free = _run_users(lab)
    assert all(isinstance(user, list) and len(user) == 2 for user in fault_free.values()), fault_free
    assert len(fault_free) == USERS and all(r == 0 for user in fault_free.values() for *_, r in user)
    faulted = _run_users(lab, lambda: lab.stack.kill("slidesam-1"))
    assert len(faulted) == USERS
    assert all(isinstance(user, list) and len(user) == 2 for user in faulted.values()), f"objects were lost: {faulted}"
    for index in range(USERS):
        assert [o[:2] for o in faulted[index]] == [o[:2] for o in fault_free[index]], f"user {index}: other polygons"
    # users 0-1 were on the killed server: their first object was replayed; users 2-3 never noticed
    assert [faulted[i][0][2] for i in range(USERS)] == [1, 1, 0, 0]
    assert lab.stack.backend_for(affinity_key(slide_id=lab.slides["slidesam-1"][0])) == "slidesam-2"
    lab.stack.haproxy.wait_state("slidesam-1", "DOWN", 10)
