"""What load tests and attack runs read off a server: the resident memory of a local server process
(from /proc) and the unlabelled samples of its Prometheus metrics."""

from __future__ import annotations

import contextlib
import threading
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

RSS_SAMPLE_S = 0.2


def memory_mib(pid: int | None) -> dict[str, float | None]:
    """Current (VmRSS) and peak (VmHWM) resident memory of a local process, MiB; None when unknown."""
    values: dict[str, float | None] = {"rss": None, "peak": None}
    if pid is None:
        return values
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values["rss" if name == "VmRSS" else "peak"] = round(int(rest.split()[0]) / 1024, 1)
    return values


class RssSampler:
    """The highest resident memory (VmRSS, MiB) of a local process, sampled every RSS_SAMPLE_S until stop()."""

    def __init__(self, pid: int | None) -> None:
        self._pid = pid
        self._highest: float | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while True:
            rss = memory_mib(self._pid)["rss"]
            if rss is not None:
                self._highest = max(rss, self._highest or 0.0)
            if self._stopped.wait(RSS_SAMPLE_S):
                return

    def stop(self) -> float | None:
        self._stopped.set()
        self._thread.join()
        return self._highest


def scrape_metrics(port: int | None) -> dict[str, float]:
    """The server's unlabelled Prometheus samples by name (empty without a metrics port or a server)."""
    if port is None:
        return {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples if not s.labels}
