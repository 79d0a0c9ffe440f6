"""Precompute throughput, the store's byte budget, and SIGKILL-resume byte identity.

Run through ./scripts/bench_precompute. On CMU-1-Small-Region when the demo's sample folder holds it
(else on a generated slide with tissue on glass), with the real MobileSAM weights:
1. precompute into a fresh store: windows per second, bytes on disk against the budget;
2. again into a fresh store with a budget of about half of what the slide needs, a watcher summing
   the store's files (temporaries included) every few milliseconds: the largest total seen;
3. `slidesam-server precompute` in a subprocess, SIGKILLed once its first window file appears,
   then run again: every file compared byte for byte with run 1's store.
Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from slidesam.lab.local_server import server_command  # noqa: E402
from slidesam.server.engine.embedding_store import MANIFEST, EmbeddingStore  # noqa: E402
from slidesam.server.models.checkpoints import default_model_dir  # noqa: E402
from slidesam.server.models.registry import ModelRegistry  # noqa: E402
from slidesam.server.engine.precompute import PrecomputeReport, default_batch_size, precompute  # noqa: E402
from slidesam.server.slides.regions import Resolution  # noqa: E402
from slidesam.lab.synthetic.tissue_slide import write_tissue_slide  # noqa: E402

LARGE_BUDGET = 1 << 40


def store_bytes(root: Path) -> int:
    """Bytes of every file under the store but its manifest (window files and temporaries)."""
    total = 0
    for path in root.rglob("*"):
        try:
            if path.name != MANIFEST and path.is_file():
                total += path.stat().st_size
        except FileNotFoundError:  # renamed or evicted while we looked
            pass
    return total


class Watcher(threading.Thread):
    """Samples the store's size on disk until stopped; keeps the largest."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.largest, self.samples = root, 0, 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            self.largest = max(self.largest, store_bytes(self.root))
            self.samples += 1
            time.sleep(0.01)

    def stop(self) -> int:
        self._done.set()
        self.join()
        self.largest = max(self.largest, store_bytes(self.root))
        return self.largest


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def run(registry: ModelRegistry, slide: Path, resolution: Resolution, store: EmbeddingStore, batch: int, dtype: str) -> PrecomputeReport:
    return precompute([slide], registry, "mobile_sam", resolution, store, batch, dtype=getattr(torch, dtype), progress=False)


def killed_and_resumed(slide: Path, magnification: float, store: Path, batch: int, dtype: str, device: str) -> dict:
    """The CLI in a subprocess, SIGKILLed after its first window file; then run again to the end."""
    command = server_command("precompute", str(slide), "--magnification", f"{magnification:g}",
                             "--store", str(store), "--batch-size", str(batch), "--dtype", dtype, "--device", device)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not any(store.rglob("*.emb")) and process.poll() is None:
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    at_kill = len(list(store.rglob("*.emb")))
    temporaries = len(list(store.rglob("*.tmp")))
    resumed = subprocess.run(command, capture_output=True, text=True)
    if resumed.returncode != 0:
        raise SystemExit(f"the resumed precompute failed:\n{resumed.stderr[-2000:]}")
    return {"files_at_kill": at_kill, "temporaries_at_kill": temporaries, "resumed_output": resumed.stdout.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--magnification", type=float, default=20.0, help="grid magnification (default 20: CMU's full resolution)")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per encoder pass (default 8 on CUDA, 1 on the CPU)")
    parser.add_argument("--dtype", choices=["float16", "float32"], default="float16")
    parser.add_argument("--generated", action="store_true", help="use a generated slide even when CMU-1-Small-Region is there")
    parser.add_argument("--workdir", type=Path, default=None, help="where slides and stores go (default: a temporary folder)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-precompute-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cmu = default_model_dir().parent / "samples" / "CMU-1-Small-Region.svs"
    slide = cmu if cmu.is_file() and not args.generated else write_tissue_slide(workdir / "generated.svs")
    resolution = Resolution("magnification", args.magnification)
    registry = ModelRegistry.create(device=args.device)
    registry.fetch("mobile_sam")
    spec, model = registry.get("mobile_sam")
    batch = args.batch_size or default_batch_size(model.device)
    model.encode_many([np.zeros((1024, 1024, 3), dtype=np.uint8)] * batch)  # warm-up (CUDA kernels, allocator)
    print(f"slide {slide.name}, x{args.magnification:g}, {spec.model_id} on {model.device}, batch {batch}, {args.dtype}")

    full = EmbeddingStore(workdir / "store-full", LARGE_BUDGET)
    report = run(registry, slide, resolution, full, batch, args.dtype)
    needed = full.stats().bytes
    slide_report = report.slides[0]
    print(f"1. fresh store: {slide_report.tissue} tissue windows of {slide_report.windows} ({slide_report.background} background), "
          f"{report.encoded} encoded in {report.seconds:.1f} s = {report.windows_per_second:.2f} windows/s; "
          f"{needed} bytes on disk ({store_bytes(full.root)} by a fresh count)")

    budget = max(1, needed // 2)
    small = EmbeddingStore(workdir / "store-small", budget)
    watcher = Watcher(small.root)
    watcher.start()
    small_report = run(registry, slide, resolution, small, batch, args.dtype)
    largest = watcher.stop()
    print(f"2. budget {budget} bytes (half of what the slide needs): largest size seen {largest} bytes in {watcher.samples} samples, "
          f"{small_report.evicted} evicted, {small.stats().entries} windows kept; within budget: {largest <= budget}")

    resumed_root = workdir / "store-resumed"
    resume = killed_and_resumed(slide, args.magnification, resumed_root, batch, args.dtype, args.device)
    identical = files(resumed_root) == files(full.root)
    print(f"3. SIGKILL after {resume['files_at_kill']} of {slide_report.tissue} window files "
          f"({resume['temporaries_at_kill']} temporaries left); resumed: {resume['resumed_output']}; "
          f"byte-identical to run 1: {identical}")

    summary = {
        "benchmark": "bench_precompute",
        "device": str(model.device),
        "gpu": torch.cuda.get_device_name(model.device) if model.device.type == "cuda" else None,
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "slide": slide.name,
        "magnification": args.magnification,
        "model_id": spec.model_id,
        "dtype": args.dtype,
        "batch_size": batch,
        "windows": slide_report.windows,
        "tissue_windows": slide_report.tissue,
        "encoded": report.encoded,
        "seconds": round(report.seconds, 3),
        "windows_per_second": round(report.windows_per_second, 3),
        "store_bytes": needed,
        "small_budget_bytes": budget,
        "small_budget_largest_seen_bytes": largest,
        "small_budget_within": largest <= budget,
        "small_budget_evicted": small_report.evicted,
        "kill_files_at_kill": resume["files_at_kill"],
        "resume_byte_identical": identical,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
