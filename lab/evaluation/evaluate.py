"""One evaluation run: every sample of a dataset through a backend, resumable, then the report."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
from tqdm import tqdm

from slidesam.atomic_files import atomic_write
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


def evaluation_config(
    model: str, model_id: str, sha256: str | None, device: str, strategy: str, dataset: Dataset, max_clicks: int,
    backend: Backend, windows: str, boundary_um: float, slide_root: Path | None = None, embedding_store: Path | None = None,
) -> dict:
    """What results.json records about a run (a resumed run must match it)."""
    return {
        "model": model, "model_id": model_id, "checkpoint_sha256": sha256, "strategy": strategy,
        "dataset": dataset.description, "max_clicks": max_clicks, "backend": backend.name, "device": device,
        "windows": windows, "boundary_um": boundary_um,
        "opened_on": "slide" if slide_root else "uploaded pixels",
        "embedding_store": str(embedding_store) if embedding_store else None,
        "protocol": "RITM clicker: farthest point of the larger error region (padded, L2, clicked pixels excluded)",
    }


def run_evaluation(dataset: Dataset, backend: Backend, out_dir: Path, config: dict, save_masks: bool = False) -> dict:
    """Evaluates every sample not finished yet, then writes results.json, results.md and the plots.
    Samples with an empty mask (negatives of a training export: no object to click on) are skipped."""
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = PartialResults(out_dir / "results.partial.jsonl", config)
    names = dataset.names()
    if partial.done:
        log.info("resuming: %d of %d samples already evaluated", sum(n in partial.done for n in names), len(names))
    progress = tqdm(total=len(names), desc=f"evaluating {config['model']} ({config['strategy']})", unit="sample")
    progress.update(sum(name in partial.done for name in names))
    skipped = set()
    for sample in dataset:
        if sample.name in partial.done:
            continue
        if not sample.gt.any():
            skipped.add(sample.name)
            progress.update()
            continue
        saver = _mask_saver(out_dir, sample.name) if save_masks else None
        partial.add(evaluate_sample(backend, sample, config["max_clicks"], saver, config.get("boundary_um", DEFAULT_BOUNDARY_UM)))
        progress.update()
    progress.close()
    if skipped:
        log.info("skipped %d of %d samples with an empty mask (negatives: no object to click on)", len(skipped), len(names))
    if len(skipped) == len(names):
        raise ValueError(f"{dataset.description}: every mask is empty, there is no object to evaluate on")
    results = build_results(config, [partial.done[name] for name in names if name not in skipped])
    atomic_write(out_dir / "results.json", json.dumps(results, indent=1).encode())
    write_report([results], out_dir)
    partial.path.unlink(missing_ok=True)
    return results
