"""Ground-truth object masks derived from real stained tissue by colour deconvolution.

No public package ships tumour masks, so objects are made from the stain itself:
1. separate the stains with skimage's `rgb2hed` (Ruifrok & Johnston); take the haematoxylin channel
   for H&E (nuclei-dense tissue: epithelium, tumour nests) or the DAB channel for IHC;
2. smooth it (Gaussian, sigma = 1.5 % of the image's shorter side) so that an object is a region
   dense in stain rather than single nuclei, and threshold with Otsu;
3. clean up: morphological opening and closing (disk of 1 % of the shorter side), holes smaller than
   0.5 % of the image filled (OpenCV's binary morphology with skimage's disk footprint: the same masks as
   skimage's `opening`/`closing`, about 50x faster on a whole 2220 x 2967 slide);
4. the connected components whose area lies between 1 % and 60 % of the image are objects, largest
   first (at most `max_objects`); each becomes one sample with that component as its mask.
The rule is fixed and deterministic, so anyone can rebuild the same masks from the same images.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from scipy import ndimage
from skimage import color, filters, measure, morphology

Stain = Literal["hematoxylin", "dab"]
_CHANNEL = {"hematoxylin": 0, "dab": 2}


def stain_density(rgb: np.ndarray, stain: Stain) -> np.ndarray:
    """The smoothed concentration of one stain (float, HxW)."""
    channel = color.rgb2hed(rgb)[..., _CHANNEL[stain]]
    sigma = 0.015 * min(rgb.shape[:2])
    return filters.gaussian(channel, sigma=sigma)


def _morphology(mask: np.ndarray, operation: int, radius: int) -> np.ndarray:
    footprint = morphology.disk(radius).astype(np.uint8)
    return cv2.morphologyEx(mask.astype(np.uint8), operation, footprint).astype(bool)


def opening(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary opening with a disk (borders do not erode, as in skimage)."""
    return _morphology(mask, cv2.MORPH_OPEN, radius)


def closing(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary closing with a disk."""
    return _morphology(mask, cv2.MORPH_CLOSE, radius)


def stain_mask(rgb: np.ndarray, stain: Stain) -> np.ndarray:
    """Regions dense in the stain: Otsu on the smoothed density, opened, closed, small holes filled."""
    density = stain_density(rgb, stain)
    mask = density > filters.threshold_otsu(density)
    radius = max(1, round(0.01 * min(rgb.shape[:2])))
    mask = closing(opening(mask, radius), radius)
    holes = ndimage.binary_fill_holes(mask) & ~mask
    small_holes = holes ^ morphology.remove_small_objects(holes, max_size=int(0.005 * mask.size))
    return mask | small_holes


def object_masks(rgb: np.ndarray, stain: Stain, max_objects: int = 3) -> list[np.ndarray]:
    """The stain-dense components between 1 % and 60 % of the image, largest first."""
    labels = measure.label(stain_mask(rgb, stain), connectivity=2)
    regions = sorted(measure.regionprops(labels), key=lambda region: -region.area)
    lower, upper = 0.01 * labels.size, 0.60 * labels.size
    chosen = [region for region in regions if lower <= region.area <= upper][:max_objects]
    return [labels == region.label for region in chosen]
