"""Paired comparison of two evaluation runs on the same samples: is a difference more than noise?

Interactive segmentation is chaotic from click to click (one unlucky click can collapse a mask for a
few clicks), so on a small set a difference of means can be a single sample's bad luck. For each
metric this gives, over the samples both runs evaluated (matched by name):
- the mean of the per-sample differences A - B;
- its 95 % bootstrap confidence interval (percentile method, 10,000 resamples of the samples, fixed
  seed, scipy.stats.bootstrap): a difference is called clear when the interval excludes zero;
- how many samples A wins, ties and loses (lower is better for NoC, higher for IoU and BF).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from scipy import stats

from slidesam.lab.evaluation.metrics import IOU_AT_CLICKS, THRESHOLDS, iou_at_click, number_of_clicks

CONFIDENCE = 0.95
RESAMPLES = 10_000
SEED = 0
TIE = 1e-9


@dataclass(frozen=True)
class PairedMetric:
    name: str
    higher_is_better: bool
    read: Callable[[dict, int], float | None]  # (sample record, max_clicks) -> value


def _iou_at(k: int) -> Callable[[dict, int], float | None]:
    return lambda sample, max_clicks: iou_at_click(sample["ious"], k, sample.get("finished", len(sample["ious"]) < max_clicks))


def _noc_at(threshold: float) -> Callable[[dict, int], float | None]:
    return lambda sample, max_clicks: float(number_of_clicks(sample["ious"], threshold, max_clicks))


def _boundary_final(sample: dict, max_clicks: int) -> float | None:
    boundary = sample.get("boundary") or {}
    return boundary["final"]["f"] if "final" in boundary else None


METRICS = (
    [PairedMetric(f"NoC@{round(t * 100)}", False, _noc_at(t)) for t in THRESHOLDS]
    + [PairedMetric(f"IoU@{k}", True, _iou_at(k)) for k in IOU_AT_CLICKS]
    + [PairedMetric("BF@final", True, _boundary_final)]
)


@dataclass(frozen=True)
class PairedDifference:
    metric: str
    samples: int
    mean_difference: float            # A - B
    low: float                        # 95 % bootstrap interval of the mean difference
    high: float
    wins: int                         # samples where A is better
    ties: int
    losses: int
    higher_is_better: bool

    @property
    def clear(self) -> bool:
        """The interval excludes zero."""
        return self.low > 0 or self.high < 0

    @property
    def verdict(self) -> str:
        if abs(self.mean_difference) <= TIE and self.low == self.high:
            return "tie"
        better = (self.mean_difference > 0) == self.higher_is_better
        side = "A better" if better else "B better"
        return side if self.clear else f"{side}, within noise"


def paired_differences(a: dict, b: dict) -> list[PairedDifference]:
    """Per-metric paired differences A - B over the samples both results hold (see the module docstring)."""
    max_clicks = min(a["config"]["max_clicks"], b["config"]["max_clicks"])
    b_samples = {sample["name"]: sample for sample in b["samples"]}
    pairs = [(sample, b_samples[sample["name"]]) for sample in a["samples"] if sample["name"] in b_samples]
    if not pairs:
        raise ValueError("the two results share no sample: a paired comparison needs the same samples")
    differences = []
    for metric in METRICS:
        values = [(metric.read(x, max_clicks), metric.read(y, max_clicks)) for x, y in pairs]
        values = [(x, y) for x, y in values if x is not None and y is not None]
        if not values:
            continue
        delta = np.array([x - y for x, y in values], dtype=float)
        low, high = _interval(delta)
        better = delta if metric.higher_is_better else -delta
        differences.append(PairedDifference(
            metric.name, len(delta), float(delta.mean()), low, high,
            int((better > TIE).sum()), int((np.abs(better) <= TIE).sum()), int((better < -TIE).sum()), metric.higher_is_better,
        ))
    return differences


def _interval(delta: np.ndarray) -> tuple[float, float]:
    if len(delta) < 2 or np.ptp(delta) <= TIE:
        return float(delta.mean()), float(delta.mean())
    result = stats.bootstrap(
        (delta,), np.mean, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
        random_state=np.random.default_rng(SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_table(a: dict, b: dict, label_a: str, label_b: str) -> str:
    """The paired comparison as a markdown table (A = label_a, B = label_b)."""
    rows = paired_differences(a, b)
    lines = [
        f"Paired, per sample: A = {label_a}, B = {label_b} ({rows[0].samples} shared samples)",
        "",
        "| metric | mean A - B | 95 % interval | A wins / ties / losses | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row.metric} | {row.mean_difference:+.3f} | [{row.low:+.3f}, {row.high:+.3f}] | "
                     f"{row.wins} / {row.ties} / {row.losses} | {row.verdict} |")
    lines += ["", f"Interval: {round(CONFIDENCE * 100)} % percentile bootstrap of the mean per-sample difference "
                  f"({RESAMPLES:,} resamples, seed {SEED}); 'within noise' when it includes zero. NoC: lower is better."]
    return "\n".join(lines) + "\n"
