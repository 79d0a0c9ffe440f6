"""Assembles a running gRPC server: one engine and scheduler per device, security, the segmentation
service, health, reflection and metrics."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass

import grpc
import torch
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.server.edge.auth import Authenticator
from slidesam.server.edge.config import MiB, ServerConfig
from slidesam.server.uploads.decode_pool import DecodePool
from slidesam.server.engine.devices import DevicePool, DeviceWorker
from slidesam.server.engine.cache import EmbeddingCache
from slidesam.server.engine.embedding_store import EmbeddingStore
from slidesam.server.engine.engine import Engine, EngineConfig
from slidesam.server.engine.scheduler import Scheduler
from slidesam.server.edge.limits import UserLimiter
from slidesam.server.edge.metrics import ServerMetrics
from slidesam.server.models.registry import ModelRegistry
from slidesam.server.edge.ownership import ObjectOwnership
from slidesam.server.edge.registration import add_to_server
from slidesam.server.edge.service import SegmentationService, ServiceParts
from slidesam.server.slides.store import SlideStore
from slidesam.server.edge.tokens import TokenStore
from slidesam.server.uploads.store import UploadStore

__all__ = ["ServerConfig", "RunningServer", "ServerThread", "build_engines", "serve_forever", "start_server"]

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Segmentation"].full_name
EXPIRY_CHECK_SECONDS = 5.0


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    devices: DevicePool
    service: SegmentationService
    health: health.aio.HealthServicer
    metrics: ServerMetrics
    metrics_port: int | None
    _background: list[asyncio.Task]
    _metrics_http: object | None

    async def stop(self, grace: float | None, drain: float = 0.0) -> None:
        """Graceful shutdown: health says NOT_SERVING while the server still serves for drain seconds
        (load balancers and clients move away), then new calls are refused and in-flight work has
        grace seconds to finish."""
        await self.health.enter_graceful_shutdown()
        log.info("draining: health is NOT_SERVING; serving %.1f s more, then in-flight requests get %s s", drain, grace)
        await asyncio.sleep(drain)
        await self.server.stop(grace)
        for task in self._background:
            task.cancel()
        await asyncio.to_thread(self.devices.shutdown)
        await asyncio.to_thread(self.service.decoding.shutdown)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()


def build_engines(config: ServerConfig, registries: list[ModelRegistry] | None = None) -> list[Engine]:
    """One engine per device of the config, sharing the slide and upload stores. Pass registries (one
    per device) to share already loaded models (tests do)."""
    if registries is None:
        registries = []
        for device in config.devices():
            registry = ModelRegistry.create(config.model_dir, device, config.default_model, config.encoder_precision)
            for name, (location, sha256) in config.checkpoints.items():
                registry.configure_checkpoint(name, location, sha256)
            registries.append(registry)
    slides = SlideStore(config.slide_root)
    uploads = UploadStore(max_bytes=int(config.upload_mb * MiB), decode_budget_bytes=int(config.decode_mb * MiB))
    engine_config = EngineConfig(default_max_vertices=config.max_vertices, default_strategy=config.strategy,
                                 cache_dtype=config.cache_dtype, max_object_pixels=int(config.max_object_mpixels * 1e6),
                                 max_step_encodes=config.max_step_encodes)
    store = None
    if config.embedding_store is not None:
        store = EmbeddingStore(config.embedding_store, int(config.store_gb * 2**30))
        log.info("precomputed embeddings: %s (%s)", config.embedding_store, store.stats())
    return [
        Engine(registry, slides, uploads, EmbeddingCache(int(config.cache_mb * MiB)), engine_config, store)
        for registry in registries
    ]


def server_credentials(config: ServerConfig) -> grpc.ServerCredentials:
    """TLS credentials from the config's PEM files; with tls_client_ca, clients must present a certificate."""
    def read(path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as error:
            raise OSError(f"cannot read TLS file {path}: {error.strerror}") from error

    client_ca = read(config.tls_client_ca) if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(read(config.tls_key), read(config.tls_cert))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def _free_cuda_memory(engine: Engine) -> None:
    dropped = engine.cache.clear()
    if engine.models.device.type == "cuda":
        with torch.cuda.device(engine.models.device):
            torch.cuda.empty_cache()
    log.warning("dropped %d cached embeddings to free GPU memory", dropped)


async def start_server(config: ServerConfig, engines: list[Engine] | None = None) -> RunningServer:
    """Builds and starts the server (one model worker per engine); returns once it listens."""
    engines = engines or build_engines(config)
    if config.preload:
        for engine in engines:
            engine.models.get(config.default_model)
    if config.allow_anonymous and config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("anonymous access is allowed on %s: anyone who can reach this port can use the server", config.host)
    metrics = ServerMetrics()
    devices = DevicePool([_worker(config, engine, metrics) for engine in engines])
    metrics.watch_devices(devices)
    tokens = TokenStore(config.tokens_file) if config.tokens_file else None
    parts = ServiceParts(
        authenticator=Authenticator(tokens, config.allow_anonymous, config.default_limits),
        limiter=UserLimiter(),
        ownership=ObjectOwnership(config.session_idle_seconds),
        metrics=metrics,
        decoding=DecodePool(config.decode_workers, config.decodes_per_user),
    )
    service = SegmentationService(devices, parts, config.max_stream_minutes * 60 or None)
    max_message = int(config.max_message_mb * MiB)
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", max_message),
        ("grpc.max_send_message_length", max_message),
    ])
    add_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{config.host}:{config.port}"
    port = server.add_secure_port(address, server_credentials(config)) if config.tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not listen on {address}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    metrics_http, metrics_port = None, None
    if config.metrics_port is not None:
        metrics_http, _ = metrics.serve(config.metrics_port, config.metrics_host)
        metrics_port = metrics_http.server_port
    background = [asyncio.get_running_loop().create_task(_expire_idle_objects(service))]
    log.info(
        "slidesam server listening on %s:%d (%s; %s; devices: %s, decoder batches of up to %d; models: %s; slide root: %s%s)",
        config.host, port, "TLS" + (" with client certificates" if config.tls_client_ca else "") if config.tls else "plaintext",
        "tokens from " + str(config.tokens_file) if tokens else "anonymous access",
        ", ".join(worker.device for worker in devices), devices.workers[0].scheduler.config.max_batch,
        ", ".join(devices.models.names()), config.slide_root,
        f"; metrics on {config.metrics_host}:{metrics_port}" if metrics_port is not None else "",
    )
    return RunningServer(server, port, devices, service, health_servicer, metrics, metrics_port, background, metrics_http)


def _worker(config: ServerConfig, engine: Engine, metrics: ServerMetrics) -> DeviceWorker:
    """The engine's model thread, with decoder batching chosen for its device."""
    scheduler_config = config.scheduler(engine.models.device.type)
    return DeviceWorker(engine, Scheduler(scheduler_config, lambda: _free_cuda_memory(engine), metrics.decoder_batch_size.observe))


async def _expire_idle_objects(service: SegmentationService) -> None:
    while True:
        await asyncio.sleep(min(EXPIRY_CHECK_SECONDS, service.ownership.idle_seconds / 2))
        service.expire_idle_objects()


async def serve_forever(config: ServerConfig) -> None:
    """Runs until SIGINT/SIGTERM, then shuts down gracefully."""
    running = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"slidesam-server listening on {config.host}:{running.port}", flush=True)
    await stop.wait()
    log.info("shutting down (drain %.0f s, grace %.0f s)", config.drain_seconds, config.grace_seconds)
    await running.stop(config.grace_seconds, config.drain_seconds)


class ServerThread:
    """A server on its own event loop in a background thread (tests, benchmarks, demos in one process)."""

    def __init__(self, config: ServerConfig, engines: list[Engine] | None = None):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slidesam-server", daemon=True)
        self._thread.start()
        self.config = config
        self.running: RunningServer = self.call(start_server(config, engines))
        self.port = self.running.port
        self.address = f"{config.host}:{self.port}"

    def call(self, coroutine):
        """Runs a coroutine on the server's loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def stop(self, grace: float | None = 0, drain: float = 0.0) -> None:
        self.call(self.running.stop(grace, drain))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
