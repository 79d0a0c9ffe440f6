"""Assembles a running gRPC server: engine, worker, segmentation service, health and reflection."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1 import slidesam_pb2_grpc as pb_grpc

from server.engine.cache import EmbeddingCache
from server.engine.engine import Engine, EngineConfig
from server.engine.worker import ModelWorker
from server.models.registry import ModelRegistry
from server.service import SegmentationService
from server.slides import SlideStore
from server.uploads import UploadStore

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Segmentation"].full_name
MiB = 2**20


@dataclass
class ServerConfig:
    """Everything `slidesam-server serve` can set."""

    slide_root: Path
    host: str = "127.0.0.1"
    port: int = 50051                      # 0 picks a free port
    model_dir: Path | None = None
    default_model: str = "mobile_sam"
    device: str = "auto"
    cache_bytes: int = 1024 * MiB          # image embeddings (4 MiB each at float32)
    upload_bytes: int = 512 * MiB          # decoded uploaded images
    max_message_bytes: int = 64 * MiB      # largest request or reply
    max_pending: int = 64                  # requests waiting for the model worker
    max_vertices: int = 4000               # default polygon vertex budget
    strategy: str = "plain"                # default prompt strategy (server/engine/strategies.py)
    grace_seconds: float = 5.0             # graceful shutdown
    checkpoints: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (path or URL, sha256)
    preload: bool = True                   # load the default model at start


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    engine: Engine
    worker: ModelWorker
    health: health.aio.HealthServicer

    async def stop(self, grace: float | None) -> None:
        """Graceful shutdown: health says NOT_SERVING, in-flight work finishes within grace seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        self.worker.shutdown()


def build_engine(config: ServerConfig, registry: ModelRegistry | None = None) -> Engine:
    """The engine for a config; pass a registry to share already loaded models (tests do)."""
    if registry is None:
        registry = ModelRegistry.create(config.model_dir, config.device, config.default_model)
        for name, (location, sha256) in config.checkpoints.items():
            registry.configure_checkpoint(name, location, sha256)
    return Engine(
        models=registry,
        slides=SlideStore(config.slide_root),
        uploads=UploadStore(max_bytes=config.upload_bytes),
        cache=EmbeddingCache(config.cache_bytes),
        config=EngineConfig(default_max_vertices=config.max_vertices, default_strategy=config.strategy),
    )


async def start_server(config: ServerConfig, engine: Engine | None = None) -> RunningServer:
    """Builds and starts the server; returns once it listens."""
    engine = engine or build_engine(config)
    if config.preload:
        engine.models.get(config.default_model)
    worker = ModelWorker(config.max_pending)
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
    ]
    server = grpc.aio.server(options=options)
    pb_grpc.add_SegmentationServicer_to_server(SegmentationService(engine, worker), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{config.host}:{config.port}")
    if port == 0:
        raise OSError(f"could not listen on {config.host}:{config.port}")
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("slidesam server listening on %s:%d (models: %s; slide root: %s)", config.host, port, ", ".join(engine.models.names()), config.slide_root)
    return RunningServer(server, port, engine, worker, health_servicer)


async def serve_forever(config: ServerConfig) -> None:
    """Runs until SIGINT/SIGTERM, then shuts down gracefully."""
    running = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    print(f"slidesam-server listening on {config.host}:{running.port}", flush=True)
    await stop.wait()
    log.info("shutting down (grace %.0f s)", config.grace_seconds)
    await running.stop(config.grace_seconds)


class ServerThread:
    """A server on its own event loop in a background thread (tests, benchmarks, demos in one process)."""

    def __init__(self, config: ServerConfig, engine: Engine | None = None):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slidesam-server", daemon=True)
        self._thread.start()
        self.running: RunningServer = self._call(start_server(config, engine))
        self.port = self.running.port
        self.address = f"{config.host}:{self.port}"

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def stop(self, grace: float | None = 0) -> None:
        self._call(self.running.stop(grace))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
