"""The paired comparison `eval --compare` adds: per-sample differences, bootstrap intervals, verdicts."""

from __future__ import annotations

import pytest

from slidesam.lab.evaluation.paired import paired_differences, paired_table
from slidesam.lab.evaluation.report import comparison_markdown

MAX_CLICKS = 5


def _results(curves: dict[str, list[float]], windows: str = "auto") -> dict:
    samples = [
        {"name": name, "ious": ious, "finished": False, "boundary": {"final": {"f": ious[-1] / 2}}}
        for name, ious in curves.items()
    ]
    config = {"model": "mobile_sam", "strategy": "plain", "windows": windows, "max_clicks": MAX_CLICKS}
    return {"config": config, "samples": samples}


def _by_metric(a: dict, b: dict) -> dict:
    return {row.metric: row for row in paired_differences(a, b)}


def test_identical_runs_tie_on_every_metric():
    curves = {f"s{i}": [0.5 + 0.05 * i, 0.7, 0.8, 0.9, 0.96] for i in range(6)}
    rows = _by_metric(_results(curves), _results(curves, "single"))
    assert {row.verdict for row in rows.values()} == {"tie"}
    assert all(row.ties == 6 and row.low == row.high == 0 for row in rows.values())


def test_a_consistent_gain_is_clear_and_a_mixed_one_is_noise():
    base = {f"s{i}": [0.40 + 0.02 * i, 0.60, 0.70, 0.80, 0.85] for i in range(8)}
    better = {name: [iou + 0.05 for iou in ious] for name, ious in base.items()}
    rows = _by_metric(_results(better), _results(base, "single"))
    iou5 = rows["IoU@5"]
    assert iou5.mean_difference == pytest.approx(0.05) and iou5.low > 0 and iou5.clear
    assert (iou5.wins, iou5.losses, iou5.verdict) == (8, 0, "A better")
    assert rows["NoC@90"].verdict in ("A better", "tie")  # 0.90 reached earlier or never by either

    mixed = {name: [iou + (0.05 if index % 2 else -0.05) for iou in ious] for index, (name, ious) in enumerate(base.items())}
    noisy = _by_metric(_results(mixed), _results(base, "single"))["IoU@5"]
    assert noisy.low < 0 < noisy.high and noisy.verdict.endswith("within noise")
    assert (noisy.wins, noisy.losses) == (4, 4)


def test_lower_noc_counts_as_a_win():
    fast = {f"s{i}": [0.86, 0.91, 0.96, 0.97, 0.97] for i in range(4)}
    slow = {f"s{i}": [0.50, 0.70, 0.86, 0.91, 0.96] for i in range(4)}
    row = _by_metric(_results(fast), _results(slow, "single"))["NoC@95"]
    assert row.mean_difference == pytest.approx(-2.0) and row.wins == 4 and row.verdict == "A better"


def test_only_shared_samples_are_paired_and_none_shared_is_refused():
    a = _results({"x": [0.5] * MAX_CLICKS, "y": [0.6] * MAX_CLICKS})
    b = _results({"y": [0.7] * MAX_CLICKS, "z": [0.9] * MAX_CLICKS}, "single")
    assert paired_differences(a, b)[0].samples == 1
    with pytest.raises(ValueError, match="share no sample"):
        paired_differences(a, _results({"z": [0.9] * MAX_CLICKS}, "single"))
    assert "1 shared samples" in paired_table(a, b, "A", "B")


def test_the_compare_report_carries_the_paired_table():
    curves = {f"s{i}": [0.5, 0.6, 0.7, 0.8, 0.9] for i in range(3)}
    a, b = _results(curves), _results(curves, "single")
    for results in (a, b):
        results["summary"] = _summary(results)
        results["hardware"] = {"torch_threads": 2}
        results["config"]["dataset"] = "test"
    text = comparison_markdown([a, b])
    assert "Paired, per sample: A = mobile_sam (plain) auto windows, B = mobile_sam (plain) single window" in text
    assert "| IoU@20 |" not in text  # IoU@20 is beyond these runs' 5 clicks
    assert "| IoU@5 | +0.000 |" in text


def _summary(results: dict) -> dict:
    from slidesam.lab.evaluation.metrics import summarise

    summary = summarise([s["ious"] for s in results["samples"]], MAX_CLICKS)
    summary.update({"spc_s": None, "spc_with_encoder_s": None})
    return summary
