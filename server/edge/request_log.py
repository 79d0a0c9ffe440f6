"""What an answered request leaves behind: its metrics (requests, queue and encode time) and the
structured fields of its log line."""

from __future__ import annotations

import time
from typing import Any

from slidesam.server.edge.metrics import ServerMetrics
from slidesam.server.engine.scheduler import Priority
from slidesam.server.engine.session import Outcome


def ms_since(started: float) -> float:
    """Milliseconds since a time.perf_counter() reading."""
    return (time.perf_counter() - started) * 1e3


def observe(metrics: ServerMetrics, method: str, outcome: Outcome, queue_ms: float, priority: Priority) -> None:
    """Counts an answered request and records its queue and encode time."""
    metrics.requests.labels(method).inc()
    metrics.queue_seconds.labels(priority.name.lower()).observe(queue_ms / 1e3)
    if outcome.timings.encode_ms:
        metrics.encode_seconds.observe(outcome.timings.encode_ms / 1e3)


def log_fields(method: str, user: str, outcome: Outcome, total_ms: float, queue_ms: float) -> dict[str, Any]:
    """The structured fields of a request's log line (JSON logs carry them as keys)."""
    return {
        "method": method, "user": user, "code": "OK", "model": outcome.view.spec.model_id, "object": outcome.object_id,
        "step": outcome.step_index, "total_ms": round(total_ms, 2), "queue_ms": round(queue_ms, 2),
        "encode_ms": round(outcome.timings.encode_ms, 2), "decode_ms": round(outcome.timings.decode_ms, 2),
        "cache_hit": outcome.timings.cache_hit, "windows": outcome.resolution.windows,
        "windows_encoded": outcome.timings.windows_encoded, "encoder_downsample": round(outcome.resolution.encoder_downsample, 4),
        "downsampled": outcome.resolution.downsampled,
    }


def cache_outcome(outcome: Outcome) -> str:
    """Cache outcome for the log: hit, miss (read + encode ran) or '-' (no embedding needed)."""
    if outcome.timings.cache_hit:
        return "hit"
    return "miss" if outcome.timings.encode_ms else "-"
