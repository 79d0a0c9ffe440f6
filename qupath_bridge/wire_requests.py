"""What a request to the server is made of: the image, the field of view, clicks, polygon options and the
prompt strategy, each with its wire message."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from functools import cached_property

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.v1.conventions import STRATEGIES, WINDOW_MODES, affinity_key


@dataclass(frozen=True)
class SlideImage:
    """A slide the server reads itself, named relative to its slide root."""

    slide_id: str

    @property
    def affinity_key(self) -> str:
        """What a load balancer routes this slide's calls by (`slidesam.v1.conventions.AFFINITY_METADATA`)."""
        return affinity_key(slide_id=self.slide_id)


@dataclass(frozen=True)
class UploadedRegion:
    """Encoded pixels (PNG/JPEG) sent by the client, placed in level-0 space.

    The image covers level-0 [origin_x, origin_x + width * downsample) and likewise in y.
    """

    data: bytes
    origin_x: float = 0.0
    origin_y: float = 0.0
    downsample: float = 1.0
    mpp: float | None = None
    objective_power: float | None = None

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def affinity_key(self) -> str:
        """What a load balancer routes calls on these pixels by: their SHA-256, so that the upload and the
        calls using it reach the same server."""
        return affinity_key(upload_sha256=self.sha256)


@dataclass(frozen=True)
class FieldOfView:
    """What SAM sees: an image, a level-0 rectangle and at most one resolution (none: fit the model input).

    windows: "auto" | "multi" | "single", how a region larger than one encoder window at that resolution
    is segmented (see `slidesam.v1.conventions.WINDOW_MODES`). align_to_grid: let the server move a region
    that fits one window onto its embedding grid (a precomputed embedding then serves it); the result's
    `region` says where.
    """

    image: SlideImage | UploadedRegion
    x: float
    y: float
    width: float
    height: float
    mpp: float | None = None
    magnification: float | None = None
    downsample: float | None = None
    windows: str = "auto"
    align_to_grid: bool = False

    def __post_init__(self) -> None:
        window_mode(self.windows)

    def to_pb(self) -> pb.FieldOfView:
        message = pb.FieldOfView(
            region=pb.Rect(x=self.x, y=self.y, width=self.width, height=self.height),
            windows=window_mode(self.windows),
            align_to_grid=self.align_to_grid,
        )
        if isinstance(self.image, SlideImage):
            message.image.slide_id = self.image.slide_id
        else:
            up = self.image
            message.image.uploaded.CopyFrom(
                pb.UploadedImageRef(
                    sha256=up.sha256, origin_x=up.origin_x, origin_y=up.origin_y, downsample=up.downsample,
                    mpp=up.mpp or 0.0, objective_power=up.objective_power or 0.0,
                )
            )
        chosen = [(k, v) for k, v in (("mpp", self.mpp), ("magnification", self.magnification), ("downsample", self.downsample)) if v is not None]
        if len(chosen) > 1:
            raise ValueError("give at most one of mpp, magnification and downsample")
        if chosen:
            setattr(message.resolution, chosen[0][0], chosen[0][1])
        return message


@dataclass(frozen=True)
class Click:
    x: float
    y: float
    positive: bool = True

    def to_pb(self) -> pb.Click:
        return pb.Click(x=self.x, y=self.y, positive=self.positive)


@dataclass(frozen=True)
class PolygonOptions:
    simplify_tolerance_um: float = 0.0
    simplify_tolerance_px: float = 0.0
    max_vertices: int = 0
    min_area_um2: float = 0.0
    min_area_px: float = 0.0

    def to_pb(self) -> pb.PolygonOptions:
        return pb.PolygonOptions(**asdict(self))


def window_mode(name: str) -> int:
    """The wire value of a window mode name (`slidesam.v1.conventions.WINDOW_MODES`); ValueError for any other."""
    if name not in WINDOW_MODES:
        raise ValueError(f"unknown window mode {name!r}; choose one of {', '.join(map(repr, WINDOW_MODES))}")
    return WINDOW_MODES[name]


def prompt_strategy(name: str) -> int:
    """The wire value of a strategy name: "plain" (SAM as published), "consistent" (every click honoured)
    or "" (the server's default); ValueError for any other."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(repr(k) for k in STRATEGIES)}")
    return STRATEGIES[name]
