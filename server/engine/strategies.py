"""Which of SAM's candidate masks an object keeps after each step.

- `plain`: SAM as published. The first decode of a single click keeps the best-scoring multimask
  output; every other decode keeps the single-mask output.
- `consistent`: keeps every click honoured and the mask stable. Of all four candidates, prefer one
  that agrees with the click(s) just made (positive inside, negative outside), then the fewest clicks
  violated overall, then the largest overlap (IoU) with the previous mask, then SAM's predicted IoU
  (on the first step, with no previous mask, SAM's single-mask output). Click agreement is read from the
  low-resolution logits at each click and overlap on the low-resolution masks, so choosing costs no
  extra decoder pass.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from slidesam.server.errors import InvalidArgument
from slidesam.server.models.served import Candidates

LOW_RES_STRIDE = 4  # the decoder's 256 x 256 logits cover the 1024 x 1024 encoder input

Strategy = Callable[[Candidates, np.ndarray, int, torch.Tensor | None, bool], int]


def choose_plain(candidates: Candidates, labels: np.ndarray, new_clicks: int, previous: torch.Tensor | None, first_single_click: bool) -> int:
    if first_single_click:
        return 1 + int(torch.argmax(candidates.scores[1:]))
    return 0


def _inside_at_points(logits: torch.Tensor, points: np.ndarray) -> np.ndarray:
    """C x N: whether each candidate's logit at each prompt point is positive."""
    size = logits.shape[-1]
    cols = np.clip(((points[:, 0] + 0.5) / LOW_RES_STRIDE).astype(int), 0, size - 1)
    rows = np.clip(((points[:, 1] + 0.5) / LOW_RES_STRIDE).astype(int), 0, size - 1)
    return (logits[:, rows, cols] > 0).cpu().numpy()


def _overlap_with(logits: torch.Tensor, previous: torch.Tensor | None) -> np.ndarray:
    """IoU of each candidate's low-resolution mask with the previous one (zeros without one)."""
    if previous is None:
        return np.zeros(logits.shape[0])
    current, before = logits > 0, previous.reshape(1, *logits.shape[-2:]) > 0
    union = (current | before).flatten(1).sum(1).clamp(min=1)
    return ((current & before).flatten(1).sum(1) / union).cpu().numpy()


def choose_consistent(candidates: Candidates, labels: np.ndarray, new_clicks: int, previous: torch.Tensor | None, first_single_click: bool) -> int:
    if candidates.points is None or not len(candidates.points):
        return choose_plain(candidates, labels, new_clicks, previous, first_single_click)
    inside = _inside_at_points(candidates.logits, candidates.points)
    violated = inside != (np.asarray(labels) == 1)[None, :]
    violates_new = violated[:, len(labels) - new_clicks :].any(axis=1)
    if previous is None:  # first step: nothing to stay close to; SAM's single-mask answer is preferred
        closeness = np.zeros(len(violated))
        closeness[0] = 1
    else:
        closeness = _overlap_with(candidates.logits, previous)
    scores = candidates.scores.float().cpu().numpy()
    order = np.lexsort((-scores, -closeness, violated.sum(axis=1), violates_new))
    return int(order[0])


STRATEGIES: dict[str, Strategy] = {"plain": choose_plain, "consistent": choose_consistent}


def strategy_named(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise InvalidArgument(f"unknown prompt strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]
