"""What an evaluation writes: results.json, a markdown table in the paper's format, and plots."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Sequence

from slidesam.lab.evaluation.metrics import BOUNDARY_AT_CLICK, IOU_AT_CLICKS, THRESHOLDS, boundary_summary, summarise
from slidesam.lab.evaluation.paired import paired_table

_KEYS = [f"{round(t * 100)}" for t in THRESHOLDS]
_BOUNDARY_KEYS = [str(BOUNDARY_AT_CLICK), "final"]


def hardware() -> dict:
    import torch

    info = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _encoder_ms(sample: dict) -> float:
    """Encoder time a sample needed: its open's, plus fine windows its clicks encoded (multi-window)."""
    return sample["open"]["encode_ms"] + sum(sample.get("click_encode_ms", ()))


def _used_store(sample: dict) -> bool:
    return sample["open"].get("windows_from_store", 0) + sum(sample.get("click_windows_from_store", ())) > 0


def _spc_with_encoder(samples: Sequence[dict]) -> float | None:
    """Seconds per click with each image's encoder time spread over the clicks (see seconds_per_click)."""
    clicks = [ms for sample in samples for ms in sample["click_ms"]]
    if not clicks:
        return None
    open_by_image: dict[str, float] = {}
    for sample in samples:
        open_by_image[sample["image_sha256"]] = max(open_by_image.get(sample["image_sha256"], 0.0), sample["open"]["encode_ms"])
    return (sum(clicks) + sum(open_by_image[sample["image_sha256"]] for sample in samples)) / len(clicks) / 1e3


def seconds_per_click(samples: Sequence[dict]) -> dict:
    """SPC without the image encoder, and with each sample's image-encoder time spread over its clicks.

    A click's wall time includes the encodes it needed itself (multi-window: fine windows not encoded
    yet); SPC without the encoder subtracts them. Samples that share an image share one encoding at the
    open (the cache); its time is charged to each of them, as RITM's figure charges the encoder to every
    sample. When some samples read embeddings from a precomputed store, SPC incl. encoder is also given
    for those samples and for the others apart.
    """
    clicks = [ms for sample in samples for ms in sample["click_ms"]]
    if not clicks:
        return {"spc_s": None, "spc_with_encoder_s": None, "encode_s_median": None}
    click_encodes = sum(ms for sample in samples for ms in sample.get("click_encode_ms", ()))
    measured = [_encoder_ms(sample) for sample in samples if _encoder_ms(sample) > 0]
    with_store = [sample for sample in samples if _used_store(sample)]
    without_store = [sample for sample in samples if not _used_store(sample)]
    timing = {
        "spc_s": (sum(clicks) - click_encodes) / len(clicks) / 1e3,
        "spc_with_encoder_s": _spc_with_encoder(samples),
        "encode_s_median": statistics.median(measured) / 1e3 if measured else None,
        "decode_ms_median": statistics.median(ms for sample in samples for ms in sample["decode_ms"]),
        "windows_encoded": sum(s["open"].get("windows_encoded", 0) + sum(s.get("click_windows_encoded", ())) for s in samples),
        "windows_from_store": sum(s["open"].get("windows_from_store", 0) + sum(s.get("click_windows_from_store", ())) for s in samples),
        "samples_with_store": len(with_store),
    }
    if with_store:
        timing["spc_with_encoder_store_s"] = _spc_with_encoder(with_store)
        timing["spc_with_encoder_no_store_s"] = _spc_with_encoder(without_store)
    return timing


def resolution_summary(samples: Sequence[dict]) -> dict:
    """How many samples the model saw coarser than asked for (after their last click), and the windows."""
    seen = [sample["resolution"] for sample in samples if sample.get("resolution")]
    return {
        "samples_downsampled": sum(r["downsampled"] for r in seen) if seen else None,
        "encoder_mpp_median": statistics.median(r["encoder_mpp"] for r in seen) if seen and all(r["encoder_mpp"] for r in seen) else None,
        "windows_median": statistics.median(r["windows"] for r in seen) if seen else None,
    }


def build_results(config: dict, samples: list[dict]) -> dict:
    finished = [sample.get("finished", len(sample["ious"]) < config["max_clicks"]) for sample in samples]
    summary = summarise([sample["ious"] for sample in samples], config["max_clicks"], finished)
    summary.update(boundary_summary(samples))
    summary.update(seconds_per_click(samples))
    summary.update(resolution_summary(samples))
    return {"config": config, "hardware": hardware(), "summary": summary, "samples": samples}


_WINDOW_LABELS = {"auto": "auto windows", "multi": "multi-window", "single": "single window"}


def label(results: dict) -> str:
    config = results["config"]
    windows = config.get("windows")
    text = f"{config['model']} ({config['strategy']})" + (f" {_WINDOW_LABELS.get(windows, windows)}" if windows else "")
    return text + (", precomputed store" if config.get("embedding_store") else "")


def _number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(all_results: Sequence[dict]) -> str:
    """Two tables, one row per results file: clicks to reach an IoU (NoC@80/85/90/95, samples over the
    maximum, IoU drops), then quality and speed (mean IoU at k clicks, boundary F-score, SPC)."""
    max_clicks = all_results[0]["config"]["max_clicks"]
    header = (
        "| model | data | samples | " + " | ".join(f"NoC@{k}" for k in _KEYS) + " | "
        + " | ".join(f">{max_clicks}@{k}" for k in _KEYS) + " | IoU drops |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for results in all_results:
        s = results["summary"]
        nocs = " | ".join(_number(s.get(f"noc@{k}")) for k in _KEYS)
        over = " | ".join(str(s[f"over_max@{k}"]) if f"over_max@{k}" in s else "-" for k in _KEYS)
        lines.append(f"| {label(results)} | {results['config']['dataset']} | {s['samples']} | {nocs} | {over} | "
                     f"{s['iou_drops']} ({s['samples_with_drops']} samples) |")

    iou_ks = [k for k in IOU_AT_CLICKS if any(k <= r["config"]["max_clicks"] for r in all_results)]
    tolerances = sorted({r["config"].get("boundary_um") for r in all_results if r["config"].get("boundary_um")})
    tolerance = " / ".join(f"{t:g} µm" for t in tolerances) or "µm"
    stored = any(r["summary"].get("samples_with_store") for r in all_results)
    header = (
        "| model | " + " | ".join(f"IoU@{k}" for k in iou_ks) + " | "
        + " | ".join(f"BF@{k} ({tolerance})" for k in _BOUNDARY_KEYS) + " | model saw coarser | SPC (s) | SPC incl. encoder (s) |"
        + (" SPC incl. encoder, precomputed (s) | SPC incl. encoder, not precomputed (s) |" if stored else "")
    )
    lines += ["", header, "|" + "---|" * (header.count("|") - 1)]
    for results in all_results:
        s = results["summary"]
        ious = " | ".join(_number(s.get(f"iou@{k}"), 3) for k in iou_ks)
        boundary = " | ".join(_number(s.get(f"bf@{k}"), 3) for k in _BOUNDARY_KEYS)
        coarser = "-" if s.get("samples_downsampled") is None else f"{s['samples_downsampled']} of {s['samples']}"
        row = (f"| {label(results)} | {ious} | {boundary} | {coarser} | {_number(s['spc_s'], 3)} | "
               f"{_number(s['spc_with_encoder_s'], 3)} |")
        if stored:
            row += f" {_number(s.get('spc_with_encoder_store_s'), 3)} | {_number(s.get('spc_with_encoder_no_store_s'), 3)} |"
        lines.append(row)
    device = all_results[0]["hardware"].get("gpu") or f"CPU ({all_results[0]['hardware']['torch_threads']} torch threads)"
    lines.append("")
    lines.append(f"NoC@t: clicks to reach IoU t (at most {max_clicks}); >{max_clicks}@t: samples that never reach it; "
                 "IoU drops: clicks after which the IoU fell. IoU@k: mean IoU after exactly k clicks (a sample whose "
                 f"clicker ran out of errors keeps its final mask). BF@k: mean boundary F-score (DAVIS-style, tolerance "
                 f"in µm) after click {BOUNDARY_AT_CLICK} and after the last click, over samples with a known µm/px. "
                 "Model saw coarser: samples whose encoder input was coarser than the resolution asked for. "
                 f"SPC on {device}, without the image encoder and with each image's encoder time spread over its "
                 "clicks ('precomputed': samples that read embeddings from a precomputed store).")
    return "\n".join(lines) + "\n"


def plot(all_results: Sequence[dict], out_dir: Path) -> list[Path]:
    """mean IoU versus clicks, and NoC bars, one series per results file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves_path, bars_path, quality_path = out_dir / "iou_vs_clicks.png", out_dir / "noc.png", out_dir / "quality.png"
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for results in all_results:
        curve = results["summary"]["mean_iou_at_k"]
        axes.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=label(results))
    axes.set(xlabel="clicks", ylabel="mean IoU", title="Mean IoU after k clicks", ylim=(0, 1))
    axes.set_xticks(range(1, results["config"]["max_clicks"] + 1, 2 if results["config"]["max_clicks"] > 10 else 1))
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(curves_path, dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(figsize=(7, 4.5))
    width = 0.8 / len(all_results)
    for offset, results in enumerate(all_results):
        values = [results["summary"][f"noc@{k}"] or 0 for k in _KEYS]
        positions = [i + offset * width - 0.4 + width / 2 for i in range(len(_KEYS))]
        axes.bar(positions, values, width=width, label=label(results))
    axes.set_xticks(range(len(_KEYS)), [f"NoC@{k}" for k in _KEYS])
    axes.set(ylabel="clicks (lower is better)", title="Number of clicks to reach an IoU")
    axes.legend()
    figure.tight_layout()
    figure.savefig(bars_path, dpi=120)
    plt.close(figure)

    keys = [(f"iou@{k}", f"IoU@{k}") for k in IOU_AT_CLICKS] + [(f"bf@{k}", f"BF@{k}") for k in _BOUNDARY_KEYS]
    keys = [(key, name) for key, name in keys if any(r["summary"].get(key) is not None for r in all_results)]
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for offset, results in enumerate(all_results):
        values = [results["summary"].get(key) or 0 for key, _ in keys]
        positions = [i + offset * width - 0.4 + width / 2 for i in range(len(keys))]
        axes.bar(positions, values, width=width, label=label(results))
    axes.set_xticks(range(len(keys)), [name for _, name in keys])
    axes.set(ylabel="mean (higher is better)", title="Mean IoU after k clicks and boundary F-score", ylim=(0, 1))
    axes.grid(alpha=0.3, axis="y")
    axes.legend()
    figure.tight_layout()
    figure.savefig(quality_path, dpi=120)
    plt.close(figure)
    return [curves_path, bars_path, quality_path]


def comparison_markdown(all_results: Sequence[dict]) -> str:
    """The tables of markdown_table, then the first results paired with each other one on their shared samples."""
    text = markdown_table(all_results)
    first = all_results[0]
    shared = {sample["name"] for sample in first["samples"]}
    for other in all_results[1:]:
        if shared & {sample["name"] for sample in other["samples"]}:
            text += "\n" + paired_table(first, other, label(first), label(other))
    return text


def write_report(all_results: Sequence[dict], out_dir: Path) -> list[Path]:
    """The markdown tables (paired comparisons included) and the three plots for one or more results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "results.md"
    table.write_text(comparison_markdown(all_results))
    return [table, *plot(all_results, out_dir)]


def load_results(path: Path) -> dict:
    return json.loads(Path(path).read_text())
