"""What the server answers for an object: its polygons, score and timings, and the resolution the model saw."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import shapely

from slidesam.v1 import slidesam_pb2 as pb
from slidesam.qupath_bridge.wire_geometry import polygons_from_pb
from slidesam.qupath_bridge.wire_requests import Click


def _positive_or_none(value: float) -> float | None:
    return value if value > 0 else None


@dataclass(frozen=True)
class ModelResolution:
    """The resolution the model actually saw, beside the one the field of view asked for.

    Downsamples are level-0 pixels per pixel; mpp is µm per pixel (None where the image's mpp is
    unknown). `downsampled`: the mask is coarser than asked for (one window over a region larger than
    the encoder's 1024 px). `windows`: encoder windows behind the mask; `windows_decoded`: those this
    step decoded. `coarse_downsample`: multi-window, the coarse window's downsample (else None).
    """

    requested_downsample: float
    requested_mpp: float | None
    encoder_downsample: float
    encoder_mpp: float | None
    downsampled: bool
    windows: int = 1
    windows_decoded: int = 1
    coarse_downsample: float | None = None

    @classmethod
    def from_pb(cls, message: pb.ModelResolution) -> "ModelResolution":
        return cls(
            message.requested_downsample, _positive_or_none(message.requested_mpp),
            message.encoder_downsample, _positive_or_none(message.encoder_mpp),
            message.downsampled, message.windows, message.windows_decoded, _positive_or_none(message.coarse_downsample),
        )

    @property
    def factor(self) -> float:
        """How many times coarser than asked for the model saw the image (1.0: as asked)."""
        return self.encoder_downsample / self.requested_downsample if self.requested_downsample > 0 else 1.0

    def to_json(self) -> dict:
        """For provenance: numbers rounded to 6 significant places, unknowns as null."""
        def rounded(value: float | None) -> float | None:
            return None if value is None else float(f"{value:.6g}")

        return {
            "requested_downsample": rounded(self.requested_downsample), "requested_mpp": rounded(self.requested_mpp),
            "encoder_downsample": rounded(self.encoder_downsample), "encoder_mpp": rounded(self.encoder_mpp),
            "downsampled": self.downsampled, "windows": self.windows,
            **({"coarse_downsample": rounded(self.coarse_downsample)} if self.coarse_downsample is not None else {}),
        }

    def describe_downsampling(self, magnification: float | None = None) -> str:
        """One line for a person: what the model saw and what was asked for. `magnification`: the
        magnification the field of view asked for, if it was given that way (then both are said as xN)."""
        seen_mpp = f" ({self.encoder_mpp:.3g} µm/px)" if self.encoder_mpp else ""
        if magnification:
            seen, asked = f"x{magnification / self.factor:.2g}{seen_mpp}", f"x{magnification:g}"
        elif self.requested_mpp and self.encoder_mpp:
            seen, asked = f"{self.encoder_mpp:.3g} µm/px", f"{self.requested_mpp:.3g} µm/px"
        else:
            seen, asked = f"downsample {self.encoder_downsample:.3g}{seen_mpp}", f"downsample {self.requested_downsample:.3g}"
        return (f"the model saw {seen}, not the {asked} asked for ({self.factor:.2g} times coarser); "
                "segment it over several windows (--windows multi, which auto picks for large regions) or ask for a smaller region")


@dataclass(frozen=True)
class ObjectResult:
    """The server's current answer for an object."""

    raw: pb.SegmentationResult = field(repr=False)

    @cached_property
    def geometry(self) -> shapely.MultiPolygon:
        return polygons_from_pb(self.raw.polygons)

    object_id = property(lambda self: self.raw.object_id)
    score = property(lambda self: self.raw.score)
    area_px = property(lambda self: self.raw.area_px)
    area_um2 = property(lambda self: self.raw.area_um2 if self.raw.mpp_known else None)
    model_id = property(lambda self: self.raw.model_id)
    timings = property(lambda self: self.raw.timings)
    cache_hit = property(lambda self: self.raw.timings.cache_hit)
    step = property(lambda self: self.raw.step)
    can_undo = property(lambda self: self.raw.can_undo)
    can_redo = property(lambda self: self.raw.can_redo)
    windows_encoded = property(lambda self: self.raw.timings.windows_encoded)
    """Encoder runs this step needed (multi-window: the fine windows that were not cached)."""
    windows_from_store = property(lambda self: self.raw.timings.windows_from_store)
    """Embeddings this step read from the server's precomputed (disk) store."""

    @cached_property
    def resolution(self) -> ModelResolution | None:
        """The resolution the model saw beside the one asked for (None from a server that does not say)."""
        return ModelResolution.from_pb(self.raw.resolution) if self.raw.HasField("resolution") else None

    @property
    def downsampled(self) -> bool:
        """The mask is coarser than the field of view asked for (see `resolution`)."""
        return self.resolution is not None and self.resolution.downsampled

    @cached_property
    def outline(self) -> shapely.MultiPolygon:
        """The outline prompt the object was given (empty when none)."""
        return polygons_from_pb(self.raw.outline)

    @property
    def clicks(self) -> list[Click]:
        return [Click(c.x, c.y, c.positive) for c in self.raw.clicks]
