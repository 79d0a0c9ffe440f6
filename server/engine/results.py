"""What a step of an object produces: its prediction (polygons, score, the logits fed back, the fine
windows of a multi-window object) and the time each stage took."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import shapely
import torch

from slidesam.server.engine.frames import LowResFrame
from slidesam.server.engine.prompts import Click
from slidesam.server.engine.views import ModelResolution
from slidesam.server.engine.window_grid import WindowIndex
from slidesam.server.models.mask_crop import MaskCrop
from slidesam.server.slides.regions import Rect


@dataclass
class Timings:
    """Milliseconds spent in each stage of one request (server side), and how many encodes it took."""

    read_ms: float = 0.0
    encode_ms: float = 0.0
    decode_ms: float = 0.0
    postprocess_ms: float = 0.0
    queue_ms: float = 0.0
    total_ms: float = 0.0
    cache_hit: bool = False
    windows_encoded: int = 0
    windows_from_store: int = 0


@dataclass(frozen=True)
class WindowResult:
    """One fine window's answer and the prompts that produced it."""

    region: Rect                  # level-0 rectangle of the window
    frame: LowResFrame
    logits: np.ndarray            # 256 x 256 float32 of the kept mask
    coarse: np.ndarray            # 256 x 256 bool: the coarse mask in this frame that prompted it
    clicks: tuple[Click, ...]     # the user's clicks inside the window that prompted it
    score: float


@dataclass(frozen=True)
class ChosenMask:
    """The candidate a step keeps, upscaled on the model's device: what its polygons are traced from."""

    crop: MaskCrop
    score: float
    logits: torch.Tensor          # 1 x 1 x 256 x 256, fed back at the next step


@dataclass(frozen=True)
class Prediction:
    """One decoded mask, as polygons in level-0 space.

    logits: the kept low-resolution logits (1 x 1 x 256 x 256) fed back at the next step; for a
    multi-window object those of its coarse window, with each fine window's in `windows`.
    """

    geometry: shapely.MultiPolygon
    score: float
    logits: torch.Tensor | None
    area_px: float
    area_um2: float | None
    resolution: ModelResolution | None = None
    windows: Mapping[WindowIndex, WindowResult] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Memory it holds: its logits, its fine windows' arrays and its polygons' coordinates."""
        logits = 0 if self.logits is None else self.logits.element_size() * self.logits.nelement()
        windows = sum(window.logits.nbytes + window.coarse.nbytes for window in self.windows.values())
        return logits + windows + 16 * shapely.get_num_coordinates(self.geometry)


EMPTY_PREDICTION = Prediction(shapely.MultiPolygon(), 0.0, None, 0.0, None)
