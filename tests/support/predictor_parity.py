"""A served model against its package's own predictor (SamPredictor, SAM2ImagePredictor), click by click."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from slidesam.server.engine.strategies import choose_plain
from slidesam.server.models.served import ImageEmbedding, ServedModel


@dataclass(frozen=True)
class ParityStep:
    mask: np.ndarray               # ours, at the region's size
    logits: torch.Tensor           # ours, 1 x 1 x 256 x 256: the next step's mask input
    predictor_logits: np.ndarray   # the predictor's chosen low-resolution logits, 1 x 256 x 256


def assert_plain_matches_predictor(
    model: ServedModel, embedding: ImageEmbedding, predictor, points: np.ndarray, labels: np.ndarray,
) -> list[ParityStep]:
    """Adds the clicks one at a time, as the `plain` strategy and as the predictor's user would (first click
    multimask, best score kept; then one mask with the previous logits): every mask pixel-equal, every
    score equal to 1e-5. Returns the steps for further checks."""
    steps: list[ParityStep] = []
    ours = theirs = None
    for count in range(1, len(points) + 1):
        masks, scores, low_res = predictor.predict(points[:count], labels[:count], mask_input=theirs, multimask_output=theirs is None)
        best = int(np.argmax(scores))
        theirs = low_res[best : best + 1]
        candidates = model.candidates(embedding, points[:count], labels[:count], None, ours)
        index = choose_plain(candidates, labels[:count], 1, ours, first_single_click=ours is None)
        ours = candidates.logits[index][None, None]
        mask = model.upscale(embedding, candidates.logits[index]).full()
        assert np.array_equal(mask, masks[best]), f"click {count}: the masks differ"
        assert float(candidates.scores[index]) == pytest.approx(float(scores[best]), abs=1e-5)
        steps.append(ParityStep(mask, ours, theirs))
    return steps
