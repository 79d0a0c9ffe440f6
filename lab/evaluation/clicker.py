"""The click simulator of RITM, FocalClick and SimpleClick (`isegm/inference/clicker.py`), deterministic.

The next click goes to the pixel of the current error that lies farthest from the error's boundary:
- false negatives FN = gt & ~pred and false positives FP = ~gt & pred, each padded by one pixel of
  background so that the image border counts as boundary;
- exact L2 distance transform of each; pixels already clicked are excluded;
- the click is positive iff the largest FN distance exceeds the largest FP distance (ties: negative),
  placed at the first pixel (row-major) that reaches that distance.
With an empty prediction the first click therefore lands on the object's point farthest from its
boundary. When no error pixel is left to click, there is no next click.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class SimulatedClick:
    row: int
    col: int
    positive: bool


def _distance_to_boundary(error: np.ndarray) -> np.ndarray:
    """L2 distance of each error pixel to the nearest non-error pixel, the image border counting as one."""
    padded = np.pad(error.astype(np.uint8), 1, mode="constant")
    return cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]


class Clicker:
    """Simulates a user clicking on the largest error of the current prediction."""

    def __init__(self, gt_mask: np.ndarray):
        self.gt = np.asarray(gt_mask).astype(bool)
        if not self.gt.any():
            raise ValueError("the ground-truth mask is empty: there is no object to click on")
        self.not_clicked = np.ones(self.gt.shape, dtype=bool)
        self.clicks: list[SimulatedClick] = []

    def next_click(self, prediction: np.ndarray) -> SimulatedClick | None:
        """The next click for this prediction (None when no unclicked error pixel is left); recorded."""
        prediction = np.asarray(prediction).astype(bool)
        if prediction.shape != self.gt.shape:
            raise ValueError(f"prediction shape {prediction.shape} differs from the ground truth's {self.gt.shape}")
        fn = _distance_to_boundary(self.gt & ~prediction) * self.not_clicked
        fp = _distance_to_boundary(~self.gt & prediction) * self.not_clicked
        fn_max, fp_max = float(fn.max()), float(fp.max())
        if fn_max == 0.0 and fp_max == 0.0:
            return None
        positive = fn_max > fp_max
        distances, best = (fn, fn_max) if positive else (fp, fp_max)
        row, col = np.unravel_index(int(np.argmax(distances == best)), distances.shape)
        click = SimulatedClick(int(row), int(col), positive)
        self.not_clicked[row, col] = False
        self.clicks.append(click)
        return click
