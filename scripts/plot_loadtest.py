"""Draws per-click latency (p50/p95/p99) of several `scripts/loadtest` runs side by side.

    python scripts/plot_loadtest.py OUT.png NAME=RUN.json [NAME=RUN.json ...]

Each RUN.json holds a load test's output; its last line is the JSON summary.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

PERCENTILES = ("p50", "p95", "p99")


def summary(path: Path) -> dict:
    return json.loads(path.read_text().strip().splitlines()[-1])


def main(out: Path, runs: list[str]) -> None:
    names, results = [], []
    for run in runs:
        name, _, path = run.partition("=")
        names.append(name)
        results.append(summary(Path(path)))
    positions = np.arange(len(names))
    figure, axes = plt.subplots(figsize=(1.6 * len(names) + 2, 4.2))
    for offset, percentile in enumerate(PERCENTILES):
        values = [result["click_ms"][percentile] for result in results]
        bars = axes.bar(positions + (offset - 1) * 0.27, values, 0.27, label=percentile)
        axes.bar_label(bars, fmt="%.0f", fontsize=7)
    axes.set_xticks(positions, [f"{name}\n{r['clicks_per_s']:.1f} clicks/s" for name, r in zip(names, results)], fontsize=8)
    axes.set_ylabel("per-click round trip (ms)")
    axes.set_title("slidesam loadtest: MobileSAM, one server, loopback")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=130)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), sys.argv[2:])
