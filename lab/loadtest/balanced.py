"""The load test through HAProxy (`scripts/loadtest --backends 1,2`): for each number of backends, a
fresh stack (lab/stack.py) on this machine, the same simulated users through the balancer, one report
each, so that the runs compare side by side in one invocation."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from slidesam.lab.loadtest.report import build_report
from slidesam.lab.loadtest.targets import Slides
from slidesam.lab.loadtest.users import User, Workload, measure, warm_up
from slidesam.lab.server_probes import memory_mib
from slidesam.lab.stack import Stack


def threads_per_backend(server_args: list[str], backends: int) -> list[str]:
    """`--threads` for each server: the cores shared out among the backends, unless the caller set it."""
    if any(arg.startswith("--threads") for arg in server_args):
        return []
    return ["--threads", str(max(1, (os.cpu_count() or 1) // backends))]


def run_balanced(args: argparse.Namespace, slides: Slides, tokens_file: Path, users: list[User], batch: list[User],
                 warm: User, work: Path) -> list[dict]:
    """One report per entry of args.backends, each against a new stack of that many servers."""
    reports = []
    for count in args.backends:
        threads = threads_per_backend(args.server_arg, count)
        print(f"starting {count} backend(s) {' '.join(threads)} behind HAProxy", file=sys.stderr, flush=True)
        with Stack(slides.root, work / f"stack-{count}", count, tokens_file=tokens_file,
                   server_args=[*threads, *args.server_arg]) as stack:
            for backend in stack.backends:  # first-use costs of every server out of the figures
                warm_up(backend.address, warm, slides)
            measured = measure(stack.address, slides, users, batch, Workload(args.clicks, args.objects, args.think_ms),
                               args.duration, None, None)
            assert stack.haproxy is not None
            requests = {name: int(row["stot"]) for name, row in stack.haproxy.server_stats().items()}
            memory = {name: memory_mib(pid)["rss"] for name, pid in stack.pids().items()}
        report = build_report(args, measured, None)
        report |= {"server": f"HAProxy + {count} backend(s)", "backends": count, "server_args": [*threads, *args.server_arg],
                   "requests_per_backend": requests, "backend_rss_mib": memory}
        report["host"]["torch_threads"] = int(threads[1]) if threads else report["host"]["torch_threads"]
        reports.append(report)
    return reports
