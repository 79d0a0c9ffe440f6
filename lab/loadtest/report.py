"""The load test's report: latency distributions, throughput, errors and the server's memory as one JSON
object (what scripts/plot_loadtest.py reads), and the table printed before it."""

from __future__ import annotations

import argparse
import os
import platform

import numpy as np
import torch

from slidesam.lab.loadtest.users import Measurement, shared_count


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


def build_report(args: argparse.Namespace, measured: Measurement, server_exit_code: int | None) -> dict:
    """The run's JSON summary: the load test's options (`args`), what was measured, the server and the host."""
    recorder, seconds = measured.recorder, measured.seconds
    metrics_before, metrics_after = measured.metrics_before, measured.metrics_after
    batches = metric_delta(metrics_before, metrics_after, "slidesam_decoder_batch_size_count")
    batched = metric_delta(metrics_before, metrics_after, "slidesam_decoder_batch_size_sum")
    return {
        "benchmark": "loadtest",
        "server": args.address or "own process",
        "server_args": args.server_arg,
        "users": args.users,
        "shared_users": shared_count(args.users, args.shared_fraction),
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
    """The human-readable table of a report."""
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
