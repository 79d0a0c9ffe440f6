"""Evaluation datasets: a folder of patches, or whole slides cut into patches around tumour.

- Patch folder: `NAME.png|jpg|jpeg|tif|tiff` with `NAME_mask.png` (non-zero = object), sorted by name,
  and optionally `NAME.json` placing the patch on its slide: `{"origin": [x, y]` (level-0 px of the
  top-left corner), `"downsample": d` (level-0 px per patch px), `"mpp": m` (level-0 µm/px), `"slide":
  "FILE"` (the slide it was read from, relative to a slide root)`}`, all optional. Without it a patch
  sits at (0, 0) at downsample 1 with no known µm/px.
- PAIP 2019 style (`paip:DIR`): `NAME.svs` with the whole-tumour mask `NAME_whole.tif` (PAIP's naming)
  or `NAME_mask.tif`, a tiled TIFF at level-0 size (OpenSlide reads it), non-zero = tumour.
- CAMELYON16 style (`camelyon:DIR`): `NAME.tif` with ASAP annotations `NAME.xml`; polygons of the
  groups `_0` and `_1` (and `Tumor`) are tumour, polygons of the group `_2` are exclusions inside it.

Sampling rule for whole slides (seeded, documented in the results): the tumour mask is rasterised on
a coarse grid whose cell is 1/8 of a patch side; tumour cells are shuffled with
`numpy.random.default_rng([seed, slide_index])`; each cell in that order becomes the centre of a
candidate patch of `patch_size` pixels at the requested magnification (shifted to lie inside the
slide), accepted when tumour covers between `min_fraction` and `max_fraction` of it and its centre is
not inside an already accepted patch, until `patches_per_slide` are accepted.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import cv2
import numpy as np
import openslide
import shapely

from slidesam.server.engine.geometry import RegionTransform, geometry_to_mask
from slidesam.server.slides.openslide_source import OpenSlideSource
from slidesam.server.slides.regions import Rect

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TUMOUR_GROUPS = ("_0", "_1", "Tumor")
EXCLUSION_GROUPS = ("_2",)


@dataclass(frozen=True)
class Sample:
    """One object to segment: pixels at the evaluated resolution, its mask, and its level-0 placement."""

    name: str
    image: np.ndarray                 # H x W x 3 uint8 RGB
    gt: np.ndarray                    # H x W bool
    origin: tuple[float, float] = (0.0, 0.0)   # level-0 position of the patch's top-left corner
    downsample: float = 1.0           # level-0 pixels per patch pixel
    mpp: float | None = None          # level-0 µm per pixel
    slide: str | None = None          # the slide the patch was read from, relative to a slide root


class Dataset(Protocol):
    description: str

    def names(self) -> list[str]: ...
    def __iter__(self) -> Iterator[Sample]: ...


def read_rgb(path: Path) -> np.ndarray:
    """An image file as RGB uint8; ValueError when unreadable."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class PatchFolder:
    """NAME.png (or jpg/tif) + NAME_mask.png pairs."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ValueError(f"--data {directory} is not a directory")
        self._images = sorted(
            p for p in self.directory.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and not p.stem.endswith("_mask")
        )
        missing = [p.name for p in self._images if not self._mask_path(p).is_file()]
        if missing:
            raise ValueError(f"no NAME_mask.png for: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        if not self._images:
            raise ValueError(f"{directory} holds no NAME.png + NAME_mask.png pairs")
        self.description = f"patch folder {self.directory} ({len(self._images)} samples)"

    def _mask_path(self, image: Path) -> Path:
        return image.with_name(f"{image.stem}_mask.png")

    def _placement(self, image: Path) -> dict:
        """origin, downsample, mpp and slide from NAME.json, where there is one."""
        sidecar = image.with_suffix(".json")
        if not sidecar.is_file():
            return {}
        try:
            meta = json.loads(sidecar.read_text())
            placement = {
                "origin": tuple(float(v) for v in meta.get("origin", (0.0, 0.0))),
                "downsample": float(meta.get("downsample", 1.0)),
                "mpp": float(meta["mpp"]) if meta.get("mpp") else None,
                "slide": str(meta["slide"]) if meta.get("slide") else None,
            }
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"{sidecar.name} is not a valid patch placement: {error}") from None
        if len(placement["origin"]) != 2 or not placement["downsample"] > 0 or (placement["mpp"] is not None and not placement["mpp"] > 0):
            raise ValueError(f"{sidecar.name}: origin must be [x, y], downsample and mpp positive")
        return placement

    def names(self) -> list[str]:
        return [p.stem for p in self._images]

    def __iter__(self) -> Iterator[Sample]:
        for path in self._images:
            image = read_rgb(path)
            mask = cv2.imread(str(self._mask_path(path)), cv2.IMREAD_UNCHANGED)
            if mask is None or mask.shape[:2] != image.shape[:2]:
                raise ValueError(f"{self._mask_path(path).name} is missing, unreadable or not the size of {path.name}")
            gt = (mask if mask.ndim == 2 else mask.max(axis=2)) > 0
            yield Sample(path.stem, image, gt, **self._placement(path))


@dataclass(frozen=True)
class WsiSampling:
    magnification: float
    patch_size: int = 1024
    patches_per_slide: int = 4
    seed: int = 0
    min_fraction: float = 0.05
    max_fraction: float = 0.95
    grid_cells_per_patch: int = 8


class TumourMask(Protocol):
    def read(self, rect: Rect, shape: tuple[int, int]) -> np.ndarray: ...


class MaskTiff:
    """A PAIP-style tumour mask TIFF read with OpenSlide at any region and resolution."""

    def __init__(self, path: Path):
        self.source = OpenSlideSource(openslide.OpenSlide(str(path)), f"mask:{path}")

    def read(self, rect: Rect, shape: tuple[int, int]) -> np.ndarray:
        downsample = rect.width / shape[1]
        region = self.source.read_region(rect, downsample).pixels
        if region.shape[:2] != shape:
            region = cv2.resize(region, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        return region.max(axis=2) > 0


class AsapPolygons:
    """CAMELYON16 ASAP XML: tumour groups minus exclusion groups, rasterised on demand."""

    def __init__(self, path: Path):
        tumour, excluded = [], []
        for annotation in ElementTree.parse(path).getroot().iter("Annotation"):
            points = [(float(c.get("X")), float(c.get("Y"))) for c in annotation.iter("Coordinate")]
            if len(points) < 3:
                continue
            polygon = shapely.make_valid(shapely.Polygon(points))
            group = annotation.get("PartOfGroup", "")
            if group in TUMOUR_GROUPS:
                tumour.append(polygon)
            elif group in EXCLUSION_GROUPS:
                excluded.append(polygon)
        self.geometry = shapely.difference(shapely.union_all(tumour), shapely.union_all(excluded))

    def read(self, rect: Rect, shape: tuple[int, int]) -> np.ndarray:
        transform = RegionTransform(rect.x, rect.y, rect.width / shape[1], rect.height / shape[0])
        return geometry_to_mask(self.geometry, transform, shape)


class WsiDataset:
    """Whole slides with tumour annotations, cut into patches around tumour (see the module docstring)."""

    def __init__(self, kind: str, directory: Path, sampling: WsiSampling):
        self.kind, self.directory, self.sampling = kind, Path(directory), sampling
        self._pairs = self._find_pairs()
        if not self._pairs:
            raise ValueError(f"no {kind} slide + annotation pairs found in {directory}")
        self.description = (
            f"{kind} whole slides in {self.directory} ({len(self._pairs)} slides), x{sampling.magnification:g}, "
            f"{sampling.patches_per_slide} patches of {sampling.patch_size} px per slide, seed {sampling.seed}"
        )
        self._samples: list[tuple[int, Rect]] | None = None

    def _find_pairs(self) -> list[tuple[Path, Path]]:
        if self.kind == "paip":
            pairs = []
            for slide in sorted(self.directory.glob("*.svs")):
                for suffix in ("_whole.tif", "_mask.tif"):
                    mask = slide.with_name(slide.stem + suffix)
                    if mask.is_file():
                        pairs.append((slide, mask))
                        break
            return pairs
        if self.kind == "camelyon":
            return [(s, s.with_suffix(".xml")) for s in sorted(self.directory.glob("*.tif")) if s.with_suffix(".xml").is_file()]
        raise ValueError(f"unknown whole-slide dataset kind {self.kind!r}: use paip:DIR or camelyon:DIR")

    def _annotation(self, path: Path) -> TumourMask:
        return MaskTiff(path) if self.kind == "paip" else AsapPolygons(path)

    def _plan(self) -> list[tuple[int, Rect]]:
        """(slide index, level-0 patch rectangle) of every sample, by the documented rule."""
        plan = []
        for index, (slide_path, annotation_path) in enumerate(self._pairs):
            with openslide.OpenSlide(str(slide_path)) as slide:
                source = OpenSlideSource(slide, str(slide_path))
                plan += [(index, rect) for rect in self._patches(index, source, self._annotation(annotation_path))]
        return plan

    def _patches(self, index: int, source: OpenSlideSource, tumour: TumourMask) -> list[Rect]:
        s = self.sampling
        if not source.objective_power:
            raise ValueError("the slide has no objective power; cannot read it at a magnification")
        side = s.patch_size * source.objective_power / s.magnification
        cell = side / s.grid_cells_per_patch
        grid_shape = (max(1, int(source.height // cell)), max(1, int(source.width // cell)))
        coarse = tumour.read(Rect(0, 0, grid_shape[1] * cell, grid_shape[0] * cell), grid_shape)
        cells = np.argwhere(coarse)
        np.random.default_rng([s.seed, index]).shuffle(cells)
        accepted: list[Rect] = []
        for row, col in cells:
            if len(accepted) == s.patches_per_slide:
                break
            cx, cy = (col + 0.5) * cell, (row + 0.5) * cell
            if any(r.x <= cx < r.right and r.y <= cy < r.bottom for r in accepted):
                continue
            x = min(max(0.0, cx - side / 2), max(0.0, source.width - side))
            y = min(max(0.0, cy - side / 2), max(0.0, source.height - side))
            rect = Rect(math.floor(x), math.floor(y), min(side, source.width), min(side, source.height))
            fraction = tumour.read(rect, (64, 64)).mean()
            if s.min_fraction <= fraction <= s.max_fraction:
                accepted.append(rect)
        return accepted

    def names(self) -> list[str]:
        self._samples = self._samples or self._plan()
        return [self._name(index, rect) for index, rect in self._samples]

    def _name(self, index: int, rect: Rect) -> str:
        return f"{self._pairs[index][0].stem}_x{self.sampling.magnification:g}_{int(rect.x)}_{int(rect.y)}"

    def __iter__(self) -> Iterator[Sample]:
        self._samples = self._samples or self._plan()
        for index, rect in self._samples:
            slide_path, annotation_path = self._pairs[index]
            with openslide.OpenSlide(str(slide_path)) as slide:
                source = OpenSlideSource(slide, str(slide_path))
                downsample = source.objective_power / self.sampling.magnification
                region = source.read_region(rect, downsample)
            shape = region.pixels.shape[:2]
            gt = self._annotation(annotation_path).read(region.rect, shape)
            yield Sample(self._name(index, rect), region.pixels, gt, (region.rect.x, region.rect.y), region.downsample, source.mpp)


def open_dataset(data: Path | None, wsi_spec: str | None, sampling: WsiSampling | None) -> Dataset:
    """--data DIR or --wsi-dataset KIND:DIR (with a magnification)."""
    if (data is None) == (wsi_spec is None):
        raise ValueError("give exactly one of --data DIR and --wsi-dataset KIND:DIR")
    if data is not None:
        return PatchFolder(data)
    kind, _, directory = wsi_spec.partition(":")
    if not directory:
        raise ValueError(f"--wsi-dataset expects KIND:DIR (paip:DIR or camelyon:DIR), got {wsi_spec!r}")
    if sampling is None:
        raise ValueError("--wsi-dataset needs --magnification (e.g. 5 or 10)")
    return WsiDataset(kind, Path(directory), sampling)
