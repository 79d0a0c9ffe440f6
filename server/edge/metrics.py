"""Prometheus metrics of one server: click and encode latency, queue depth, cache, streams, errors."""

from __future__ import annotations

from typing import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from slidesam.server.engine.devices import DevicePool
from slidesam.server.engine.scheduler import Priority

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

    def watch_devices(self, devices: DevicePool) -> None:
        """Exports each device's queue depth (by priority) and embedding cache."""
        self.registry.register(_DeviceCollector(devices))

    def serve(self, port: int, host: str) -> tuple[object, object]:
        """Starts the /metrics HTTP endpoint; returns (http server, thread) so a caller can stop it."""
        return start_http_server(port, addr=host, registry=self.registry)


class _DeviceCollector(Collector):
    """Read at every scrape: queue depth and cache figures of each device worker."""

    def __init__(self, devices: DevicePool):
        self._devices = devices

    def collect(self) -> Iterable:
        depth = GaugeMetricFamily("slidesam_queue_depth", "Requests waiting for the model worker", labels=["device", "priority"])
        cache = {
            "hits": CounterMetricFamily("slidesam_cache_hits", "Embedding cache hits", labels=["device"]),
            "misses": CounterMetricFamily("slidesam_cache_misses", "Embedding cache misses (an encode followed)", labels=["device"]),
            "evictions": CounterMetricFamily("slidesam_cache_evictions", "Embeddings evicted to stay within the budget", labels=["device"]),
            "bytes": GaugeMetricFamily("slidesam_cache_bytes", "Bytes of embeddings held", labels=["device"]),
            "budget_bytes": GaugeMetricFamily("slidesam_cache_budget_bytes", "The embedding cache's byte budget", labels=["device"]),
            "entries": GaugeMetricFamily("slidesam_cache_entries", "Embeddings held", labels=["device"]),
            "not_kept": CounterMetricFamily("slidesam_cache_not_kept",
                                            "Embeddings used once and not kept: no room within their user's fair share", labels=["device"]),
        }
        for worker in self._devices:
            for priority in Priority:
                depth.add_metric([worker.device, priority.name.lower()], worker.scheduler.depth(priority))
            stats = worker.engine.cache.stats()
            for field, family in cache.items():
                family.add_metric([worker.device], getattr(stats, field))
        uploads = self._devices.uploads
        decoding = GaugeMetricFamily("slidesam_upload_decode_bytes", "Memory reserved by the upload decodes running now")
        decoding.add_metric([], uploads.decoding.in_use)
        stored = GaugeMetricFamily("slidesam_upload_bytes", "Bytes of decoded uploaded images held")
        stored.add_metric([], uploads.total_bytes)
        yield depth
        yield from cache.values()
        yield decoding
        yield stored
