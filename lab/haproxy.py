"""HAProxy in front of slidesam servers, as deploy/haproxy/slidesam.cfg configures it: the config written
from that template (its bind and server blocks replaced), the process, and what its stats socket says."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "haproxy" / "slidesam.cfg"
PASSTHROUGH_TEMPLATE = TEMPLATE.with_name("slidesam-passthrough.cfg")
BACKENDS = ("slidesam_servers", "slidesam_tls_servers")  # the backend of each template
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0


class HaproxyMissing(RuntimeError):
    """No `haproxy` executable on PATH."""


@dataclass(frozen=True)
class Backend:
    """One slidesam server as the balancer names it."""

    name: str
    address: str  # HOST:PORT


def find_haproxy() -> str:
    """The haproxy executable; HaproxyMissing saying how to install it."""
    path = shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy", "/sbin/haproxy") if Path(p).is_file()), None)
    if path is None:
        raise HaproxyMissing("haproxy is not installed (Debian/Ubuntu: `apt-get install haproxy`, 2.6 or newer)")
    return path


def replace_block(text: str, name: str, lines: list[str]) -> str:
    """`text` with the lines between `# BEGIN <name>` and `# END <name>` (markers kept) replaced by `lines`."""
    rows = text.splitlines()
    begin = next((i for i, row in enumerate(rows) if row.strip().startswith(f"# BEGIN {name}")), None)
    end = next((i for i, row in enumerate(rows) if row.strip() == f"# END {name}"), None)
    if begin is None or end is None or end < begin:
        raise ValueError(f"the HAProxy template has no '# BEGIN {name}' ... '# END {name}' block")
    indent = rows[begin][: len(rows[begin]) - len(rows[begin].lstrip())]
    return "\n".join([*rows[: begin + 1], *(indent + line for line in lines), *rows[end:]]) + "\n"


def render_config(template: str, bind: str, backends: list[Backend], stats_socket: Path | None = None,
                  tls_pem: Path | None = None, passthrough: bool = False) -> str:
    """The template with one bind line (`bind` is HOST:PORT; TLS terminated with `tls_pem`, the server
    certificate and key in one file; plain TCP for the passthrough template) and one server line per
    backend; a stats socket when asked for."""
    bind_line = f"bind {bind} ssl crt {tls_pem} alpn h2" if tls_pem else f"bind {bind}" + ("" if passthrough else " proto h2")
    text = replace_block(template, "binds", [bind_line])
    text = replace_block(text, "servers", [f"server {b.name} {b.address}" for b in backends])
    if stats_socket is not None:
        text = text.replace("global\n", f"global\n    stats socket {stats_socket} mode 600 level admin\n", 1)
    return text


class Haproxy:
    """`haproxy` in the foreground with a config written to `folder`, logging to `folder/haproxy.log`;
    returns once it listens on `bind` (HOST:PORT). The config is checked (`haproxy -c`) first."""

    def __init__(self, folder: Path, bind: str, backends: list[Backend], *, template: Path = TEMPLATE,
                 tls_pem: Path | None = None, passthrough: bool = False) -> None:
        executable = find_haproxy()
        folder.mkdir(parents=True, exist_ok=True)
        self.bind = bind
        self.stats_socket = folder / "haproxy-stats.sock"
        self.config = folder / "haproxy.cfg"
        self.config.write_text(render_config(template.read_text(), bind, backends, self.stats_socket, tls_pem, passthrough))
        self.log_path = folder / "haproxy.log"
        check = subprocess.run([executable, "-c", "-q", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode:
            raise RuntimeError(f"haproxy refused {self.config}:\n{check.stdout}{check.stderr}")
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen([executable, "-db", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT)
        self._wait_listening()

    def __enter__(self) -> Haproxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.stop()

    def _wait_listening(self) -> None:
        host, _, port = self.bind.rpartition(":")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection((host, int(port)), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"haproxy did not start listening on {self.bind}:\n{self.log_path.read_text()[-3000:]}")

    def server_stats(self) -> dict[str, dict[str, str]]:
        """Each server's row of `show stat` (status: 'UP', 'DOWN', 'UP 1/2', ...; stot: requests sent to it)."""
        with socket.socket(socket.AF_UNIX) as stats:
            stats.connect(str(self.stats_socket))
            stats.sendall(b"show stat\n")
            text = b"".join(iter(lambda: stats.recv(65536), b"")).decode()
        header, *rows = [row.split(",") for row in text.splitlines() if row]
        names = [name.lstrip("# ") for name in header]
        return {row[1]: dict(zip(names, row)) for row in rows if row[0] in BACKENDS and row[1] not in ("BACKEND", "FRONTEND")}

    def server_states(self) -> dict[str, str]:
        """Each server's state as the balancer's health checks see it: 'UP', 'DOWN', 'UP 1/2', ..."""
        return {name: row["status"] for name, row in self.server_stats().items()}

    def wait_state(self, name: str, state: str, timeout: float = 20.0) -> None:
        """Waits until the health checks put server `name` in `state` ('UP' or 'DOWN')."""
        deadline = time.monotonic() + timeout
        while (current := self.server_states().get(name)) != state:
            if time.monotonic() > deadline:
                raise TimeoutError(f"server {name} is {current}, not {state}, after {timeout:g} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
