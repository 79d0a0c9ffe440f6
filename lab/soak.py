"""The soak test's measurements: each backend's resident memory sampled over the run, its growth after
warm-up, and the plot of the curves (scripts/soak.py drives the run)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from slidesam.lab.server_probes import memory_mib

WINDOW_SHARE = 0.1  # growth compares the mean of the first and of the last tenth of the samples after warm-up


@dataclass
class RssCurve:
    """VmRSS (MiB) of each process every `interval` seconds, on a thread, until stop()."""

    pids: dict[str, int]
    interval: float
    samples: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # name -> (seconds, MiB)

    def __post_init__(self) -> None:
        self.samples = {name: [] for name in self.pids}
        self._started = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-curve", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            now = time.monotonic() - self._started
            for name, pid in self.pids.items():
                rss = memory_mib(pid)["rss"]
                if rss is not None:
                    self.samples[name].append((round(now, 1), rss))
            if self._stopped.wait(self.interval):
                return

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def growth(samples: list[tuple[float, float]], warmup_s: float) -> dict[str, float | int | None]:
    """RSS after warm-up: the mean of its first and last tenth (at least one sample each) and the growth
    between them in percent; None where fewer than two samples follow the warm-up."""
    after = [rss for seconds, rss in samples if seconds >= warmup_s]
    if len(after) < 2:
        return {"samples": len(after), "start_mib": None, "end_mib": None, "growth_percent": None, "max_mib": None}
    window = max(1, int(len(after) * WINDOW_SHARE))
    start, end = sum(after[:window]) / window, sum(after[-window:]) / window
    return {"samples": len(after), "start_mib": round(start, 1), "end_mib": round(end, 1),
            "growth_percent": round((end - start) / start * 100, 2), "max_mib": max(after)}


def plot(curves: dict[str, list[tuple[float, float]]], warmup_s: float, title: str, path: Path) -> None:
    """The RSS curves over time, the warm-up shaded, written to `path` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    end = max((s[-1][0] for s in curves.values() if s), default=warmup_s)
    axes.axvspan(0, warmup_s / 60, color="0.9", label="warm-up (not judged)")
    for name, samples in curves.items():
        axes.plot([s / 60 for s, _ in samples], [rss for _, rss in samples], label=name)
    axes.set_xlim(0, end / 60)
    axes.set_xlabel("minutes")
    axes.set_ylabel("resident memory (MiB)")
    axes.set_title(title)
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
