"""What a field of view resolves to: one encoder window (`View`), or a multi-window view (`TiledView`)
of a region larger than one window, and the resolution the model saw for a result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slidesam.server.engine.cache import EmbeddingKey
from slidesam.server.engine.window_grid import WindowGrid, WindowIndex
from slidesam.server.engine.geometry import RegionTransform
from slidesam.server.models.registry import ModelSpec
from slidesam.server.models.served import ServedModel
from slidesam.server.slides.regions import ImageSource, Rect

DOWNSAMPLED_TOLERANCE = 0.01
"""A result is 'downsampled' when the encoder saw it more than this fraction coarser than asked for."""


@dataclass(frozen=True)
class View:
    """A field of view resolved against one image and one model: everything a click needs."""

    spec: ModelSpec
    model: ServedModel
    source: ImageSource
    region: Rect                  # level-0 rectangle actually read (snapped to whole pixels)
    downsample: float
    shape: tuple[int, int]        # (H, W) of the region as read
    key: EmbeddingKey
    grid_window: GridWindow | None = None   # the window of the image's grid this view is, if any

    @property
    def encoder_downsample(self) -> float:
        """Level-0 px per encoder-input px along the longer side, the coarser one: SAM resizes it to its input
        size keeping the aspect; SAM 2 stretches the region to its square input, so its longer side is resized
        just the same and its shorter side less. Never finer than the region as read."""
        return self.downsample * max(1.0, max(self.shape) / self.model.input_size)

    @property
    def transform(self) -> RegionTransform:
        height, width = self.shape
        return RegionTransform(self.region.x, self.region.y, self.region.width / width, self.region.height / height)

    def to_sam_coordinates(self, points: np.ndarray) -> np.ndarray:
        """N x 2 level-0 points -> SAM's pixel-index coordinates in the region (SAM adds 0.5 for the centre)."""
        return self.transform.to_region(points) - 0.5


@dataclass(frozen=True)
class GridWindow:
    """One window of an image's embedding grid."""

    grid: WindowGrid
    index: WindowIndex


@dataclass(frozen=True)
class ModelResolution:
    """The resolution the model saw for a result, beside the one asked for (level-0 px per px; µm/px)."""

    requested_downsample: float
    encoder_downsample: float
    mpp: float | None               # the image's level-0 µm/px
    windows: int = 1                # encoder windows behind the mask (coarse window included)
    windows_decoded: int = 0        # windows this step decoded
    coarse_downsample: float = 0.0  # multi-window: the coarse window's encoder downsample

    @property
    def downsampled(self) -> bool:
        return self.encoder_downsample > self.requested_downsample * (1 + DOWNSAMPLED_TOLERANCE)

    def mpp_at(self, downsample: float) -> float | None:
        return downsample * self.mpp if self.mpp else None




@dataclass(frozen=True)
class TiledView:
    """A field of view larger than one encoder window at the resolution asked for: a coarse window over
    the whole region, and the image's grid of fine windows at that resolution."""

    spec: ModelSpec
    model: ServedModel
    source: ImageSource
    region: Rect                  # the level-0 rectangle asked for
    downsample: float             # the resolution asked for
    shape: tuple[int, int]        # (H, W) of the region at that resolution: the stitched mask
    grid: WindowGrid
    coarse: View                  # the whole region in one window

    @property
    def transform(self) -> RegionTransform:
        return RegionTransform(self.region.x, self.region.y, self.downsample, self.downsample)

    @property
    def key(self) -> EmbeddingKey:
        return self.coarse.key
