"""A server a lab shares, over real loopback gRPC with the real MobileSAM: tokens, TLS and mutual TLS,
object ownership, per-user limits, idle expiry, back-pressure, cache budget, metrics and draining."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from support.certificates import write_certificates

from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.errors import ConnectionLost, ServerError
from slidesam.qupath_bridge.tls import TlsSettings
from slidesam.qupath_bridge.wire_requests import Click, FieldOfView, SlideImage
from slidesam.server.edge.tokens import TokenStore, UserLimits
from tests.conftest import SLIDE_ID, make_server

ROOT = Path(__file__).resolve().parents[2]


def fov_at(slide, offset: int = 0, downsample: float = 16.0) -> FieldOfView:
    """A field of view over the known object, shifted by offset level-0 pixels (a new embedding per offset)."""
    minx, miny, maxx, maxy = slide.object_geometry.bounds
    return FieldOfView(SlideImage(SLIDE_ID), minx - 800 + offset, miny - 800, maxx - minx + 1600, maxy - miny + 1600, downsample=downsample)


def centre(slide) -> tuple[float, float]:
    point = slide.object_geometry.representative_point()
    return point.x, point.y


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format."""
    selector = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))  # the exporter sorts labels
    pattern = re.escape(name) + (r"\{" + re.escape(selector) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    assert found, f"no sample {name}{{{selector}}} in the metrics"
    return float(found.group(1))


def wait_until(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> dict[str, str]:
    store = TokenStore(tmp_path_factory.mktemp("tokens") / "tokens.json")
    secrets = {user: store.add(user)[0] for user in ("alice", "carol")}
    secrets["bob"] = store.add("bob", UserLimits(max_streams=1, upload_bytes_per_minute=200_000))[0]
    secrets["revoked"] = store.add("mallory")[0]
    store.revoke("mallory")
    secrets["_file"] = str(store.path)
    return secrets


@pytest.fixture(scope="module")
def secured(model_registry, slide_root, synthetic_slide, tokens):
    running = make_server(model_registry, slide_root, tokens_file=Path(tokens["_file"]), allow_anonymous=False, metrics_port=0)
    yield running
    running.stop()


def client_for(server, token: str | None, **options) -> SlidesamClient:
    return SlidesamClient(server.address, token=token, reconnect_attempts=0, ready_timeout=5, **options)


@pytest.mark.parametrize("token", [None, "", "not-a-token", "ssam_0123abcd_" + "x" * 43, "revoked"])
def test_requests_without_a_valid_token_are_unauthenticated(secured, synthetic_slide, tokens, token):
    token = tokens.get(token, token)
    with client_for(secured, token) as client:
        with pytest.raises(ServerError) as listing:
            client.list_models()
        with pytest.raises(ServerError) as opening:
            client.open_object(fov_at(synthetic_slide))
        with pytest.raises(ServerError) as segmenting:
            client.segment(fov_at(synthetic_slide), [Click(*centre(synthetic_slide))])
    for refused in (listing, opening, segmenting):
        assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED, refused.value
        assert "token" in refused.value.message


def test_a_valid_token_is_served_and_a_revoke_applies_without_restart(secured, synthetic_slide, tokens):
    store = TokenStore(Path(tokens["_file"]))
    secret, _ = store.add("dave")
    with client_for(secured, secret) as client:
        assert any(model.name == "mobile_sam" for model in client.list_models())
        store.revoke("dave")
        with pytest.raises(ServerError) as refused:
            client.list_models()
    assert refused.value.code is grpc.StatusCode.UNAUTHENTICATED


def test_object_ids_are_each_users_own(secured, synthetic_slide, tokens):
    """carol opening alice's object id gets an object of her own: she can neither drive alice's object
    nor learn that the id is in use."""
    fov = fov_at(synthetic_slide)
    with client_for(secured, tokens["alice"]) as alice, client_for(secured, tokens["carol"]) as carol:
        session = alice.open_object(fov, object_id="annotation-7")
        session.click(*centre(synthetic_slide))
        with carol.open_object(fov, object_id="annotation-7") as hers:
            assert hers.result.step == 0, "carol's object starts empty"
            assert hers.click(*centre(synthetic_slide), positive=False).step == 1
        assert session.click(*centre(synthetic_slide), positive=True).step == 2, "alice's object is untouched"
        session.finish()


def test_per_user_stream_limit(secured, synthetic_slide, tokens):
    with client_for(secured, tokens["bob"]) as bob:
        with bob.open_object(fov_at(synthetic_slide)):
            with pytest.raises(ServerError) as refused:
                bob.open_object(fov_at(synthetic_slide))
        assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and refused.value.retry_after
        wait_until(lambda: secured.running.service.limiter.streams_of("bob") == 0)
        with bob.open_object(fov_at(synthetic_slide)) as again:
            assert again.result.step == 0


def test_per_user_upload_rate_limit(secured, tokens):
    import cv2
    import numpy as np

    from slidesam.qupath_bridge.wire_requests import UploadedRegion

    def region(seed: int) -> UploadedRegion:
        pixels = np.random.default_rng(seed).integers(0, 255, (200, 200, 3), dtype=np.uint8)
        return UploadedRegion(cv2.imencode(".png", pixels)[1].tobytes(), 0, 0, 1.0)

    with client_for(secured, tokens["bob"]) as bob:
        first = region(1)
        assert len(first.data) < 200_000 < 2 * len(first.data)
        assert not bob.upload(first).already_present
        with pytest.raises(ServerError) as refused:
            bob.upload(first)  # already held, but its bytes were received again: they count
    assert refused.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and "per minute" in refused.value.message
    assert 0 < refused.value.retry_after <= 60


def test_killed_client_frees_its_stream_and_object(secured, synthetic_slide, tokens):
    fov = fov_at(synthetic_slide)
    script = textwrap.dedent(f"""
        import time
        from slidesam.qupath_bridge.client import SlidesamClient
        from slidesam.qupath_bridge.wire_requests import FieldOfView, SlideImage
        client = SlidesamClient({secured.address!r}, token={tokens['carol']!r})
        fov = FieldOfView(SlideImage({SLIDE_ID!r}), {fov.x!r}, {fov.y!r}, {fov.width!r}, {fov.height!r}, downsample=16.0)
        session = client.open_object(fov, object_id="left-behind")
        session.click(*{centre(synthetic_slide)!r})
        print("ready", flush=True)
        time.sleep(600)
    """)
    service = secured.running.service
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout.readline().strip() == "ready"
        assert service.limiter.streams_of("carol") == 1
        process.kill()
        process.wait(10)
        wait_until(lambda: service.limiter.streams_of("carol") == 0)
        wait_until(lambda: "left-behind" not in service.ownership._claims)
    finally:
        process.kill()
    with client_for(secured, tokens["alice"]) as alice:
        with alice.open_object(fov_at(synthetic_slide), object_id="left-behind") as taken:
            assert taken.result.step == 0


def test_metrics_endpoint_reports_clicks_cache_streams_and_errors(secured, synthetic_slide, tokens):
    before = scrape(secured.running.metrics_port)
    with client_for(secured, tokens["alice"]) as alice:
        with alice.open_object(fov_at(synthetic_slide)) as session:
            session.click(*centre(synthetic_slide))
            during = scrape(secured.running.metrics_port)
        with client_for(secured, "wrong") as stranger, pytest.raises(ServerError):
            stranger.list_models()
    after = scrape(secured.running.metrics_port)
    assert metric(after, "slidesam_click_seconds_count") >= metric(before, "slidesam_click_seconds_count") + 1
    assert metric(during, "slidesam_active_streams") >= 1
    device = str(secured.running.devices.models.device)
    assert metric(after, "slidesam_cache_hits_total", device=device) > metric(before, "slidesam_cache_hits_total", device=device)
    assert metric(after, "slidesam_cache_bytes", device=device) <= metric(after, "slidesam_cache_budget_bytes", device=device)
    assert metric(after, "slidesam_errors_total", method="ListModels", code="UNAUTHENTICATED") >= 1
    assert metric(after, "slidesam_queue_depth", device=device, priority="interactive") == 0
    assert metric(after, "process_resident_memory_bytes") > 100 * 2**20


def test_tls_and_mutual_tls(model_registry, slide_root, synthetic_slide, tmp_path):
    certs = write_certificates(tmp_path)
    tls = make_server(model_registry, slide_root, tls_cert=certs.server_cert, tls_key=certs.server_key)
    try:
        with SlidesamClient(tls.address, tls=TlsSettings(ca=certs.ca_cert), ready_timeout=10) as client:
            assert client.list_models()
        with SlidesamClient(tls.address, reconnect_attempts=0, ready_timeout=2, call_timeout=3) as plaintext:
            with pytest.raises((ServerError, ConnectionLost)):
                plaintext.list_models()
    finally:
        tls.stop()
    mutual = make_server(model_registry, slide_root, tls_cert=certs.server_cert, tls_key=certs.server_key, tls_client_ca=certs.ca_cert)
    try:
        with SlidesamClient(mutual.address, tls=TlsSettings(ca=certs.ca_cert), call_timeout=3) as no_certificate:
            with pytest.raises(ServerError) as refused:
                no_certificate.list_models()
            assert refused.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        with_cert = TlsSettings(ca=certs.ca_cert, client_cert=certs.client_cert, client_key=certs.client_key)
        with SlidesamClient(mutual.address, tls=with_cert, ready_timeout=10) as client:
            with client.open_object(fov_at(synthetic_slide)) as session:
                assert session.click(*centre(synthetic_slide)).geometry.area > 0
    finally:
        mutual.stop()


def test_full_queue_answers_resource_exhausted_with_a_hint_and_recovers(model_registry, slide_root, synthetic_slide):
    busy = make_server(model_registry, slide_root, max_pending=2, max_pending_per_user=2)
    outcomes: list[object] = []

    def segment(offset: int) -> None:
        with SlidesamClient(busy.address) as client:
            try:
                outcomes.append(client.segment(fov_at(synthetic_slide, offset=offset), [Click(*centre(synthetic_slide))]))
            except ServerError as error:
                outcomes.append(error)

    try:
        threads = [threading.Thread(target=segment, args=(37 * i,)) for i in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        refused = [o for o in outcomes if isinstance(o, ServerError)]
        assert refused and all(e.code is grpc.StatusCode.RESOURCE_EXHAUSTED and e.retry_after for e in refused), outcomes
        assert len(refused) < len(outcomes), "the requests admitted were served"
        with SlidesamClient(busy.address) as client:
            assert client.segment(fov_at(synthetic_slide), [Click(*centre(synthetic_slide))]).geometry.area > 0
    finally:
        busy.stop()


def test_cache_stays_within_budget_with_fp16_storage(model_registry, slide_root, synthetic_slide):
    small = make_server(model_registry, slide_root, cache_mb=4.5, cache_dtype="float16", metrics_port=0)
    try:
        with SlidesamClient(small.address) as client:
            for offset in (0, 101, 203):
                with client.open_object(fov_at(synthetic_slide, offset=offset)):
                    pass
                stats = small.running.devices.workers[0].engine.cache.stats()
                assert stats.bytes <= stats.budget_bytes
        text = scrape(small.running.metrics_port)
    finally:
        small.stop()
    assert stats.entries == 2 and stats.evictions >= 1, "fp16 embeddings are 2 MiB: two fit in 4.5 MiB"
    assert metric(text, "slidesam_cache_bytes", device=str(small.running.devices.models.device)) == stats.bytes == 4 * 2**20


def test_idle_objects_expire_and_say_so(model_registry, slide_root, synthetic_slide):
    short = make_server(model_registry, slide_root, session_idle_seconds=0.5)
    try:
        with SlidesamClient(short.address, reconnect_attempts=0) as client:
            with client.open_object(fov_at(synthetic_slide)) as session:
                wait_until(lambda: len(short.running.service.ownership) == 0, timeout=10)
                with pytest.raises(ServerError) as refused:
                    session.click(*centre(synthetic_slide))
        assert refused.value.code is grpc.StatusCode.FAILED_PRECONDITION and "expired" in refused.value.message
    finally:
        short.stop()


def test_interactive_click_overtakes_a_batch_encode(server, client, synthetic_slide):
    """A click waits at most one encoder block, not a whole batch encode, on the same worker."""
    fov = fov_at(synthetic_slide)
    with client.open_object(fov) as session:
        session.click(*centre(synthetic_slide))
        finished: dict[str, float] = {}

        def batch() -> None:
            with SlidesamClient(server.address) as other:
                other.segment(fov_at(synthetic_slide, offset=911, downsample=4.0), [Click(*centre(synthetic_slide))])
            finished["batch"] = time.perf_counter()

        worker = threading.Thread(target=batch)
        worker.start()
        wait_until(lambda: server.running.devices.workers[0].scheduler.depth() == 0 and worker.is_alive(), timeout=10)
        time.sleep(0.3)  # the batch job is encoding now
        result = session.click(*centre(synthetic_slide), positive=True)
        finished["click"] = time.perf_counter()
        worker.join(120)
    assert finished["click"] < finished["batch"], "the click came back while the batch encode was still running"
    assert result.timings.queue_ms < 1000


def test_health_turns_not_serving_while_draining(model_registry, slide_root, synthetic_slide):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    draining = make_server(model_registry, slide_root)
    statuses: list[int] = []
    with SlidesamClient(draining.address) as client:
        opened = threading.Thread(target=lambda: statuses.append(client.open_object(fov_at(synthetic_slide, offset=577)).result.step))
        opened.start()
        time.sleep(0.3)
        stopper = threading.Thread(target=draining.stop, kwargs={"grace": 30, "drain": 1.5})
        stopper.start()
        with grpc.insecure_channel(draining.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            wait_until(lambda: _status(health) == health_pb2.HealthCheckResponse.NOT_SERVING, timeout=10)
        opened.join(60)
        stopper.join(60)
    assert statuses == [0], "the request in flight when draining began was answered"


def _status(health) -> int:
    from grpc_health.v1 import health_pb2

    try:
        return health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
    except grpc.RpcError:
        return -1


def test_bridge_command_line_sends_the_token(secured, tokens):
    command = [str(Path(sys.executable).parent / "slidesam"), "--server", secured.address, "models"]
    env = {k: v for k, v in os.environ.items() if k != "SLIDESAM_TOKEN"}
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    served = subprocess.run([*command, "--token", tokens["alice"]], capture_output=True, text=True, env=env, timeout=60)
    from_env = subprocess.run(command, capture_output=True, text=True, env=env | {"SLIDESAM_TOKEN": tokens["carol"]}, timeout=60)
    assert refused.returncode != 0 and "UNAUTHENTICATED" in refused.stderr
    assert served.returncode == 0 and "mobile_sam" in served.stdout, served.stderr
    assert from_env.returncode == 0 and "mobile_sam" in from_env.stdout, from_env.stderr


def test_two_devices_share_the_work_and_keep_each_object_on_its_own(model_registry, slide_root, synthetic_slide):
    """One model worker per device (here two on the test device): new fields of view go to the least busy
    worker, a field of view already embedded goes back to the worker that holds it, and an object's clicks
    stay on the worker it was opened on."""
    pair = make_server(model_registry, slide_root, devices=2, metrics_port=0)
    workers = pair.running.devices.workers
    try:
        with SlidesamClient(pair.address) as client:
            results: dict[int, object] = {}

            def open_and_click(offset: int) -> None:
                with client.open_object(fov_at(synthetic_slide, offset=offset)) as session:
                    results[offset] = session.click(*centre(synthetic_slide))

            threads = [threading.Thread(target=open_and_click, args=(offset,)) for offset in (0, 131)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            assert [worker.engine.cache.stats().entries for worker in workers] == [1, 1], "one field of view each"
            with client.open_object(fov_at(synthetic_slide, offset=131)) as again:
                assert again.result.cache_hit, "the field of view went back to the worker holding its embedding"
                assert again.click(*centre(synthetic_slide)).raw.polygons == results[131].raw.polygons
            (mobile,) = [model for model in client.list_models() if model.name == "mobile_sam"]
        assert sum(worker.engine.cache.stats().misses for worker in workers) == 2
        assert mobile.device == ",".join(worker.device for worker in workers)
        text = scrape(pair.running.metrics_port)
        assert text.count("slidesam_cache_entries{") == 2 and text.count('slidesam_queue_depth{device=') == 4
    finally:
        pair.stop()
