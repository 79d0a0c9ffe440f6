"""Soak test through the balancer: N servers behind HAProxy on loopback (lab/stack.py), simulated users
clicking through it (the load test's users: objects of --clicks clicks with a think time, on shared and own
fields of view, and --batch-users running Segment on fresh fields of view, which keeps the embedding cache
evicting), for --minutes at most and --max-clicks clicks at most. The resident memory of every server is
sampled every --sample-seconds; after --warmup-minutes (the caches fill up to their budget, --cache-mb) the
mean of the last tenth of the samples must be within --max-growth percent of the first tenth, and no
request may fail. Writes rss.png (the curves) and results.json to --out; exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from slidesam.lab.loadtest.targets import write_slides
from slidesam.lab.loadtest.users import Workload, make_users, measure, warm_up
from slidesam.lab.soak import RssCurve, growth, plot
from slidesam.lab.stack import Stack
from slidesam.server.edge.tokens import TokenStore
from slidesam.server.models.registry import DEFAULT_MODEL, ModelRegistry

ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0, help="length of the run, warm-up included (default 30)")
    parser.add_argument("--warmup-minutes", type=float, default=5.0, help="minutes not judged at the start (default 5)")
    parser.add_argument("--backends", type=int, default=2, help="servers behind the balancer (default 2)")
    parser.add_argument("--users", type=int, default=4, help="interactive users, half on two shared fields of view (default 4)")
    parser.add_argument("--batch-users", type=int, default=1, help="users running Segment on fresh fields of view (default 1)")
    parser.add_argument("--clicks", type=int, default=10, help="clicks per object (default 10)")
    parser.add_argument("--think-ms", type=float, default=500.0, help="pause before each click, jittered +-50%% (default 500)")
    parser.add_argument("--max-clicks", type=int, default=20000, help="interactive clicks at most, all users (default 20000)")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="RSS sampling interval (default 10)")
    parser.add_argument("--cache-mb", type=float, default=64.0,
                        help="each server's embedding cache budget, small so that warm-up fills it (default 64: 16 fields of view)")
    parser.add_argument("--max-growth", type=float, default=5.0, help="largest RSS growth after warm-up, percent (default 5)")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output" / "soak", help="where rss.png and results.json go")
    args = parser.parse_args(argv)
    if args.minutes <= args.warmup_minutes or args.warmup_minutes < 0:
        parser.error("--minutes must exceed --warmup-minutes, which must be >= 0")
    if min(args.backends, args.users, args.clicks, args.max_clicks) < 1 or args.batch_users < 0 or args.sample_seconds <= 0:
        parser.error("--backends, --users, --clicks and --max-clicks must be >= 1, --batch-users >= 0, --sample-seconds > 0")
    return args


def main() -> int:
    args = parse_args()
    ModelRegistry.create(device="cpu").fetch(DEFAULT_MODEL)
    work = Path(tempfile.mkdtemp(prefix="slidesam-soak-"))
    try:
        (work / "slides").mkdir()
        slides = write_slides(work / "slides", 3)
        store = TokenStore(work / "tokens.json")
        users, batch, warm = make_users(slides, lambda name: store.add(name, note="soak")[0], args.users,
                                        args.users // 2, args.batch_users, seed=0)
        threads = max(1, (os.cpu_count() or 1) // args.backends)
        server_args = ["--threads", str(threads), "--cache-mb", str(args.cache_mb)]
        objects = math.ceil(args.max_clicks / (args.users * args.clicks))
        with Stack(slides.root, work / "stack", args.backends, tokens_file=store.path, server_args=server_args) as stack:
            for backend in stack.backends:
                warm_up(backend.address, warm, slides)
            curve = RssCurve(stack.pids(), args.sample_seconds)
            measured = measure(stack.address, slides, users, batch, Workload(args.clicks, objects, args.think_ms),
                               args.minutes * 60, None, None)
            curve.stop()
            assert stack.haproxy is not None
            requests = {name: int(row["stot"]) for name, row in stack.haproxy.server_stats().items()}
            alive = {name: server.process.poll() is None for name, server in stack.servers.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    recorder = measured.recorder
    memory = {name: growth(samples, args.warmup_minutes * 60) for name, samples in curve.samples.items()}
    failures = [f"{name}: RSS grew {m['growth_percent']} % after warm-up (limit {args.max_growth:g} %)"
                for name, m in memory.items() if m["growth_percent"] is None or m["growth_percent"] >= args.max_growth]
    failures += [f"{sum(recorder.errors.values())} failed requests: {dict(recorder.errors)} {recorder.error_examples}"] if recorder.errors else []
    failures += [f"{name} died" for name, up in alive.items() if not up]
    results = {
        "benchmark": "soak", "minutes": round(measured.seconds / 60, 2), "warmup_minutes": args.warmup_minutes,
        "backends": args.backends, "server_args": server_args, "users": args.users, "batch_users": args.batch_users,
        "clicks": len(recorder.click_ms), "opens": len(recorder.open_ms), "batch_segments": len(recorder.segment_ms),
        "errors": dict(recorder.errors), "requests_per_backend": requests, "rss": memory, "max_growth_percent": args.max_growth,
        "rss_samples": curve.samples, "passed": not failures, "failures": failures, "cpu_count": os.cpu_count(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    title = (f"{args.backends} servers behind HAProxy, {args.users} users + {args.batch_users} batch, "
             f"{len(recorder.click_ms)} clicks, {sum(recorder.errors.values())} errors")
    plot(curve.samples, args.warmup_minutes * 60, title, args.out / "rss.png")
    for name, m in memory.items():
        print(f"{name}: RSS after warm-up {m['start_mib']} -> {m['end_mib']} MiB ({m['growth_percent']} %), max {m['max_mib']} MiB")
    print(f"{len(recorder.click_ms)} clicks, {len(recorder.open_ms)} opens, {len(recorder.segment_ms)} batch segments in "
          f"{measured.seconds / 60:.1f} min; errors: {dict(recorder.errors) or 'none'}; requests per backend: {requests}")
    print("PASSED" if not failures else "FAILED: " + "; ".join(failures), file=sys.stderr)
    print(json.dumps({k: v for k, v in results.items() if k != "rss_samples"}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
