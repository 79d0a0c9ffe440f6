"""What an evaluation writes: results.json, a markdown table in the paper's format, and plots."""

from __future__ import annotations

import json
import os
import platform
import statistics
from pathlib import Path
from typing import Sequence

from server.evaluation.metrics import THRESHOLDS, summarise

_KEYS = [f"{round(t * 100)}" for t in THRESHOLDS]


def hardware() -> dict:
    import torch

    info = {"machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def seconds_per_click(samples: Sequence[dict]) -> dict:
    """SPC without the image encoder, and with each sample's image-encoder time spread over its clicks.

    Samples that share an image share one encoding (the cache); its time is charged to each of them,
    as RITM's figure charges the encoder to every sample.
    """
    clicks = [ms for sample in samples for ms in sample["click_ms"]]
    if not clicks:
        return {"spc_s": None, "spc_with_encoder_s": None, "encode_s_median": None}
    encode_by_image: dict[str, float] = {}
    for sample in samples:
        encode_by_image[sample["image_sha256"]] = max(encode_by_image.get(sample["image_sha256"], 0.0), sample["open"]["encode_ms"])
    encoder_total = sum(encode_by_image[sample["image_sha256"]] for sample in samples)
    measured = [ms for ms in encode_by_image.values() if ms > 0]
    return {
        "spc_s": sum(clicks) / len(clicks) / 1e3,
        "spc_with_encoder_s": (sum(clicks) + encoder_total) / len(clicks) / 1e3,
        "encode_s_median": statistics.median(measured) / 1e3 if measured else None,
        "decode_ms_median": statistics.median(ms for sample in samples for ms in sample["decode_ms"]),
    }


def build_results(config: dict, samples: list[dict]) -> dict:
    summary = summarise([sample["ious"] for sample in samples], config["max_clicks"])
    summary.update(seconds_per_click(samples))
    return {"config": config, "hardware": hardware(), "summary": summary, "samples": samples}


def label(results: dict) -> str:
    config = results["config"]
    return f"{config['model']} ({config['strategy']})"


def markdown_table(all_results: Sequence[dict]) -> str:
    """One row per results file: NoC@80/85/90, samples over the maximum, IoU drops, SPC."""
    max_clicks = all_results[0]["config"]["max_clicks"]
    header = (
        "| model | data | samples | " + " | ".join(f"NoC@{k}" for k in _KEYS) + " | "
        + " | ".join(f">{max_clicks}@{k}" for k in _KEYS) + " | IoU drops | SPC (s) | SPC incl. encoder (s) |"
    )
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for results in all_results:
        s = results["summary"]
        nocs = " | ".join(f"{s[f'noc@{k}']:.2f}" if s[f"noc@{k}"] is not None else "-" for k in _KEYS)
        over = " | ".join(str(s[f"over_max@{k}"]) for k in _KEYS)
        spc = f"{s['spc_s']:.3f}" if s["spc_s"] is not None else "-"
        spc_enc = f"{s['spc_with_encoder_s']:.3f}" if s["spc_with_encoder_s"] is not None else "-"
        lines.append(f"| {label(results)} | {results['config']['dataset']} | {s['samples']} | {nocs} | {over} | "
                     f"{s['iou_drops']} ({s['samples_with_drops']} samples) | {spc} | {spc_enc} |")
    device = all_results[0]["hardware"].get("gpu") or f"CPU ({all_results[0]['hardware']['torch_threads']} torch threads)"
    lines.append("")
    lines.append(f"NoC@t: clicks to reach IoU t (at most {max_clicks}); >{max_clicks}@t: samples that never reach it; "
                 f"IoU drops: clicks after which the IoU fell. SPC on {device}; 'incl. encoder' spreads each image's "
                 "encoder time over its clicks.")
    return "\n".join(lines) + "\n"


def plot(all_results: Sequence[dict], out_dir: Path) -> list[Path]:
    """mean IoU versus clicks, and NoC bars, one series per results file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves_path, bars_path = out_dir / "iou_vs_clicks.png", out_dir / "noc.png"
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
    return [curves_path, bars_path]


def write_report(all_results: Sequence[dict], out_dir: Path) -> list[Path]:
    """The markdown table and the two plots for one or more results."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = out_dir / "results.md"
    table.write_text(markdown_table(all_results))
    return [table, *plot(all_results, out_dir)]


def load_results(path: Path) -> dict:
    return json.loads(Path(path).read_text())
