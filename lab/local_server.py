"""`slidesam-server` run from this interpreter in its own process, as the demo, benchmarks and load tests
do: `LocalServer` starts `serve` on a free loopback port, returns once it serves and stops it on exit."""

from __future__ import annotations

import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"
LISTENING = re.compile(r"slidesam-server listening on (\S+):(\d+)")
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 60.0
LOG_TAIL_LINES = 30


def server_command(*arguments: str) -> list[str]:
    """The command line of `slidesam-server ARGUMENTS...` with this interpreter (and so this environment)."""
    return [sys.executable, "-m", "slidesam.server.cli", *arguments]


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


class LocalServer:
    """`slidesam-server serve` on a loopback port it picks itself, serving (health SERVING, the default model
    loaded) once constructed; `stop()` or the end of a `with` block sends SIGTERM and waits.

    Without a tokens file it allows anonymous access. `metrics` serves Prometheus metrics on a free port
    (`metrics_port`), unless `extra_args` set the metrics flags themselves. `extra_args` come last, so they
    override the flags set here (`--drain-seconds 0`: nobody else uses the server, so there is nothing to drain).
    """

    def __init__(self, slide_root: Path, log_path: Path, *, tokens_file: Path | None = None, device: str | None = None,
                 metrics: bool = False, extra_args: Sequence[str] = ()) -> None:
        own_metrics = metrics and not any(arg.startswith("--metrics") for arg in extra_args)
        self.metrics_port = free_port() if own_metrics else None
        command = server_command(
            "serve", "--slide-root", str(slide_root), "--host", LOOPBACK, "--port", "0", "--drain-seconds", "0",
            *(["--tokens-file", str(tokens_file)] if tokens_file else ["--allow-anonymous"]),
            *(["--device", device] if device else []),
            *(["--metrics-port", str(self.metrics_port)] if self.metrics_port is not None else []),
            *extra_args,
        )
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        self.pid = self.process.pid
        self.exit_code: int | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, name="server-stdout", daemon=True).start()
        try:
            self.address = self._wait_listening()
        except BaseException:  # Ctrl-C or SIGTERM while the server starts
            self.stop()
            raise

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _wait_listening(self) -> str:
        """HOST:PORT from the server's "listening" line (printed once it serves); SystemExit with the tail
        of its log when the line never comes."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                tail = "".join(self.log_path.read_text().splitlines(keepends=True)[-LOG_TAIL_LINES:])
                raise SystemExit(f"the server did not start (log {self.log_path}):\n{tail}")
            match = LISTENING.search(line)
            if match:
                host = LOOPBACK if match[1] in ("0.0.0.0", "::", "[::]") else match[1]  # an --host of extra_args
                return f"{host}:{match[2]}"

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_TIMEOUT_S; `exit_code` is the process's exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.exit_code = self.process.returncode
