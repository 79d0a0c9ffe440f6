"""A thresholded mask leaves the device cut to its object's bounding box: one small sync for the box,
one copy of the pixels that matter, and contours traced over the box only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MaskCrop:
    """The part of a region's boolean mask that holds its object, with a one-pixel margin where the
    region has one (so contours traced in it equal those traced in the whole mask)."""

    mask: np.ndarray                 # bool h x w, on the host; 0 x 0 when the mask is empty
    origin: tuple[int, int]          # (col, row) of mask[0, 0] in the region
    shape: tuple[int, int]           # (H, W) of the whole region mask

    @property
    def empty(self) -> bool:
        return self.mask.size == 0

    def full(self) -> np.ndarray:
        """The whole region's mask (H x W bool)."""
        whole = np.zeros(self.shape, dtype=bool)
        col, row = self.origin
        whole[row : row + self.mask.shape[0], col : col + self.mask.shape[1]] = self.mask
        return whole


def crop_to_object(mask: torch.Tensor) -> MaskCrop:
    """A boolean H x W mask on any device -> its bounding box (plus margin) copied to the host."""
    height, width = mask.shape
    rows, cols = mask.any(dim=1), mask.any(dim=0)
    row_index = torch.arange(height, device=mask.device)
    col_index = torch.arange(width, device=mask.device)
    first_row, last_row, first_col, last_col = torch.stack([
        torch.where(rows, row_index, height).min(), torch.where(rows, row_index, -1).max(),
        torch.where(cols, col_index, width).min(), torch.where(cols, col_index, -1).max(),
    ]).tolist()
    if last_row < 0:
        return MaskCrop(np.zeros((0, 0), dtype=bool), (0, 0), (height, width))
    top, left = max(first_row - 1, 0), max(first_col - 1, 0)
    bottom, right = min(last_row + 2, height), min(last_col + 2, width)
    return MaskCrop(mask[top:bottom, left:right].cpu().numpy(), (left, top), (height, width))
