"""Prometheus metrics of one server: click and encode latency, queue depth, cache, streams, errors."""

from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from server.engine.cache import CacheStats
from server.engine.scheduler import Priority

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0)
ENCODE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0)


class ServerMetrics:
    """Every metric the server exports, in a registry of its own (several servers can share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.click_seconds = Histogram(
            "slidesam_click_seconds", "Server time of one interactive step (clicks or box), arrival to answer",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.encode_seconds = Histogram(
            "slidesam_encode_seconds", "Image encoder time of one field of view (cache misses only)",
            buckets=ENCODE_BUCKETS, registry=self.registry,
        )
        self.queue_seconds = Histogram(
            "slidesam_queue_seconds", "Time a request waited for the model worker", ["priority"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.decoder_batch_size = Histogram(
            "slidesam_decoder_batch_size", "Decoder passes run together in one batch",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32), registry=self.registry,
        )
        self.requests = Counter("slidesam_requests", "Requests and interactive steps served", ["method"], registry=self.registry)
        self.errors = Counter("slidesam_errors", "Refused or failed requests and steps by status code", ["method", "code"],
                              registry=self.registry)
        self.active_streams = Gauge("slidesam_active_streams", "Interact streams open now", registry=self.registry)
        self.open_objects = Gauge("slidesam_open_objects", "Objects open in Interact streams now", registry=self.registry)
        self.expired_objects = Counter("slidesam_expired_objects", "Objects dropped after being idle too long",
                                       registry=self.registry)
        ProcessCollector(registry=self.registry)

    def watch_queue(self, depth: Callable[[Priority], int]) -> None:
        """Exports the scheduler's queue depth by priority."""
        gauge = Gauge("slidesam_queue_depth", "Requests waiting for the model worker", ["priority"], registry=self.registry)
        for priority in Priority:
            gauge.labels(priority.name.lower()).set_function(lambda priority=priority: depth(priority))

    def watch_cache(self, stats: Callable[[], CacheStats]) -> None:
        """Exports the embedding cache's hits, misses, evictions, bytes and budget."""
        self.registry.register(_CacheCollector(stats))

    def serve(self, port: int, host: str) -> tuple[object, object]:
        """Starts the /metrics HTTP endpoint; returns (http server, thread) so a caller can stop it."""
        return start_http_server(port, addr=host, registry=self.registry)


class _CacheCollector(Collector):
    def __init__(self, stats: Callable[[], CacheStats]):
        self._stats = stats

    def collect(self) -> Iterable:
        stats = self._stats()
        yield CounterMetricFamily("slidesam_cache_hits", "Embedding cache hits", value=stats.hits)
        yield CounterMetricFamily("slidesam_cache_misses", "Embedding cache misses (an encode followed)", value=stats.misses)
        yield CounterMetricFamily("slidesam_cache_evictions", "Embeddings evicted to stay within the budget", value=stats.evictions)
        yield GaugeMetricFamily("slidesam_cache_bytes", "Bytes of embeddings held", value=stats.bytes)
        yield GaugeMetricFamily("slidesam_cache_budget_bytes", "The embedding cache's byte budget", value=stats.budget_bytes)
        yield GaugeMetricFamily("slidesam_cache_entries", "Embeddings held", value=stats.entries)
