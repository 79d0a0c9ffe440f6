"""Where batch pre-annotation gets its prompt groups, per image.

- `tissue-boxes`: one box prompt per tissue component found on the thumbnail (`tissue.py`);
  groups "tissue 1", "tissue 2", ... in raster order.
- `grid`: the slide is cut into square tiles of `spacing` level-0 pixels; every tile whose tissue
  covers at least `min_tissue` of it gets one positive point, on the tissue pixel nearest the tile's
  centre: one object per tile, group "grid <row>,<column>".
- `geojson FILE`: prompt annotations (same classes and grouping as `sync`) from a GeoJSON file
  applied to every image, or from a folder holding `<image name>.geojson` per image. Every feature
  must have a prompt class.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from slidesam.qupath_bridge.geojson import GeoJSONError, feature_to_annotation, read_features
from slidesam.qupath_bridge.pixels import PixelSource, SlideUnreadable
from slidesam.qupath_bridge.project import ImageEntry
from slidesam.qupath_bridge.prompts import PromptClasses, PromptGroup, find_prompt_groups
from slidesam.qupath_bridge.tissue import TissueSettings, tissue_boxes, tissue_mask
from slidesam.qupath_bridge.wire_requests import Click


class PromptSourceError(ValueError):
    """Prompts that cannot be used; the message says where and why."""


class PromptSource(Protocol):
    name: str

    def describe(self, image: ImageEntry) -> dict:
        """Everything that decides this image's groups (for the resume state's hash)."""
        ...

    def groups(self, image: ImageEntry, pixels: PixelSource) -> list[PromptGroup]: ...


def _local_path(image: ImageEntry):
    if image.path is None:
        raise SlideUnreadable(f"{image.name}: {image.uri} is not a local file; tissue detection reads the thumbnail here")
    return image.path


@dataclass(frozen=True)
class TissueBoxes:
    tissue: TissueSettings = TissueSettings()
    name: str = "tissue-boxes"

    def describe(self, image: ImageEntry) -> dict:
        return {"source": self.name, **asdict(self.tissue)}

    def groups(self, image: ImageEntry, pixels: PixelSource) -> list[PromptGroup]:
        width, height = pixels.size(image)
        thumbnail, scale = pixels.local.thumbnail(_local_path(image), self.tissue.thumbnail_side)
        groups = []
        for number, (x, y, w, h) in enumerate(tissue_boxes(tissue_mask(thumbnail, self.tissue), scale, self.tissue), start=1):
            x1, y1 = min(x + w, width), min(y + h, height)
            groups.append(PromptGroup(f"tissue {number}", box=(x, y, x1 - x, y1 - y)))
        return groups


@dataclass(frozen=True)
class Grid:
    spacing: float = 2048.0
    min_tissue: float = 0.25
    tissue: TissueSettings = TissueSettings()
    name: str = "grid"

    def describe(self, image: ImageEntry) -> dict:
        return {"source": self.name, "spacing": self.spacing, "min_tissue": self.min_tissue, **asdict(self.tissue)}

    def groups(self, image: ImageEntry, pixels: PixelSource) -> list[PromptGroup]:
        width, height = pixels.size(image)
        thumbnail, scale = pixels.local.thumbnail(_local_path(image), self.tissue.thumbnail_side)
        mask = tissue_mask(thumbnail, self.tissue)
        step = self.spacing / scale
        groups = []
        for row in range(int(np.ceil(mask.shape[0] / step))):
            for column in range(int(np.ceil(mask.shape[1] / step))):
                top, left = round(row * step), round(column * step)
                tile = mask[top:round((row + 1) * step), left:round((column + 1) * step)]
                if tile.size == 0 or tile.mean() < self.min_tissue:
                    continue
                rows, columns = np.nonzero(tile)
                centre_r, centre_c = (tile.shape[0] - 1) / 2, (tile.shape[1] - 1) / 2
                nearest = int(np.argmin((rows - centre_r) ** 2 + (columns - centre_c) ** 2))
                x = min((left + columns[nearest] + 0.5) * scale, width)
                y = min((top + rows[nearest] + 0.5) * scale, height)
                groups.append(PromptGroup(f"grid {row},{column}", clicks=(Click(float(x), float(y)),)))
        return groups


class GeoJSONPrompts:
    """Prompt groups from one GeoJSON file (every image) or a folder of `<image name>.geojson`."""

    name = "geojson"

    def __init__(self, path: Path, classes: PromptClasses):
        self.path = Path(path)
        self.classes = classes
        if not self.path.exists():
            raise PromptSourceError(f"the prompt file {self.path} does not exist")
        if self.path.is_file():
            self._shared = self._read(self.path)

    def describe(self, image: ImageEntry) -> dict:
        file = self._file(image)
        digest = hashlib.sha256(file.read_bytes()).hexdigest() if file.is_file() else None
        return {"source": self.name, "file_sha256": digest, "classes": list(self.classes.names())}

    def groups(self, image: ImageEntry, pixels: PixelSource) -> list[PromptGroup]:
        if self.path.is_file():
            return self._shared
        file = self._file(image)
        return self._read(file) if file.is_file() else []

    def _file(self, image: ImageEntry) -> Path:
        return self.path if self.path.is_file() else self.path / f"{image.name}.geojson"

    def _read(self, file: Path) -> list[PromptGroup]:
        try:
            annotations = [feature_to_annotation(f, f"{file}, feature {i}") for i, f in enumerate(read_features(file))]
        except (GeoJSONError, OSError) as error:
            raise PromptSourceError(str(error)) from None
        unknown = sorted({a.path_class or "(none)" for a in annotations} - set(self.classes.names()))
        if unknown:
            raise PromptSourceError(
                f"{file}: unknown class {', '.join(map(repr, unknown))}; prompt files hold only "
                f"{', '.join(map(repr, self.classes.names()))}"
            )
        groups, problems = find_prompt_groups(annotations, self.classes)
        if problems:
            raise PromptSourceError(f"{file}: " + "; ".join(problems))
        if not groups:
            raise PromptSourceError(f"{file} holds no prompt group")
        return groups
