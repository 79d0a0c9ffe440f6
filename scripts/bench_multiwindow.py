"""Multi-window objects: per-click latency beside the single-window click, and the first click on a new
object with and without a precomputed slide.

Run through ./scripts/bench_multiwindow. Everything is measured in one run, interleaved round by round,
in-process on the real CMU-1-Small-Region slide with the real MobileSAM weights:

- per click (after the first): the same field of view (1600 x 1600 level-0 px over the epithelium of the
  demo, at x20) as a multi-window object and as one window (`windows="single"`, which the model then sees
  at about x12.8), and the demo's own single-window field of view at x10;
- the first click on a new object (open + first click, caches emptied): a multi-window object and a
  grid-aligned single-window field of view, each without and with the slide precomputed at x20
  (`slidesam-server precompute`).
Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from slidesam.lab.demo_object import CLICKS, REGION, SLIDE_ID  # noqa: E402
from slidesam.server.engine.cache import EmbeddingCache  # noqa: E402
from slidesam.server.engine.embedding_store import EmbeddingStore  # noqa: E402
from slidesam.server.engine.engine import Engine  # noqa: E402
from slidesam.server.engine.prompts import Click, PolygonRequest, RegionRequest, SlideRef  # noqa: E402
from slidesam.server.engine.session import EngineObject  # noqa: E402
from slidesam.server.models.registry import ModelRegistry  # noqa: E402
from slidesam.server.engine.precompute import precompute  # noqa: E402
from slidesam.server.slides.samples import fetch_cmu_small_region  # noqa: E402
from slidesam.server.slides.regions import Rect, Resolution  # noqa: E402
from slidesam.server.slides.store import SlideStore  # noqa: E402
from slidesam.server.uploads.store import UploadStore  # noqa: E402

LARGE_REGION = Rect(600.0, 1100.0, 1600.0, 1600.0)   # holds every demo click; 1600 px at x20
POLYGONS = PolygonRequest()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def clicks_ms(engine: Engine, fov: RegionRequest) -> tuple[float, list[float], list[dict]]:
    """Open + first click (ms), then the later clicks one by one (ms each) and their window counts."""
    started = time.perf_counter()
    session, _ = EngineObject.open(engine, fov, "mobile_sam", POLYGONS)
    session.add_clicks([Click(CLICKS[0].x, CLICKS[0].y, CLICKS[0].positive)])
    first = (time.perf_counter() - started) * 1e3
    later, details = [], []
    for click in CLICKS[1:]:
        started = time.perf_counter()
        outcome = session.add_clicks([Click(click.x, click.y, click.positive)])
        later.append((time.perf_counter() - started) * 1e3)
        details.append({"windows": outcome.resolution.windows, "decoded": outcome.resolution.windows_decoded,
                        "encoded": outcome.timings.windows_encoded})
    return first, later, details


def first_click(engine: Engine, fov: RegionRequest) -> dict:
    """Open + first click on a new object with empty memory caches: ms, encodes and store reads."""
    engine.cache.clear()
    started = time.perf_counter()
    session, opened = EngineObject.open(engine, fov, "mobile_sam", POLYGONS)
    outcome = session.add_clicks([Click(CLICKS[0].x, CLICKS[0].y, True)])
    return {
        "ms": (time.perf_counter() - started) * 1e3,
        "encodes": opened.timings.windows_encoded + outcome.timings.windows_encoded,
        "from_store": opened.timings.windows_from_store + outcome.timings.windows_from_store,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help=f"objects per path ({len(CLICKS)} clicks each)")
    parser.add_argument("--first-click-rounds", type=int, default=3, help="new objects timed per first-click path")
    parser.add_argument("--workdir", type=Path, default=Path("demo-output"), help="where the slide is kept")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    slide_path = fetch_cmu_small_region(args.workdir / "slides")
    registry = ModelRegistry.create(device=args.device)
    registry.fetch("mobile_sam")
    registry.get("mobile_sam")
    slides = SlideStore(slide_path.parent)
    store_dir = Path(tempfile.mkdtemp(prefix="slidesam-bench-store-"))
    store = EmbeddingStore(store_dir, 2**30)
    started = time.perf_counter()
    report = precompute([SLIDE_ID], registry, "mobile_sam", Resolution("magnification", 20), store, slide_root=slide_path.parent)
    precompute_s = time.perf_counter() - started
    plain = Engine(registry, slides, UploadStore(), EmbeddingCache(2**30))
    stored = Engine(registry, slides, UploadStore(), EmbeddingCache(2**30), store=store)

    x20, x10 = Resolution("magnification", 20), Resolution("magnification", 10)
    multi = RegionRequest(SlideRef(SLIDE_ID), LARGE_REGION, x20)
    squeezed = RegionRequest(SlideRef(SLIDE_ID), LARGE_REGION, x20, windows="single")
    demo = RegionRequest(SlideRef(SLIDE_ID), Rect(*REGION), x10)
    aligned = RegionRequest(SlideRef(SLIDE_ID), Rect(CLICKS[0].x - 256, CLICKS[0].y - 256, 512, 512), x20, align_to_grid=True)

    paths = {"multi-window x20": multi, "one window over the same region": squeezed, "demo field of view x10": demo}
    later: dict[str, list[float]] = {name: [] for name in paths}
    windows: list[dict] = []
    for name, fov in paths.items():  # warm-up: every embedding cached
        clicks_ms(plain, fov)
    for _ in tqdm(range(args.rounds), desc="per-click rounds (interleaved)", unit="round"):
        for name, fov in paths.items():
            _, times, details = clicks_ms(plain, fov)
            later[name] += times
            if fov is multi:
                windows += details

    first: dict[str, list[dict]] = {key: [] for key in ("multi, no store", "multi, precomputed", "aligned, no store", "aligned, precomputed")}
    for _ in tqdm(range(args.first_click_rounds), desc="first-click rounds (interleaved)", unit="round"):
        first["multi, no store"].append(first_click(plain, multi))
        first["multi, precomputed"].append(first_click(stored, multi))
        first["aligned, no store"].append(first_click(plain, aligned))
        first["aligned, precomputed"].append(first_click(stored, aligned))

    summary = {
        "benchmark": "bench_multiwindow",
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "cpu_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "slide": SLIDE_ID,
        "large_region_level0": [LARGE_REGION.x, LARGE_REGION.y, LARGE_REGION.width, LARGE_REGION.height],
        "precompute": {"seconds": precompute_s, "windows": report.encoded, "windows_per_second": report.windows_per_second},
        "clicks_timed_per_path": len(later["multi-window x20"]),
        "mean_windows": statistics.mean(d["windows"] for d in windows),
        "mean_windows_decoded_per_click": statistics.mean(d["decoded"] for d in windows),
    }
    for name, times in later.items():
        summary[f"{name} p50_ms"] = statistics.median(times)
        summary[f"{name} p95_ms"] = percentile(times, 95)
    for name, runs in first.items():
        summary[f"first click {name} p50_ms"] = statistics.median(r["ms"] for r in runs)
        summary[f"first click {name} encodes"] = runs[-1]["encodes"]
        summary[f"first click {name} from_store"] = runs[-1]["from_store"]
    summary["multi over single-window p50"] = summary["multi-window x20 p50_ms"] / summary["one window over the same region p50_ms"]

    print()
    print(f"{'click after the first':<40}{'p50 ms':>10}{'p95 ms':>10}")
    for name in later:
        print(f"{name:<40}{summary[f'{name} p50_ms']:>10.1f}{summary[f'{name} p95_ms']:>10.1f}")
    print(f"multi-window: {summary['mean_windows']:.1f} windows behind the mask, "
          f"{summary['mean_windows_decoded_per_click']:.1f} decoded per click (coarse included)")
    print(f"\n{'first click on a new object':<40}{'p50 ms':>10}{'encodes':>9}{'stored':>8}")
    for name in first:
        print(f"{name:<40}{summary[f'first click {name} p50_ms']:>10.1f}"
              f"{summary[f'first click {name} encodes']:>9}{summary[f'first click {name} from_store']:>8}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
