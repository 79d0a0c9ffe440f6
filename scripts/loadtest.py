"""Load test: simulated users click at the same time on shared and own fields of view of a real server.

Run through ./scripts/loadtest. Starts `slidesam-server serve` in its own process on a free loopback
port (or targets a running one with --address), with one token per simulated user, so every user is
a distinct user to the scheduler's fairness. The slides are a few generated synthetic slides (whose
object is known: positives land inside it, negatives outside) and the real CMU-1-Small-Region.

Each user opens an object on its field of view (an encode on a cache miss), clicks --clicks times with
a jittered --think-ms pause before each click, now and then undoes one, finishes, and starts the next
object on the same field of view, for --objects objects or until --duration seconds have passed.
About --shared-fraction of the users share two fields of view (embedding cache hits after the first
open), the others have one each. --batch-users more users meanwhile run `Segment` calls on fresh fields
of view (an encode each), as pre-annotation would.

Reports per-click latency measured by the client (wall time of `click`) and the server's own queue and
decode times, throughput, opens, errors by status code, and the server's memory (peak and current RSS),
and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import shapely
import torch
from prometheus_client.parser import text_string_to_metric_families
from shapely.geometry.base import BaseGeometry
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import demo  # noqa: E402  (the demo's field of view and clicks on the real slide)

from slidesam.qupath_bridge.client import Click, ConnectionLost, FieldOfView, ServerError, SlideImage, SlidesamClient  # noqa: E402
from slidesam.server.models.checkpoints import default_model_dir  # noqa: E402
from slidesam.server.models.registry import DEFAULT_MODEL, ModelRegistry  # noqa: E402
from slidesam.server.samples import fetch_cmu_small_region  # noqa: E402
from slidesam.lab.synthetic.slide_writer import SyntheticSlide, write_synthetic_slide  # noqa: E402
from slidesam.server.edge.tokens import TokenStore  # noqa: E402

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
SLIDE_SIZE = (4096, 3072)
OBJECT_CENTER = (2048.0, 1536.0)
OBJECT_RADII = (600.0, 400.0)
FOV_SIDE = 2048.0           # level-0 side of a synthetic field of view (read to fit SAM's 1024-px input)
REGION_STEP = 4.0           # level-0 shift between successive distinct fields of view
REGION_GRID = 128           # REGION_GRID² distinct shifts, within ±256 px of the centred field of view
CLICK_MARGIN = 40.0         # level-0 px kept between a synthetic click and the object's outline
CMU_CLICK_RADIUS = 15.0     # CMU clicks land within this many px of the demo's hand-placed ones
CMU_MAGNIFICATION = 10.0
POSITIVE_SHARE = 0.6        # after the first (always positive) click
UNDO_SHARE = 0.1            # chance of an undo after a click that is not an object's first
BATCH_CLICKS = 3
LISTENING = re.compile(r"slidesam-server listening on (\S+):(\d+)")
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
RSS_SAMPLE_S = 0.2


# ------------------------------------------------------------------------------------------------
# Where users click


def sample_point(area: BaseGeometry, rng: np.random.Generator) -> tuple[float, float]:
    """A uniformly random point of `area` (rejection sampling in its bounding box)."""
    x0, y0, x1, y1 = area.bounds
    while True:
        xs, ys = rng.uniform(x0, x1, 256), rng.uniform(y0, y1, 256)
        hits = np.flatnonzero(shapely.contains_xy(area, xs, ys))
        if hits.size:
            return float(xs[hits[0]]), float(ys[hits[0]])


@dataclass(frozen=True)
class Target:
    """A field of view and where clicks on it land: positives in `inside`, negatives in `outside` (level-0)."""

    fov: FieldOfView
    inside: BaseGeometry
    outside: BaseGeometry

    def click(self, positive: bool, rng: np.random.Generator) -> Click:
        return Click(*sample_point(self.inside if positive else self.outside, rng), positive)


@dataclass
class Slides:
    """The slides of one run, in their own folder under the server's slide root."""

    root: Path
    folder: Path
    synthetic: list[SyntheticSlide]
    cmu: Path
    _regions: Iterator[int] = field(default_factory=itertools.count)

    def slide_id(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def fresh_target(self) -> Target:
        """A synthetic field of view no other target of this run has (an encode on first use)."""
        index = next(self._regions)  # atomic under the GIL, so batch threads may share it
        slide = self.synthetic[index % len(self.synthetic)]
        shift = index // len(self.synthetic)
        dx = (shift % REGION_GRID - REGION_GRID / 2) * REGION_STEP
        dy = (shift // REGION_GRID % REGION_GRID - REGION_GRID / 2) * REGION_STEP
        x, y = OBJECT_CENTER[0] - FOV_SIDE / 2 + dx, OBJECT_CENTER[1] - FOV_SIDE / 2 + dy
        rect = shapely.box(x, y, x + FOV_SIDE, y + FOV_SIDE)
        fov = FieldOfView(SlideImage(self.slide_id(slide.path)), x, y, FOV_SIDE, FOV_SIDE)
        inside = slide.object_geometry.buffer(-CLICK_MARGIN) & rect
        outside = rect - slide.object_geometry.buffer(CLICK_MARGIN)
        return Target(fov, prepared(inside), prepared(outside))

    def cmu_target(self) -> Target:
        """The demo's field of view over the epithelium of the real slide, clicks near the demo's clicks."""
        def near(positive: bool) -> BaseGeometry:
            return shapely.union_all([shapely.Point(c.x, c.y).buffer(CMU_CLICK_RADIUS) for c in demo.CLICKS if c.positive == positive])

        fov = FieldOfView(SlideImage(self.slide_id(self.cmu)), *demo.REGION, magnification=CMU_MAGNIFICATION)
        return Target(fov, prepared(near(True)), prepared(near(False)))


def prepared(geometry: BaseGeometry) -> BaseGeometry:
    shapely.prepare(geometry)
    return geometry


def write_slides(slide_root: Path, count: int) -> Slides:
    """`count` synthetic slides and a copy of CMU-1-Small-Region in a new folder under `slide_root`."""
    folder = Path(tempfile.mkdtemp(prefix="loadtest-", dir=slide_root))
    synthetic = [
        write_synthetic_slide(folder / f"synthetic-{index}.svs", *SLIDE_SIZE, levels=(1, 4),
                              object_center=OBJECT_CENTER, object_radii=OBJECT_RADII, seed=index)
        for index in range(count)
    ]
    cmu = folder / "CMU-1-Small-Region.svs"
    shutil.copyfile(fetch_cmu_small_region(default_model_dir().parent / "samples"), cmu)
    return Slides(slide_root, folder, synthetic, cmu)


# ------------------------------------------------------------------------------------------------
# The server


class ServerProcess:
    """`slidesam-server serve` in its own process on a free loopback port; SIGTERM and wait on exit."""

    def __init__(self, slide_root: Path, tokens_file: Path, extra_args: list[str], log_path: Path):
        self.metrics_port = None if any(a.startswith("--metrics") for a in extra_args) else demo.free_port()
        metrics = [] if self.metrics_port is None else ["--metrics-port", str(self.metrics_port)]
        command = [sys.executable, "-m", "slidesam.server.cli", "serve", "--slide-root", str(slide_root), "--port", "0",
                   "--tokens-file", str(tokens_file), *metrics, *extra_args]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with log_path.open("w") as log:
            self.process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
        self.pid = self.process.pid
        self.exit_code: int | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, name="server-stdout", daemon=True).start()
        try:
            self.address = self._wait_listening()
        except BaseException:  # Ctrl-C or SIGTERM while the server starts
            self.stop()
            raise

    def _read_stdout(self) -> None:
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _wait_listening(self) -> str:
        """HOST:PORT from the server's "listening" line; SystemExit with its log when it never comes."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                tail = "".join(self.log_path.read_text().splitlines(keepends=True)[-30:])
                raise SystemExit(f"the server did not start (log {self.log_path}):\n{tail}")
            match = LISTENING.search(line)
            if match:
                host = "127.0.0.1" if match[1] in ("0.0.0.0", "::", "[::]") else match[1]
                return f"{host}:{match[2]}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.exit_code = self.process.returncode


def memory_mib(pid: int | None) -> dict[str, float | None]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a local process, MiB; None when unknown."""
    values: dict[str, float | None] = {"rss": None, "peak": None}
    if pid is None:
        return values
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values["rss" if name == "VmRSS" else "peak"] = round(int(rest.split()[0]) / 1024, 1)
    return values


class RssSampler:
    """The highest resident memory (VmRSS, MiB) of a local process, sampled every RSS_SAMPLE_S until stop()."""

    def __init__(self, pid: int | None):
        self._pid = pid
        self._highest: float | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            rss = memory_mib(self._pid)["rss"]
            if rss is not None:
                self._highest = max(rss, self._highest or 0.0)
            if self._stopped.wait(RSS_SAMPLE_S):
                return

    def stop(self) -> float | None:
        self._stopped.set()
        self._thread.join()
        return self._highest


def scrape_metrics(port: int | None) -> dict[str, float]:
    """The server's unlabelled Prometheus samples by name (empty without a metrics port or a server)."""
    if port is None:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples if not s.labels}


# ------------------------------------------------------------------------------------------------
# Measurements


@dataclass
class Recorder:
    """What the simulated users measured; shared by their threads."""

    progress: tqdm
    click_ms: list[float] = field(default_factory=list)
    queue_ms: list[float] = field(default_factory=list)
    decode_ms: list[float] = field(default_factory=list)
    open_ms: list[float] = field(default_factory=list)
    open_hits: int = 0
    undo_ms: list[float] = field(default_factory=list)
    segment_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    error_examples: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def clicked(self, ms: float, queue_ms: float, decode_ms: float) -> None:
        with self._lock:
            self.click_ms.append(ms)
            self.queue_ms.append(queue_ms)
            self.decode_ms.append(decode_ms)
            self.progress.update()

    def opened(self, ms: float, cache_hit: bool) -> None:
        with self._lock:
            self.open_ms.append(ms)
            self.open_hits += cache_hit

    def undone(self, ms: float) -> None:
        with self._lock:
            self.undo_ms.append(ms)

    def segmented(self, ms: float) -> None:
        with self._lock:
            self.segment_ms.append(ms)

    def failed(self, code: str, what: str, message: str) -> None:
        with self._lock:
            self.errors[code] += 1
            self.error_examples.setdefault(code, f"{what}: {message}")


@dataclass(frozen=True)
class Phase:
    """The measured phase: over at its deadline, or earlier when stopped."""

    deadline: float
    stopped: threading.Event = field(default_factory=threading.Event)

    def over(self) -> bool:
        return self.stopped.is_set() or time.monotonic() >= self.deadline

    def pause(self, seconds: float) -> None:
        self.stopped.wait(max(0.0, min(seconds, self.deadline - time.monotonic())))


def timed(recorder: Recorder, phase: Phase, what: str, action: Callable[..., T], *args: Any) -> tuple[T, float] | None:
    """(action(*args), its wall time in ms), or None after a refusal, which is recorded by status code; waits
    the server's retry hint (RESOURCE_EXHAUSTED). ConnectionLost is recorded and raised."""
    started = time.perf_counter()
    try:
        result = action(*args)
    except ServerError as error:
        recorder.failed(error.code.name, what, error.message)
        if error.retry_after:
            phase.pause(error.retry_after)
        return None
    except ConnectionLost as error:
        recorder.failed("CONNECTION_LOST", what, str(error))
        raise
    return result, (time.perf_counter() - started) * 1e3


@dataclass(frozen=True)
class Workload:
    """What each interactive user does: objects x clicks, a think time before each click."""

    clicks: int
    objects: int
    think_ms: float

    def think(self, rng: np.random.Generator) -> float:
        """A think time in seconds: think_ms jittered by ±50 %."""
        return self.think_ms * rng.uniform(0.5, 1.5) / 1e3


@dataclass(frozen=True)
class User:
    """A simulated user: its own token, random generator and (interactive users) field of view."""

    name: str
    token: str | None
    seed: tuple[int, ...]  # seeds the user's own random generator
    target: Target | None = None  # interactive users click on one field of view; batch users take fresh ones


def annotate_object(client: SlidesamClient, user: User, work: Workload, rng: np.random.Generator,
                    phase: Phase, recorder: Recorder) -> None:
    """Open, click (with an occasional undo), finish: one object."""
    opened = timed(recorder, phase, "open", client.open_object, user.target.fov)
    if opened is None:
        return
    session, ms = opened
    recorder.opened(ms, session.result.cache_hit)
    with session:
        for index in range(work.clicks):
            phase.pause(work.think(rng))
            if phase.over():
                break
            click = user.target.click(index == 0 or rng.random() < POSITIVE_SHARE, rng)
            clicked = timed(recorder, phase, "click", session.click, click.x, click.y, click.positive)
            if clicked is None:
                continue
            result, ms = clicked
            recorder.clicked(ms, result.timings.queue_ms, result.timings.decode_ms)
            if index and rng.random() < UNDO_SHARE:
                phase.pause(work.think(rng))
                undone = timed(recorder, phase, "undo", session.undo)
                if undone is not None:
                    recorder.undone(undone[1])
        timed(recorder, phase, "finish", session.finish)


def interactive_user(address: str, user: User, work: Workload, phase: Phase, recorder: Recorder) -> None:
    """One pathologist: --objects objects on the user's field of view, until the phase is over."""
    rng = np.random.default_rng(user.seed)
    with SlidesamClient(address, token=user.token) as client:
        phase.pause(work.think(rng))  # users do not all arrive in the same instant
        with contextlib.suppress(ConnectionLost):  # recorded; the server is gone for this user
            for _ in range(work.objects):
                if phase.over():
                    break
                annotate_object(client, user, work, rng, phase, recorder)


def batch_user(address: str, user: User, slides: Slides, phase: Phase, recorder: Recorder) -> None:
    """Pre-annotation: Segment calls with a few clicks on fresh fields of view until the phase is over."""
    rng = np.random.default_rng(user.seed)
    with SlidesamClient(address, token=user.token) as client:
        while not phase.over():
            target = slides.fresh_target()
            clicks = [target.click(index == 0 or rng.random() < POSITIVE_SHARE, rng) for index in range(BATCH_CLICKS)]
            segmented = timed(recorder, phase, "segment", client.segment, target.fov, clicks)
            if segmented is not None:
                recorder.segmented(segmented[1])


class Threads:
    """Functions running on daemon threads (Ctrl-C never waits for them); join() re-raises the first failure."""

    def __init__(self, functions: list[Callable[[], None]]):
        self._failures: list[BaseException] = []
        self._threads = [threading.Thread(target=self._run, args=(function,), daemon=True) for function in functions]
        for thread in self._threads:
            thread.start()

    def _run(self, function: Callable[[], None]) -> None:
        try:
            function()
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            self._failures.append(error)

    def join(self) -> None:
        for thread in self._threads:
            thread.join()
        if self._failures:
            raise self._failures[0]


def warm_up(address: str, user: User, slides: Slides) -> None:
    """One open and click on a field of view nobody else uses, so first-use costs stay out of the figures."""
    target = slides.fresh_target()
    with SlidesamClient(address, token=user.token) as client:
        client.wait_ready(timeout=START_TIMEOUT_S)
        with client.open_object(target.fov) as session:
            click = target.click(True, np.random.default_rng(user.seed))
            session.click(click.x, click.y, click.positive)
            session.finish()


# ------------------------------------------------------------------------------------------------
# Report


def distribution(values: list[float]) -> dict[str, float | int | None]:
    """n, p50, p95, p99, mean and max of `values` (ms), rounded to 0.1."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    array = np.asarray(values)
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    stats = {"p50": p50, "p95": p95, "p99": p99, "mean": array.mean(), "max": array.max()}
    return {"n": len(values), **{name: round(float(value), 1) for name, value in stats.items()}}


def as_int(value: float | None) -> int | None:
    return None if value is None else int(value)


def metric_delta(before: dict[str, float], after: dict[str, float], name: str) -> float | None:
    return after[name] - before.get(name, 0.0) if name in after else None


@dataclass(frozen=True)
class Measurement:
    """The measured phase: what the users recorded, its wall time, and the server before and after it."""

    recorder: Recorder
    seconds: float
    memory_before: dict[str, float | None]
    memory_after: dict[str, float | None]
    rss_highest: float | None
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]


def build_report(args: argparse.Namespace, measured: Measurement, server_exit_code: int | None) -> dict:
    recorder, seconds = measured.recorder, measured.seconds
    metrics_before, metrics_after = measured.metrics_before, measured.metrics_after
    batches = metric_delta(metrics_before, metrics_after, "slidesam_decoder_batch_size_count")
    batched = metric_delta(metrics_before, metrics_after, "slidesam_decoder_batch_size_sum")
    return {
        "benchmark": "loadtest",
        "server": args.address or "own process",
        "server_args": args.server_arg,
        "users": args.users,
        "shared_users": shared_count(args),
        "batch_users": args.batch_users,
        "clicks_per_object": args.clicks,
        "objects_per_user": args.objects,
        "think_ms": args.think_ms,
        "duration_limit_s": args.duration,
        "duration_s": round(seconds, 2),
        "clicks": len(recorder.click_ms),
        "clicks_per_s": round(len(recorder.click_ms) / seconds, 2),
        "click_ms": distribution(recorder.click_ms),
        "server_queue_ms": distribution(recorder.queue_ms),
        "server_decode_ms": distribution(recorder.decode_ms),
        "opens": len(recorder.open_ms),
        "open_cache_hits": recorder.open_hits,
        "open_ms": distribution(recorder.open_ms),
        "undos": len(recorder.undo_ms),
        "undo_ms": distribution(recorder.undo_ms),
        "batch_segments": len(recorder.segment_ms),
        "batch_segments_per_min": round(len(recorder.segment_ms) / seconds * 60, 1),
        "batch_segment_ms": distribution(recorder.segment_ms),
        "errors": dict(recorder.errors),
        "error_examples": recorder.error_examples,
        "server_peak_rss_mib": measured.memory_after["peak"],
        "server_rss_mib": measured.memory_after["rss"],
        "server_rss_max_during_mib": measured.rss_highest,
        "server_rss_before_mib": measured.memory_before["rss"],
        "server_decoder_batch_mean": round(batched / batches, 2) if batches else None,
        "server_cache_entries": as_int(metrics_after.get("slidesam_cache_entries")),
        "server_cache_evictions": as_int(metric_delta(metrics_before, metrics_after, "slidesam_cache_evictions_total")),
        "server_exit_code": server_exit_code,
        "host": {"cpu_count": os.cpu_count(), "torch_threads": torch_threads(args), "python": platform.python_version(),
                 "machine": platform.processor() or platform.machine(), "load_avg_1min": round(os.getloadavg()[0], 2)},
    }


def torch_threads(args: argparse.Namespace) -> int | None:
    """The server's torch CPU threads: its --threads, else torch's default on this host (unknown for --address)."""
    for value in args.server_arg:
        if value.startswith("--threads="):
            return int(value.partition("=")[2])
    return None if args.address else torch.get_num_threads()


def summary_lines(report: dict) -> list[str]:
    def row(label: str, stats: dict) -> str:
        if not stats["n"]:
            return f"{label:<22}{'n=0':>8}"
        return (f"{label:<22}{'n=' + str(stats['n']):>8}" + "".join(f"{stats[k]:>10.1f}" for k in ("p50", "p95", "p99", "mean", "max")))

    def mib(key: str) -> str:
        return "n/a" if report[key] is None else f"{report[key]:.0f} MiB"

    errors = ", ".join(f"{code} {n}" for code, n in report["errors"].items()) or "none"
    return [
        (f"{report['users']} users ({report['shared_users']} on shared fields of view) + {report['batch_users']} batch, "
         f"{report['duration_s']:.1f} s measured; server: {report['server']} {' '.join(report['server_args'])}").rstrip(),
        f"{'ms':<30}{'p50':>10}{'p95':>10}{'p99':>10}{'mean':>10}{'max':>10}",
        row("click (client)", report["click_ms"]),
        row("  server queue", report["server_queue_ms"]),
        row("  server decode", report["server_decode_ms"]),
        row(f"open ({report['open_cache_hits']} cache hits)", report["open_ms"]),
        row("undo", report["undo_ms"]),
        row("batch segment", report["batch_segment_ms"]),
        (f"throughput: {report['clicks_per_s']:.2f} clicks/s, {report['batch_segments_per_min']:.1f} batch segments/min; "
         f"decoder batch mean: {report['server_decoder_batch_mean']}"),
        f"errors: {errors}",
        (f"server memory (RSS): after warm-up {mib('server_rss_before_mib')}, highest while measuring "
         f"{mib('server_rss_max_during_mib')}, now {mib('server_rss_mib')}, peak since start (VmHWM) "
         f"{mib('server_peak_rss_mib')}; cached embeddings: {report['server_cache_entries']}"),
    ]


# ------------------------------------------------------------------------------------------------
# Main


def shared_count(args: argparse.Namespace) -> int:
    return round(args.users * args.shared_fraction)


def make_users(args: argparse.Namespace, slides: Slides, tokens: Callable[[str], str | None]) -> tuple[list[User], list[User], User]:
    """Interactive users (the first shared_count on two shared fields of view), batch users, the warm-up user."""
    shared = [slides.cmu_target(), slides.fresh_target()]
    interactive = []
    for index in range(args.users):
        target = shared[index % len(shared)] if index < shared_count(args) else slides.fresh_target()
        name = f"loadtest-{index:03d}"
        interactive.append(User(name, tokens(name), (args.seed, 0, index), target))
    batch = [User(f"loadtest-batch-{i:03d}", tokens(f"loadtest-batch-{i:03d}"), (args.seed, 1, i)) for i in range(args.batch_users)]
    return interactive, batch, User("loadtest-warmup", tokens("loadtest-warmup"), (args.seed, 2))


def measure(args: argparse.Namespace, address: str, slides: Slides, users: list[User], batch: list[User],
            pid: int | None, metrics_port: int | None) -> Measurement:
    """Runs the users until they are done or the duration is over (batch users stop with them)."""
    memory_before, metrics_before, sampler = memory_mib(pid), scrape_metrics(metrics_port), RssSampler(pid)
    work = Workload(args.clicks, args.objects, args.think_ms)
    phase = Phase(time.monotonic() + args.duration)
    with tqdm(total=args.users * args.objects * args.clicks, unit="click", desc="clicks", file=sys.stderr) as progress:
        recorder = Recorder(progress)
        started = time.perf_counter()
        batch_threads = Threads([lambda u=u: batch_user(address, u, slides, phase, recorder) for u in batch])
        try:
            Threads([lambda u=u: interactive_user(address, u, work, phase, recorder) for u in users]).join()
            seconds = time.perf_counter() - started
        finally:
            phase.stopped.set()
        batch_threads.join()  # each finishes the call it has in flight
    return Measurement(recorder, seconds, memory_before, memory_mib(pid), sampler.stop(), metrics_before, scrape_metrics(metrics_port))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=32, help="simulated interactive users, one token each (default 32)")
    parser.add_argument("--clicks", type=int, default=10, help="clicks per object (default 10)")
    parser.add_argument("--objects", type=int, default=3,
                        help="objects per user, so a user makes at most clicks x objects clicks (default 3)")
    parser.add_argument("--duration", type=float, default=120.0,
                        help="seconds the measured phase may last; users stop clicking then (default 120)")
    parser.add_argument("--think-ms", type=float, default=300.0,
                        help="a user's pause before each click, jittered by +-50%% (default 300)")
    parser.add_argument("--shared-fraction", type=float, default=0.5,
                        help="share of the users on the two shared fields of view (the real slide and a synthetic "
                             "one); the others get one each (default 0.5)")
    parser.add_argument("--batch-users", type=int, default=0,
                        help="users running batch Segment calls on fresh fields of view meanwhile (default 0)")
    parser.add_argument("--slides", type=int, default=3, help="synthetic slides to write (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of click positions and think times (default 0)")
    parser.add_argument("--server-arg", action="append", default=[], metavar="FLAG",
                        help="extra flag for `slidesam-server serve`, written with '=': --server-arg=--max-batch=1 "
                             "(repeatable)")
    parser.add_argument("--server-log", type=Path, default=ROOT / "demo-output" / "loadtest-server.log",
                        help="the started server's log (default demo-output/loadtest-server.log)")
    parser.add_argument("--address", metavar="HOST:PORT",
                        help="load a running server instead of starting one (needs --slide-root; memory only with --server-pid)")
    parser.add_argument("--token", action="append", default=[],
                        help="with --address: bearer token(s), handed to the users in turn (default $SLIDESAM_TOKEN); "
                             "users sharing a token are one user to the server's fairness")
    parser.add_argument("--slide-root", type=Path,
                        help="the server's slide root; the slides go into a new folder in it, removed afterwards "
                             "(default: a temporary directory, which the started server serves)")
    parser.add_argument("--server-pid", type=int, help="with --address: the server's process id, to read its memory")
    parser.add_argument("--json-only", action="store_true", help="print only the JSON line on stdout (progress stays on stderr)")
    args = parser.parse_args(argv)
    problems = [
        "--users must be >= 1" if args.users < 1 else "",
        "--clicks and --objects must be >= 1" if min(args.clicks, args.objects) < 1 else "",
        "--duration must be > 0" if args.duration <= 0 else "",
        "--think-ms and --batch-users must be >= 0" if min(args.think_ms, args.batch_users) < 0 else "",
        "--shared-fraction must be within [0, 1]" if not 0 <= args.shared_fraction <= 1 else "",
        "--slides must be >= 1 and --seed >= 0" if args.slides < 1 or args.seed < 0 else "",
        "--address needs --slide-root (the running server's)" if args.address and not args.slide_root else "",
        "--server-arg is for the started server, not --address" if args.address and args.server_arg else "",
        "--token and --server-pid go with --address" if not args.address and (args.token or args.server_pid) else "",
    ]
    if any(problems):
        parser.error("; ".join(p for p in problems if p))
    return args


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main() -> None:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped on SIGTERM too
    server: ServerProcess | None = None
    with contextlib.ExitStack() as cleanup:
        work = Path(tempfile.mkdtemp(prefix="slidesam-loadtest-"))
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        slide_root = args.slide_root or work / "slides"
        slide_root.mkdir(parents=True, exist_ok=True)
        note(f"writing {args.slides} synthetic slides and CMU-1-Small-Region under {slide_root}")
        slides = write_slides(slide_root, args.slides)
        cleanup.callback(shutil.rmtree, slides.folder, ignore_errors=True)
        if args.address:
            address, pid, metrics_port = args.address, args.server_pid, None
            tokens = itertools.cycle(args.token or [None])
            users, batch, warm = make_users(args, slides, lambda name: next(tokens))
        else:
            ModelRegistry.create(device="cpu").fetch(DEFAULT_MODEL)
            store = TokenStore(work / "tokens.json")
            users, batch, warm = make_users(args, slides, lambda name: store.add(name, note="loadtest")[0])
            note(f"starting the server (log: {args.server_log})")
            server = ServerProcess(slide_root, store.path, args.server_arg, args.server_log)
            cleanup.callback(server.stop)
            address, pid, metrics_port = server.address, server.pid, server.metrics_port
        note(f"server at {address}; warm-up, then {args.users} users + {args.batch_users} batch for at most {args.duration:g} s")
        warm_up(address, warm, slides)
        measured = measure(args, address, slides, users, batch, pid, metrics_port)
    report = build_report(args, measured, server.exit_code if server else None)
    if not args.json_only:
        print("\n".join(summary_lines(report)))
    print(json.dumps(report))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
