"""Tissue on a slide thumbnail: Otsu on saturation, morphological clean-up, connected components.

Glass is near white (low saturation) and stained tissue is coloured, so Otsu's threshold on the
HSV saturation of a blurred thumbnail separates them; never below `min_saturation`, so an empty
slide gives no tissue. Opening removes specks, closing fills small gaps. Components smaller than
`min_area_fraction` of the slide are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TissueSettings:
    thumbnail_side: int = 1024
    min_saturation: int = 20
    min_area_fraction: float = 0.001
    kernel_fraction: float = 0.005
    """Structuring element size as a fraction of the thumbnail's longer side."""


def tissue_mask(rgb: np.ndarray, settings: TissueSettings) -> np.ndarray:
    """Bool mask of the tissue pixels of an RGB thumbnail."""
    saturation = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1], (5, 5), 0)
    otsu, _ = cv2.threshold(saturation, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    mask = (saturation > max(otsu, settings.min_saturation)).astype(np.uint8)
    side = max(3, round(settings.kernel_fraction * max(rgb.shape[:2])) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (side, side))
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel)
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel).astype(bool)


def tissue_boxes(mask: np.ndarray, scale: float, settings: TissueSettings) -> list[tuple[float, float, float, float]]:
    """One level-0 box (x, y, width, height) per tissue component, in raster order of the components.
    `scale` is level-0 pixels per mask pixel."""
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    min_area = settings.min_area_fraction * mask.size
    return [
        (float(x * scale), float(y * scale), float(w * scale), float(h * scale))
        for x, y, w, h, area in stats[1:count]
        if area >= min_area
    ]
