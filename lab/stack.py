"""The whole interactive stack on one machine: N `slidesam-server` processes on loopback ports behind
HAProxy configured by deploy/haproxy/slidesam.cfg (scripts/stack, the balancer tests, the load test with
--backends and the soak test). Every server reads the same slide root and the same tokens file."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from slidesam.lab.haproxy import TEMPLATE, Backend, Haproxy
from slidesam.lab.local_server import LOOPBACK, LocalServer, free_port
from slidesam.v1.conventions import AFFINITY_METADATA

BACKEND_HEADER = "slidesam-backend"  # the response header the template's balancer adds: which server answered
UP_TIMEOUT_S = 30.0


class Stack:
    """`backends` servers (named slidesam-1, slidesam-2, ...) behind HAProxy on `port` (0: a free one);
    all servers UP once constructed. `server_args` go to every `slidesam-server serve`."""

    def __init__(self, slide_root: Path, folder: Path, backends: int = 2, *, port: int = 0,
                 tokens_file: Path | None = None, server_args: Sequence[str] = (), metrics: bool = False,
                 tls_pem: Path | None = None, template: Path = TEMPLATE) -> None:
        if backends < 1:
            raise ValueError("a stack needs at least one backend")
        self.slide_root, self.folder, self.tokens_file = slide_root, folder, tokens_file
        self.server_args, self.metrics = list(server_args), metrics
        self.backends = [Backend(f"slidesam-{index + 1}", f"{LOOPBACK}:{free_port()}") for index in range(backends)]
        self.servers: dict[str, LocalServer] = {}
        self.haproxy: Haproxy | None = None
        try:
            with ThreadPoolExecutor(backends) as pool:  # the servers load their model side by side
                futures = {b.name: pool.submit(self._start_server, b) for b in self.backends}
            self.servers = {name: f.result() for name, f in futures.items() if f.exception() is None}
            for future in futures.values():
                future.result()  # the first failure, once every server that started is known (and stopped)
            self.haproxy = Haproxy(folder, f"{LOOPBACK}:{port or free_port()}", self.backends, template=template, tls_pem=tls_pem)
            for backend in self.backends:
                self.haproxy.wait_state(backend.name, "UP", UP_TIMEOUT_S)
        except BaseException:
            self.stop()
            raise
        self.address = self.haproxy.bind

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()

    def _start_server(self, backend: Backend) -> LocalServer:
        port = backend.address.rpartition(":")[2]
        return LocalServer(self.slide_root, self.folder / f"{backend.name}.log", tokens_file=self.tokens_file,
                           metrics=self.metrics, extra_args=["--port", port, *self.server_args])

    def backend_for(self, affinity: str | None) -> str:
        """The name of the server the balancer sends a call with this affinity key to (None: no key)."""
        metadata = ((AFFINITY_METADATA, affinity),) if affinity else ()
        with grpc.insecure_channel(self.address) as channel:
            _, call = health_pb2_grpc.HealthStub(channel).Check.with_call(
                health_pb2.HealthCheckRequest(), metadata=metadata, timeout=10, wait_for_ready=True)
        return dict(call.initial_metadata())[BACKEND_HEADER]

    def kill(self, name: str) -> None:
        """SIGKILL for server `name`: it dies mid-whatever, as a crashed machine would."""
        server = self.servers[name]
        server.process.send_signal(signal.SIGKILL)
        server.process.wait()

    def pids(self) -> dict[str, int]:
        return {name: server.pid for name, server in self.servers.items()}

    def stop(self) -> None:
        if self.haproxy is not None:
            self.haproxy.stop()
        for server in self.servers.values():
            server.stop()
