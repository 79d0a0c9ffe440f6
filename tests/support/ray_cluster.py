"""A real local Ray cluster for tests: `ray start --head --block` on loopback, and the processes of its workers,
found by the title Ray gives a worker while it runs a task or holds an actor (`ray::<function>`, `ray::<class>`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from slidesam.lab.local_server import LOOPBACK, free_port

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
"""Ray then keeps every node address on 127.0.0.1 (it otherwise advertises the host's address) and a single node."""
START_TIMEOUT_S = 90.0


class RayCluster:
    """A head node with `cpus` CPUs, serving on 127.0.0.1 at `address`; `stop()` ends all of its processes."""

    def __init__(self, cpus: int = 2):
        # Ray's socket paths must stay short (108 bytes): a folder of its own directly under /tmp.
        self.folder = Path(tempfile.mkdtemp(prefix="ssray-", dir="/tmp"))
        self.address = f"{LOOPBACK}:{free_port()}"
        ports = {flag: str(free_port()) for flag in ("--ray-client-server-port", "--dashboard-port", "--dashboard-agent-listen-port",
                                                     "--metrics-export-port", "--runtime-env-agent-port")}
        command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address", LOOPBACK,
                   "--port", self.address.rpartition(":")[2], "--num-cpus", str(cpus), "--include-dashboard", "false",
                   "--disable-usage-stats", "--object-store-memory", str(100 * 2**20), "--temp-dir", str(self.folder),
                   *[part for flag, port in ports.items() for part in (flag, port)]]
        self.log = self.folder / "ray-start.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **LOOPBACK_ENV},
                                            start_new_session=True)
        try:
            self._wait_started()
        except BaseException:
            self.stop()
            raise

    def _wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "Ray runtime started" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Ray head did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def processes(self) -> list[int]:
        """Every live process of the cluster: `ray start` and its descendants (head, raylet, workers, which Ray
        puts in process groups of their own)."""
        children: dict[int, list[int]] = {}
        for pid in _pids():
            children.setdefault(_parent(pid), []).append(pid)
        found, stack = [], [self.process.pid]
        while stack:
            pid = stack.pop()
            found.append(pid)
            stack += children.get(pid, [])
        return [pid for pid in found if _alive(pid)]

    def running(self, title: str) -> list[int]:
        """The cluster's worker processes now running `title` (a task's function or an actor's class)."""
        return [pid for pid in _pids() if _cmdline(pid).startswith(f"ray::{title}") and self._descends(pid)]

    def _descends(self, pid: int) -> bool:
        while pid > 1:
            pid = _parent(pid)
            if pid == self.process.pid:
                return True
        return False

    def stop(self) -> None:
        """SIGTERM to every process of the cluster, SIGKILL to those left a moment later; the folder goes."""
        left: list[int] = []
        for signum, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            left = sorted(set(left) | set(self.processes()))  # those of the first pass too, orphaned since
            for pid in left:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while left and time.monotonic() < deadline:
                self.process.poll()
                left = [pid for pid in left if _alive(pid)]
                time.sleep(0.1)
        self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


def _pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state, parent, ...); empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return []


def _parent(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else 0


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
