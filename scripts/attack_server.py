"""Hostile-user attacks at full scale against a real server process, with what each one cost the others.

Run through ./scripts/attack_server. Starts `slidesam-server serve` in its own process (as
scripts/loadtest does: synthetic slides, one token per user) and runs, one after the other:

1. revoke: a user's token is revoked while their Interact stream is open and idle; how long until
   the stream ends (repeated --repeats times; the worst is reported).
2. uploads: 6 users upload costly images without pause (JPEGs of hundreds of scans, 16-bit RGBA PNGs
   of 8192^2, JPEG headers claiming 8192^2, and accepted 8192^2 progressive JPEGs) while a victim opens
   new fields of view; the victim's open time idle and under attack, and the server's peak RSS.
   The victim's own upload must survive the attackers' (fair shares of the upload store).
3. rate: 8 requests of 60 MiB naming the hash of an image already stored; how many went through.
4. history: --objects streams each make 300 box changes on one object; the server's RSS growth.
5. segment: a Segment request with 300 clicks; how fast it is refused.

Ends with one JSON line. The bounded versions of these attacks are tests/server/test_hostile.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
from tqdm import tqdm

from slidesam.lab.interact_stream import InteractStream
from slidesam.lab.local_server import LocalServer
from slidesam.lab.loadtest.targets import Slides, Target, write_slides
from slidesam.lab.server_probes import RssSampler, memory_mib
from slidesam.lab.synthetic.hostile_images import deep_rgba_png, lying_jpeg, many_scan_jpeg
from slidesam.qupath_bridge.client import SlidesamClient
from slidesam.qupath_bridge.errors import ServerError
from slidesam.qupath_bridge.wire_requests import Click, FieldOfView, UploadedRegion
from slidesam.server.edge.tokens import TokenStore, UserLimits
from slidesam.server.models.registry import DEFAULT_MODEL, ModelRegistry
from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent
ATTACKERS = 6
HISTORY_STEPS = 300


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stream_for(address: str, secret: str) -> tuple[grpc.Channel, InteractStream]:
    channel = grpc.insecure_channel(address)
    return channel, InteractStream(pb_grpc.SegmentationStub(channel), (("authorization", f"Bearer {secret}"),))


def attack_revoke(address: str, store: TokenStore, target: Target, repeats: int) -> dict:
    delays = []
    for index in tqdm(range(repeats), desc="revoke", file=sys.stderr):
        secret, _ = store.add(f"revoked-{index}")
        channel, stream = stream_for(address, secret)
        answer = stream.step(pb.InteractRequest(request_id=1, open=pb.OpenObject(field_of_view=target.fov.to_pb())))
        assert answer.HasField("result"), answer
        time.sleep(0.3)
        revoked_at = time.monotonic()
        store.revoke(f"revoked-{index}")
        stream.ended.wait(10)
        delays.append(stream.ended_at - revoked_at if stream.ended.is_set() else float("inf"))
        codes = stream.status.name if stream.status else "still open"
        stream.close()
        channel.close()
    return {"stream_end_after_revoke_s_max": round(max(delays), 3), "median": round(statistics.median(delays), 3), "code": codes}


def heavy_images(seed: int) -> list[bytes]:
    """What one attacker uploads in turn (each distinct, so none is deduplicated)."""
    note(f"  preparing attacker {seed}'s images")
    return [many_scan_jpeg(8192, 500, grey=seed * 4), deep_rgba_png(8192) if seed == 0 else lying_jpeg(8192, 8192 - seed),
            many_scan_jpeg(8192, 10, grey=seed * 4 + 1), lying_jpeg(8000 + seed, 8000)]


def attack_uploads(address: str, store: TokenStore, slides: Slides, pid: int, opens: int) -> dict:
    victim = SlidesamClient(address, token=store.add("victim")[0])
    secrets = [store.add(f"uploader-{index}", UserLimits(upload_bytes_per_minute=4096 * 2**20))[0] for index in range(ATTACKERS)]
    images = [heavy_images(seed) for seed in range(ATTACKERS)]
    kept = UploadedRegion(_png(np.random.default_rng(7).integers(0, 256, (1500, 1500, 3), np.uint8)))

    def open_time() -> float:
        started = time.perf_counter()
        with victim.open_object(slides.fresh_target().fov):
            return time.perf_counter() - started

    open_time()
    idle = statistics.median(open_time() for _ in range(opens))
    victim.upload(kept)
    stop, outcomes = threading.Event(), []

    def attacker(secret: str, own: list[bytes]) -> None:
        with SlidesamClient(address, token=secret) as client:
            while not stop.is_set():
                for data in own:
                    started = time.perf_counter()
                    try:
                        client._unary(client._stub.UploadImage, pb.UploadImageRequest(data=data))
                        outcomes.append(("OK", time.perf_counter() - started))
                    except ServerError as error:
                        outcomes.append((error.code.name, time.perf_counter() - started))
                    if stop.is_set():
                        return

    rss = RssSampler(pid)
    threads = [threading.Thread(target=attacker, args=pair, daemon=True) for pair in zip(secrets, images)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    loaded = statistics.median(open_time() for _ in tqdm(range(opens), desc="opens under upload attack", file=sys.stderr))
    survived = True
    try:
        victim.segment(FieldOfView(kept, 0, 0, 1500, 1500), [Click(750, 750)])
    except ServerError as error:
        survived = error.code != grpc.StatusCode.NOT_FOUND
    stop.set()
    for thread in threads:
        thread.join()
    peak = rss.stop()
    victim.close()
    codes = {code: sum(1 for c, _ in outcomes if c == code) for code in {c for c, _ in outcomes}}
    return {"open_idle_ms": round(idle * 1e3), "open_under_attack_ms": round(loaded * 1e3),
            "ratio": round(loaded / idle, 2), "uploads": codes, "server_peak_rss_mib": peak,
            "victim_upload_survived": survived}


def attack_rate_limit(address: str, store: TokenStore) -> dict:
    secret, _ = store.add("rate", UserLimits(upload_bytes_per_minute=256 * 2**20))
    padding = os.urandom(60 * 2**20)
    through = 0
    started = time.perf_counter()
    with SlidesamClient(address, token=secret) as client:
        stored = client._unary(client._stub.UploadImage, pb.UploadImageRequest(data=_png(np.zeros((64, 64, 3), np.uint8))))
        for _ in range(8):
            try:
                client._unary(client._stub.UploadImage, pb.UploadImageRequest(data=padding, sha256=stored.sha256))
                through += 1
            except ServerError as error:
                through += error.code != grpc.StatusCode.RESOURCE_EXHAUSTED
    return {"requests": 8, "not_refused_by_the_rate_limit": through, "seconds": round(time.perf_counter() - started, 1)}


def attack_history(address: str, store: TokenStore, slides: Slides, pid: int, objects: int) -> dict:
    secret, _ = store.add("history", UserLimits(max_streams=objects))
    target = slides.fresh_target()
    x0, y0, x1, y1 = target.inside.bounds
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    channels, streams = zip(*(stream_for(address, secret) for _ in range(objects)))
    for stream in streams:
        stream.step(pb.InteractRequest(request_id=1, open=pb.OpenObject(field_of_view=target.fov.to_pb())))
    before = memory_mib(pid)["rss"]
    for step in tqdm(range(HISTORY_STEPS), desc=f"history: {objects} objects x {HISTORY_STEPS} box changes", file=sys.stderr):
        half = 100 + step % 200
        for stream in streams:
            stream.step(pb.InteractRequest(request_id=step + 2, box=pb.SetBox(box=pb.Box(x=cx - half, y=cy - half, width=2 * half, height=2 * half))))
    after = memory_mib(pid)["rss"]
    for stream, channel in zip(streams, channels):
        stream.close()
        channel.close()
    return {"objects": objects, "steps_each": HISTORY_STEPS, "rss_before_mib": before, "rss_after_mib": after,
            "growth_per_object_mib": round((after - before) / objects, 1)}


def attack_segment(address: str, store: TokenStore, slides: Slides) -> dict:
    secret, _ = store.add("clicks")
    target = slides.fresh_target()
    x0, y0, x1, y1 = target.inside.bounds
    request = pb.SegmentRequest(field_of_view=target.fov.to_pb(), clicks=[pb.Click(x=(x0 + x1) / 2, y=(y0 + y1) / 2, positive=True)] * 300)
    channel = grpc.insecure_channel(address)
    started = time.perf_counter()
    try:
        pb_grpc.SegmentationStub(channel).Segment(request, metadata=(("authorization", f"Bearer {secret}"),))
        code = "OK"
    except grpc.RpcError as error:
        code = error.code().name
    elapsed = (time.perf_counter() - started) * 1e3
    channel.close()
    return {"code": code, "refused_in_ms": round(elapsed, 1)}


def _png(pixels: np.ndarray) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".png", pixels)
    assert ok
    return encoded.tobytes()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="revocations to time (default 5)")
    parser.add_argument("--opens", type=int, default=3, help="victim opens timed idle and under attack (median; default 3)")
    parser.add_argument("--objects", type=int, default=4, help="objects driven through 300 box changes each (default 4)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="FLAG",
                        help="extra flag for `slidesam-server serve`, written with '=' (repeatable)")
    parser.add_argument("--server-log", type=Path, default=ROOT / "demo-output" / "attack-server.log",
                        help="the started server's log (default demo-output/attack-server.log)")
    args = parser.parse_args(argv)
    if min(args.repeats, args.opens, args.objects) < 1:
        parser.error("--repeats, --opens and --objects must be >= 1")
    return args


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="slidesam-attack-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        (work / "slides").mkdir()
        slides = write_slides(work / "slides", 2)
        ModelRegistry.create(device="cpu").fetch(DEFAULT_MODEL)
        store = TokenStore(work / "tokens.json")
        store.add("nobody")
        note(f"starting the server (log: {args.server_log})")
        server = cleanup.enter_context(LocalServer(work / "slides", args.server_log, tokens_file=store.path,
                                                   metrics=True, extra_args=args.server_arg))
        report = {"server_rss_at_start_mib": memory_mib(server.pid)["rss"]}
        report["revoke"] = attack_revoke(server.address, store, slides.fresh_target(), args.repeats)
        report["uploads"] = attack_uploads(server.address, store, slides, server.pid, args.opens)
        report["rate_limit"] = attack_rate_limit(server.address, store)
        report["history"] = attack_history(server.address, store, slides, server.pid, args.objects)
        report["segment_300_clicks"] = attack_segment(server.address, store, slides)
        report["server_peak_rss_mib"] = memory_mib(server.pid)["peak"]
    for name, figures in report.items():
        note(f"{name}: {figures}")
    print(json.dumps(report))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
