"""Training patches: loaded from the evaluation datasets, split, augmented for pathology, seeded."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import cv2
import numpy as np
from skimage import color

from slidesam.lab.evaluation.datasets import Dataset

TISSUE_MIN_SATURATION = 20  # HSV saturation (0-255) above which a pixel is stained tissue, not glass


@dataclass(frozen=True)
class Patch:
    name: str
    image: np.ndarray   # H x W x 3 uint8 RGB
    mask: np.ndarray    # H x W bool; empty for a negative (tissue without the object)


def tissue_pixels(image: np.ndarray) -> np.ndarray:
    """Stained pixels of an RGB patch: HSV saturation above TISSUE_MIN_SATURATION (glass is near white)."""
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2HSV)[..., 1] > TISSUE_MIN_SATURATION


def load_patches(dataset: Dataset) -> list[Patch]:
    return [Patch(sample.name, sample.image, sample.gt) for sample in dataset]


def split(patches: list[Patch], validation_fraction: float, seed: int) -> tuple[list[Patch], list[Patch]]:
    """A seeded split by name hash: the same patch lands on the same side whatever else is in the set."""
    validation = set(validation_names([p.name for p in patches], validation_fraction, seed))
    return [p for p in patches if p.name not in validation], [p for p in patches if p.name in validation]


def validation_names(names: list[str], validation_fraction: float, seed: int) -> list[str]:
    """The names `split` puts on the validation side: those whose seeded hash falls below the fraction,
    and at least one patch on each side (the nearest to the cut moves over); ValueError for fewer than two."""
    def bucket(name: str) -> float:
        digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    if len(set(names)) < 2:
        raise ValueError(f"{len(names)} patch(es) cannot be split into training and validation: need more data")
    validation = [name for name in names if bucket(name) < validation_fraction]
    if not validation:
        validation = [min(names, key=bucket)]
    elif len(validation) == len(names):
        validation.remove(max(names, key=bucket))
    return validation


def data_hash(patches: list[Patch]) -> str:
    """SHA-256 over names, pixels and masks: says exactly which data a checkpoint saw."""
    digest = hashlib.sha256()
    for patch in sorted(patches, key=lambda p: p.name):
        digest.update(patch.name.encode())
        digest.update(np.ascontiguousarray(patch.image).tobytes())
        digest.update(np.packbits(patch.mask).tobytes())
    return digest.hexdigest()


def augment(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One of the 8 flips/90° rotations, then stain jitter: each HED channel scaled by U(0.9, 1.1)
    and shifted by U(-0.02, 0.02) (the colour variation between labs and scanners)."""
    turns, flip = int(rng.integers(4)), bool(rng.integers(2))
    image, mask = np.rot90(image, turns), np.rot90(mask, turns)
    if flip:
        image, mask = image[:, ::-1], mask[:, ::-1]
    hed = color.rgb2hed(np.ascontiguousarray(image))
    hed = hed * rng.uniform(0.9, 1.1, size=3) + rng.uniform(-0.02, 0.02, size=3)
    jittered = np.clip(color.hed2rgb(hed) * 255.0, 0, 255).astype(np.uint8)
    return jittered, np.ascontiguousarray(mask)


def variants(patch: Patch, count: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The fixed augmentations of a patch (the first is the patch itself), for frozen-encoder training
    whose embeddings are computed once per patch and augmentation."""
    out = [(patch.image, patch.mask)]
    for index in range(1, count):
        rng = np.random.default_rng([seed, index, int.from_bytes(hashlib.sha256(patch.name.encode()).digest()[:4], "big")])
        out.append(augment(patch.image, patch.mask, rng))
    return out
