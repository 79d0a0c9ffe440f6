"""IoU, NoC@t, IoU at k clicks, the boundary F-score, and the per-click summaries of an evaluation.

IoU at k clicks is the IoU after exactly the k-th simulated click, not the best IoU up to k. A sample
whose clicker stopped before k (no unclicked error pixel was left, so its mask was final) keeps its
last IoU; a run that stopped before k for any other reason (fewer --max-clicks) has no IoU at k.

Boundary F-score (as the F-measure of the DAVIS benchmark, Perazzi et al. 2016, with the tolerance in
µm rather than a fraction of the image diagonal):
- the boundary of a mask is its pixels with at least one 4-neighbour outside the mask; the image's
  edge is not boundary (a patch's crop line is not the object's outline);
- precision: the fraction of predicted boundary pixels within `tolerance` of a ground-truth boundary
  pixel; recall: the fraction of ground-truth boundary pixels within `tolerance` of a predicted one
  (exact Euclidean distance transform, so "within" is a disk of that radius);
- F = 2PR / (P + R), 0 when both are 0. Both boundaries empty: P = R = F = 1; only the prediction's
  empty: P = 1, R = 0; only the ground truth's empty: P = 0, R = 1.
The tolerance is given in µm and converted with the evaluated patch's µm/px, so the score means the
same at x10 and x20. Samples whose µm/px is unknown are not scored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import cv2
import numpy as np

THRESHOLDS = (0.80, 0.85, 0.90, 0.95)
IOU_AT_CLICKS = (1, 3, 5, 10, 20)
BOUNDARY_AT_CLICK = 5          # the boundary F-score is reported after this click and after the last one
DEFAULT_BOUNDARY_UM = 2.0


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


def iou_at_click(ious: Sequence[float], k: int, finished: bool) -> float | None:
    """The IoU after the k-th click as simulated; a finished sample (no click left) keeps its last IoU."""
    if len(ious) >= k:
        return float(ious[k - 1])
    return float(ious[-1]) if finished and ious else None


def _key(threshold: float) -> str:
    return f"{round(threshold * 100)}"


def summarise(sequences: Sequence[Sequence[float]], max_clicks: int, finished: Sequence[bool] | None = None) -> dict:
    """NoC@80/85/90/95 (mean), samples that never reach each threshold, mean IoU at 1/3/5/10/20 clicks,
    the mean IoU curve, IoU drops.

    finished[i]: sample i stopped before max_clicks because the clicker had no click left (its mask was
    final). Without it, a sample shorter than max_clicks is taken as finished.
    """
    if finished is None:
        finished = [len(s) < max_clicks for s in sequences]
    curves = np.array([padded(s, max_clicks) for s in sequences]) if sequences else np.zeros((0, max_clicks))
    summary: dict = {"samples": len(sequences), "max_clicks": max_clicks}
    for threshold in THRESHOLDS:
        nocs = [number_of_clicks(s, threshold, max_clicks) for s in sequences]
        summary[f"noc@{_key(threshold)}"] = float(np.mean(nocs)) if nocs else None
        summary[f"over_max@{_key(threshold)}"] = sum(not reaches(s, threshold, max_clicks) for s in sequences)
    for k in IOU_AT_CLICKS:
        if k > max_clicks:
            continue
        values = [iou_at_click(s, k, done) for s, done in zip(sequences, finished)]
        known = [v for v in values if v is not None]
        summary[f"iou@{k}"] = float(np.mean(known)) if known and len(known) == len(values) else None
    summary["mean_iou_at_k"] = curves.mean(axis=0).tolist() if len(curves) else []
    summary["iou_drops"] = sum(iou_drops(s) for s in sequences)
    summary["samples_with_drops"] = sum(iou_drops(s) > 0 for s in sequences)
    return summary


# --------------------------------------------------------------------------------------- boundary


@dataclass(frozen=True)
class BoundaryScore:
    precision: float
    recall: float
    f: float

    def as_dict(self) -> dict:
        return asdict(self)


_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask (outside the image does not count)."""
    mask = np.asarray(mask, dtype=np.uint8)
    eroded = cv2.erode(mask, _CROSS, borderType=cv2.BORDER_REPLICATE)
    return (mask > 0) & (eroded == 0)


def _distance_to(pixels: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of `pixels` (which must have one)."""
    return cv2.distanceTransform((~pixels).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def boundary_f_score(prediction: np.ndarray, gt: np.ndarray, tolerance_px: float) -> BoundaryScore:
    """Boundary precision, recall and F-score with a tolerance in pixels (see the module docstring)."""
    if prediction.shape != gt.shape:
        raise ValueError(f"prediction shape {prediction.shape} differs from the ground truth's {gt.shape}")
    if not np.isfinite(tolerance_px) or tolerance_px < 0:
        raise ValueError(f"the boundary tolerance must be a finite number >= 0, got {tolerance_px}")
    predicted, truth = boundary(prediction), boundary(gt)
    if not predicted.any() or not truth.any():
        both_empty = not predicted.any() and not truth.any()
        precision = 1.0 if both_empty or not predicted.any() else 0.0
        recall = 1.0 if both_empty or not truth.any() else 0.0
        return BoundaryScore(precision, recall, 1.0 if both_empty else 0.0)
    precision = float((_distance_to(truth)[predicted] <= tolerance_px).mean())
    recall = float((_distance_to(predicted)[truth] <= tolerance_px).mean())
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return BoundaryScore(precision, recall, f)


def boundary_summary(samples: Sequence[dict]) -> dict:
    """Mean boundary F (and P, R) after BOUNDARY_AT_CLICK clicks and after the last click, over the
    samples with a known µm/px; how many were scored."""
    scored = [s["boundary"] for s in samples if s.get("boundary")]
    summary: dict = {"boundary_samples": len(scored)}
    for at in (str(BOUNDARY_AT_CLICK), "final"):
        scores = [b[at] for b in scored if b.get(at)]
        for part in ("f", "precision", "recall"):
            name = "bf" if part == "f" else f"b{part[0]}"   # bf, bp, br
            summary[f"{name}@{at}"] = float(np.mean([b[part] for b in scores])) if scores and len(scores) == len(scored) else None
    return summary
