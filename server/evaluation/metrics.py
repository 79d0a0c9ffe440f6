"""IoU, NoC@t and the per-click summaries of an evaluation."""

from __future__ import annotations

from typing import Sequence

import numpy as np

THRESHOLDS = (0.80, 0.85, 0.90)


def mask_iou(prediction: np.ndarray, gt: np.ndarray) -> float:
    """Pixel IoU of two boolean masks of the same shape (1.0 when both are empty)."""
    union = np.logical_or(prediction, gt).sum()
    return float(np.logical_and(prediction, gt).sum() / union) if union else 1.0


def number_of_clicks(ious: Sequence[float], threshold: float, max_clicks: int) -> int:
    """NoC@t: the 1-based index of the first click whose IoU >= t, else max_clicks."""
    for index, iou in enumerate(ious[:max_clicks], start=1):
        if iou >= threshold:
            return index
    return max_clicks


def reaches(ious: Sequence[float], threshold: float, max_clicks: int) -> bool:
    return any(iou >= threshold for iou in ious[:max_clicks])


def iou_drops(ious: Sequence[float], tolerance: float = 1e-6) -> int:
    """How many clicks made the IoU fall compared with the click before."""
    return sum(1 for before, after in zip(ious, ious[1:]) if after < before - tolerance)


def padded(ious: Sequence[float], max_clicks: int) -> list[float]:
    """The IoU sequence extended to max_clicks with its last value (a user who stopped keeps the mask)."""
    values = list(ious[:max_clicks])
    return values + [values[-1]] * (max_clicks - len(values)) if values else [0.0] * max_clicks


def summarise(sequences: Sequence[Sequence[float]], max_clicks: int) -> dict:
    """NoC@80/85/90 (mean), samples that never reach each threshold, mean IoU after k clicks, IoU drops."""
    curves = np.array([padded(s, max_clicks) for s in sequences]) if sequences else np.zeros((0, max_clicks))
    summary: dict = {"samples": len(sequences), "max_clicks": max_clicks}
    for threshold in THRESHOLDS:
        key = f"{round(threshold * 100)}"
        nocs = [number_of_clicks(s, threshold, max_clicks) for s in sequences]
        summary[f"noc@{key}"] = float(np.mean(nocs)) if nocs else None
        summary[f"over_max@{key}"] = sum(not reaches(s, threshold, max_clicks) for s in sequences)
    summary["mean_iou_at_k"] = curves.mean(axis=0).tolist() if len(curves) else []
    summary["iou_drops"] = sum(iou_drops(s) for s in sequences)
    summary["samples_with_drops"] = sum(iou_drops(s) > 0 for s in sequences)
    return summary
