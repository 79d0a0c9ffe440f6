"""Where SAM looks for a prompt group: the field of view around its prompts.

The level-0 bounding box of the group's prompts (clicks and box corners) grows by `margin` times its
longer side on every side, then to at least `min_size` level-0 pixels per side (around the same
centre), then is moved inside the image and clipped where the image is smaller. Edges are whole
pixels. The region is read at `mpp`, `magnification` or `downsample` (at most one); with none, the
server fits the region's longer side to the model input (1024 px for SAM).

`windows` says how a region larger than one encoder window at that resolution is segmented ("auto":
the server goes multi-window for it; "multi"; "single": shrunk into one window, coarser than asked
for), and `align_to_grid` lets the server move a region that fits one window onto its embedding grid.
Both are left out of `to_json` at their defaults, so results made before they existed keep their hash.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from slidesam.qupath_bridge.prompts import PromptGroup
from slidesam.qupath_bridge.wire_requests import window_mode

MODEL_INPUT = 1024


@dataclass(frozen=True)
class FovSettings:
    margin: float = 0.25
    min_size: float = 2048.0
    mpp: float | None = None
    magnification: float | None = None
    downsample: float | None = None
    windows: str = "auto"
    align_to_grid: bool = False

    def __post_init__(self) -> None:
        window_mode(self.windows)
        chosen = [v for v in (self.mpp, self.magnification, self.downsample) if v is not None]
        if len(chosen) > 1:
            raise ValueError("give at most one of mpp, magnification and downsample")
        if any(not math.isfinite(v) or v <= 0 for v in chosen):
            raise ValueError(f"the resolution must be a positive number, got {chosen[0]}")
        if not (math.isfinite(self.margin) and self.margin >= 0) or not (math.isfinite(self.min_size) and self.min_size > 0):
            raise ValueError("margin must be >= 0 and min_size > 0")

    def to_json(self) -> dict:
        defaults = {"windows": "auto", "align_to_grid": False}
        return {k: v for k, v in asdict(self).items() if v is not None and not (k in defaults and v == defaults[k])}


def region_around_group(group: PromptGroup, width: int, height: int, settings: FovSettings) -> tuple[int, int, int, int]:
    """The level-0 (x, y, width, height) SAM sees for the group, inside the image width x height."""
    xs, ys = zip(*group.points())
    return region_around_bounds((min(xs), min(ys), max(xs), max(ys)), width, height, settings)


def region_around_bounds(
    bounds: tuple[float, float, float, float], width: int, height: int, settings: FovSettings
) -> tuple[int, int, int, int]:
    """The level-0 (x, y, width, height) around level-0 bounds (x0, y0, x1, y1), inside the image."""
    x0, y0, x1, y1 = bounds
    pad = settings.margin * max(x1 - x0, y1 - y0)
    left, right = _span(x0 - pad, x1 + pad, settings.min_size, width)
    top, bottom = _span(y0 - pad, y1 + pad, settings.min_size, height)
    return left, top, right - left, bottom - top


def _span(start: float, end: float, min_size: float, limit: int) -> tuple[int, int]:
    """[start, end] grown to min_size around its centre, moved inside [0, limit], whole pixels."""
    size = min(max(end - start, min_size), limit)
    centre = (start + end) / 2
    low = min(max(centre - size / 2, 0.0), limit - size)
    return max(0, math.floor(low)), min(limit, math.ceil(low + size))
