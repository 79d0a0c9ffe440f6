"""SAM's low-resolution logit frame of a window, placed in level-0 space, and moving logits between frames.

The mask decoder answers with 256 x 256 logits over the 1024 x 1024 encoder input, not over the
image: SAM resizes the region read so that its longer side is 1024 and pads it at the right and the
bottom; SAM 2 resizes it to 1024 x 1024 (its input_size is the whole input). Logit (col, row) therefore
covers encoder-input pixels [4 col, 4 col + 4) x [4 row, 4 row + 4), and only the first input_w / 4
columns and input_h / 4 rows lie on the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import shapely

from slidesam.server.engine.geometry import RegionTransform, geometry_to_mask
from slidesam.server.models.served import ImageEmbedding
from slidesam.server.slides.regions import Rect

LOW_RES = 256
INPUT_PER_LOGIT = 4
"""Encoder-input pixels per logit along each side (1024 / 256)."""
OUTSIDE_LOGIT = -20.0
"""Logit for 'certainly not the object' (SAM's own logits rarely go below it)."""
OUTLINE_LOGIT_SCALE = 4.0
"""Outline mask to logits: signed distance to its boundary, in low-res pixels, times this, clipped."""
OUTLINE_POINTS = 3


@dataclass(frozen=True)
class LowResFrame:
    """Where one window's 256 x 256 logits lie in level-0 space."""

    transform: RegionTransform     # low-res pixel coordinates -> level-0
    valid: tuple[int, int]         # (rows, columns) of the frame that lie on the image

    def valid_mask(self) -> np.ndarray:
        """256 x 256 booleans: the logits that cover the image, not SAM's padding."""
        mask = np.zeros((LOW_RES, LOW_RES), dtype=bool)
        mask[: self.valid[0], : self.valid[1]] = True
        return mask

    def point_at(self, row: int, column: int) -> tuple[float, float]:
        """Level-0 coordinates of the centre of logit (row, column)."""
        x, y = self.transform.to_level0(np.array([[column + 0.5, row + 0.5]]))[0]
        return float(x), float(y)


def low_res_frame(region: Rect, embedding: ImageEmbedding) -> LowResFrame:
    """The low-res frame of a window that covers `region` (level-0) and was encoded as `embedding`."""
    return frame_for(region, embedding.input_size)


def frame_for(region: Rect, input_size: tuple[int, int]) -> LowResFrame:
    """The low-res frame of a window covering `region` whose pixels were resized to input_size (H, W)."""
    input_h, input_w = input_size
    scale = INPUT_PER_LOGIT
    transform = RegionTransform(region.x, region.y, scale * region.width / input_w, scale * region.height / input_h)
    valid = (min(LOW_RES, int(np.ceil(input_h / scale))), min(LOW_RES, int(np.ceil(input_w / scale))))
    return LowResFrame(transform, valid)


def resample(
    values: np.ndarray, source: RegionTransform, target: RegionTransform, shape: tuple[int, int],
    offset: tuple[int, int] = (0, 0),
) -> np.ndarray:
    """Bilinear resampling of a float raster from one level-0 placement to another.

    Returns `shape` (rows, columns) pixels of the target raster starting at pixel `offset` (row, column);
    outside the source the edge values continue. With the pixel-centre convention this is the same
    interpolation as torch's bilinear upsampling with align_corners=False.
    """
    scale_x, scale_y = source.sx / target.sx, source.sy / target.sy
    shift_x = (source.x0 - target.x0) / target.sx + 0.5 * scale_x - 0.5 - offset[1]
    shift_y = (source.y0 - target.y0) / target.sy + 0.5 * scale_y - 0.5 - offset[0]
    matrix = np.array([[scale_x, 0.0, shift_x], [0.0, scale_y, shift_y]])
    return cv2.warpAffine(
        np.ascontiguousarray(values, dtype=np.float32), matrix, (shape[1], shape[0]),
        flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    )


def outline_logits(geometry: shapely.Geometry, frame: LowResFrame) -> np.ndarray:
    """An outline as SAM mask-input logits in a window's frame: positive inside, negative outside,
    growing with the distance to the outline (so the outline's own boundary is the zero crossing)."""
    inside = geometry_to_mask(geometry, frame.transform, (LOW_RES, LOW_RES)).astype(np.uint8)
    distance_in = cv2.distanceTransform(inside, cv2.DIST_L2, 3)
    distance_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)
    signed = np.where(inside > 0, distance_in, -distance_out) * OUTLINE_LOGIT_SCALE
    logits = np.clip(signed, OUTSIDE_LOGIT, -OUTSIDE_LOGIT).astype(np.float32)
    logits[~frame.valid_mask()] = OUTSIDE_LOGIT
    return logits


def outline_points(geometry: shapely.Geometry, frame: LowResFrame, count: int = OUTLINE_POINTS) -> list[tuple[float, float]]:
    """Up to `count` level-0 points deep inside the outline: the innermost point of each of its largest parts."""
    parts = sorted(shapely.get_parts(geometry), key=lambda part: -part.area)[:count]
    points = []
    for part in parts:
        inside = geometry_to_mask(part, frame.transform, (LOW_RES, LOW_RES)).astype(np.uint8)
        if inside.any():
            row, column = deepest(inside)
            points.append(frame.point_at(row, column))
        else:  # thinner than a logit: its own representative point
            point = part.representative_point()
            points.append((point.x, point.y))
    return points


def deepest(mask: np.ndarray) -> tuple[int, int]:
    """(row, column) of the pixel of a non-empty uint8 mask farthest from its edge (first in row order on ties)."""
    distance = cv2.distanceTransform(np.pad(mask, 1), cv2.DIST_L2, 3)[1:-1, 1:-1]
    row, column = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(row), int(column)
