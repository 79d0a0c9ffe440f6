"""One evaluation run: every sample of a dataset through a backend, resumable, then the report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
from slidesam.atomic_files import atomic_write
from tqdm import tqdm

from slidesam.lab.evaluation.datasets import Dataset
from slidesam.lab.evaluation.metrics import DEFAULT_BOUNDARY_UM
from slidesam.lab.evaluation.report import build_results, write_report
from slidesam.lab.evaluation.runner import Backend, PartialResults, evaluate_sample

log = logging.getLogger(__name__)


def _mask_saver(out_dir: Path, name: str):
    directory = out_dir / "masks" / name
    directory.mkdir(parents=True, exist_ok=True)

    def save(click: int, mask) -> None:
        cv2.imwrite(str(directory / f"click_{click:02d}.png"), mask.astype("uint8") * 255)

    return save


def run_evaluation(dataset: Dataset, backend: Backend, out_dir: Path, config: dict, save_masks: bool = False) -> dict:
    """Evaluates every sample not finished yet, then writes results.json, results.md and the plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = PartialResults(out_dir / "results.partial.jsonl", config)
    names = dataset.names()
    if partial.done:
        log.info("resuming: %d of %d samples already evaluated", sum(n in partial.done for n in names), len(names))
    progress = tqdm(total=len(names), desc=f"evaluating {config['model']} ({config['strategy']})", unit="sample")
    progress.update(sum(name in partial.done for name in names))
    for sample in dataset:
        if sample.name in partial.done:
            continue
        saver = _mask_saver(out_dir, sample.name) if save_masks else None
        partial.add(evaluate_sample(backend, sample, config["max_clicks"], saver, config.get("boundary_um", DEFAULT_BOUNDARY_UM)))
        progress.update()
    progress.close()
    results = build_results(config, [partial.done[name] for name in names])
    atomic_write(out_dir / "results.json", json.dumps(results, indent=1).encode())
    write_report([results], out_dir)
    partial.path.unlink(missing_ok=True)
    return results
