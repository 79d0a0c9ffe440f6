"""Per-click latency: slidesam over gRPC (cached embedding) vs SAM's predictor in-process vs re-encoding per click.

Run through ./scripts/bench_click. All three are measured in one run, interleaved round by round, on the
real CMU-1-Small-Region slide with the real MobileSAM weights; the server runs in its own process.
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle torch threads must not spin while the other side works

import numpy as np  # noqa: E402
import openslide  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from slidesam.lab.demo_object import CLICKS, REGION, SLIDE_ID, demo_fov  # noqa: E402
from slidesam.lab.local_server import LocalServer  # noqa: E402
from slidesam.qupath_bridge.client import SlidesamClient  # noqa: E402
from slidesam.qupath_bridge.wire_requests import FieldOfView  # noqa: E402
from slidesam.server.models.registry import ModelRegistry  # noqa: E402
from slidesam.server.slides.samples import fetch_cmu_small_region  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def region_pixels(slide_path: Path, downsample: float) -> np.ndarray:
    """The same pixels the server reads for the field of view (level 0 here, resized by OpenCV)."""
    import cv2

    x, y, w, h = REGION
    with openslide.OpenSlide(str(slide_path)) as slide:
        rgb = np.asarray(slide.read_region((int(x), int(y)), 0, (int(w), int(h))).convert("RGB"))
    return cv2.resize(rgb, (round(w / downsample), round(h / downsample)), interpolation=cv2.INTER_AREA)


class InProcess:
    """SAM's own predictor, called the way its README shows, for the same clicks."""

    def __init__(self, registry: ModelRegistry, pixels: np.ndarray, downsample: float):
        with warnings.catch_warnings():  # mobile_sam re-registers timm model names on import
            warnings.simplefilter("ignore")
            from mobile_sam import SamPredictor
        self.predictor = SamPredictor(registry.get("mobile_sam")[1].sam)
        self.pixels = pixels
        self.downsample = downsample
        self.predictor.set_image(pixels)

    def points(self, count: int) -> tuple[np.ndarray, np.ndarray]:
        x0, y0 = REGION[:2]
        clicks = CLICKS[:count]
        coords = np.array([[(c.x - x0) / self.downsample, (c.y - y0) / self.downsample] for c in clicks])
        return coords, np.array([1 if c.positive else 0 for c in clicks])

    def object(self) -> list[float]:
        """One object's clicks through predictor.predict, previous logits fed back; ms per click."""
        times, logits = [], None
        for count in range(1, len(CLICKS) + 1):
            coords, labels = self.points(count)
            started = time.perf_counter()
            masks, scores, low_res = self.predictor.predict(coords, labels, mask_input=logits, multimask_output=logits is None)
            times.append((time.perf_counter() - started) * 1e3)
            best = int(np.argmax(scores))
            logits = low_res[best : best + 1]
        return times

    def reencode_click(self, count: int) -> float:
        """What servers without an embedding cache do: set_image + predict for every click."""
        coords, labels = self.points(count)
        started = time.perf_counter()
        self.predictor.set_image(self.pixels)
        self.predictor.predict(coords, labels, multimask_output=True)
        return (time.perf_counter() - started) * 1e3


def grpc_object(client: SlidesamClient, fov: FieldOfView) -> tuple[list[float], list[float], list[float], list[bool]]:
    """One object's clicks over gRPC; client round trips and the server's decode/postprocess, ms."""
    round_trips, decode, post, hits = [], [], [], []
    with client.open_object(fov) as session:
        for click in CLICKS:
            started = time.perf_counter()
            result = session.click(click.x, click.y, click.positive)
            round_trips.append((time.perf_counter() - started) * 1e3)
            decode.append(result.timings.decode_ms)
            post.append(result.timings.postprocess_ms)
            hits.append(result.cache_hit)
    return round_trips, decode, post, hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help=f"objects per method ({len(CLICKS)} clicks each)")
    parser.add_argument("--reencode-clicks", type=int, default=6, help="clicks timed with re-encoding (each costs an encode)")
    parser.add_argument("--workdir", type=Path, default=Path("demo-output"), help="where the slide and server log go")
    parser.add_argument("--device", default="cpu", help="torch device for both sides (cpu, cuda)")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    slide_path = fetch_cmu_small_region(args.workdir / "slides")
    registry = ModelRegistry.create(device=args.device)
    registry.fetch("mobile_sam")
    log = args.workdir / "bench-server.log"
    print(f"starting the server (log: {log})")
    with LocalServer(slide_path.parent, log, device=args.device) as server, SlidesamClient(server.address) as client:
        fov = demo_fov()
        downsample = client.segment(fov, CLICKS[:1]).raw.downsample  # warms the server's cache
        local = InProcess(registry, region_pixels(slide_path, downsample), downsample)
        local.object()  # warm-up
        grpc_times, decode, post, hits, inproc_times, reencode_times = [], [], [], [], [], []
        for _ in tqdm(range(args.rounds), desc="rounds (gRPC + in-process, interleaved)", unit="object"):
            trips, dec, pp, hit = grpc_object(client, fov)
            grpc_times += trips
            decode += dec
            post += pp
            hits += hit
            inproc_times += local.object()
        for index in tqdm(range(args.reencode_clicks), desc="re-encode on every click", unit="click"):
            reencode_times.append(local.reencode_click(1 + index % len(CLICKS)))

    summary = {
        "benchmark": "bench_click",
        "device": args.device,
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "slide": SLIDE_ID,
        "region_level0": REGION,
        "region_pixels": list(local.pixels.shape[:2]),
        "clicks_timed": len(grpc_times),
        "cache_hits": f"{sum(hits)}/{len(hits)}",
        "grpc_p50_ms": statistics.median(grpc_times),
        "grpc_p95_ms": percentile(grpc_times, 95),
        "inprocess_p50_ms": statistics.median(inproc_times),
        "inprocess_p95_ms": percentile(inproc_times, 95),
        "reencode_p50_ms": statistics.median(reencode_times),
        "reencode_p95_ms": percentile(reencode_times, 95),
        "server_decode_p50_ms": statistics.median(decode),
        "server_postprocess_p50_ms": statistics.median(post),
    }
    summary["grpc_over_inprocess_p50"] = summary["grpc_p50_ms"] / summary["inprocess_p50_ms"]
    summary["reencode_over_grpc_p50"] = summary["reencode_p50_ms"] / summary["grpc_p50_ms"]
    print()
    print(f"{'path':<36}{'p50 ms':>10}{'p95 ms':>10}")
    print(f"{'gRPC, cached embedding (slidesam)':<36}{summary['grpc_p50_ms']:>10.1f}{summary['grpc_p95_ms']:>10.1f}")
    print(f"{'SamPredictor.predict in-process':<36}{summary['inprocess_p50_ms']:>10.1f}{summary['inprocess_p95_ms']:>10.1f}")
    print(f"{'re-encode on every click':<36}{summary['reencode_p50_ms']:>10.1f}{summary['reencode_p95_ms']:>10.1f}")
    print(f"server side, p50: decode {summary['server_decode_p50_ms']:.1f} ms, mask to polygons {summary['server_postprocess_p50_ms']:.2f} ms; "
          f"cache hits {summary['cache_hits']}")
    print(f"gRPC / in-process p50: {summary['grpc_over_inprocess_p50']:.3f}x (goal <= 1.10x); "
          f"re-encode / gRPC p50: {summary['reencode_over_grpc_p50']:.1f}x")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
