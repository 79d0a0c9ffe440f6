"""What the engine needs of a loaded model, whatever its family, and the values it passes: SAM and
MobileSAM (sam.py) and SAM 2 (sam2_model.py) implement ServedModel."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Generic, Protocol, TypeVar

import numpy as np
import torch

from slidesam.server.models.mask_crop import MaskCrop

T = TypeVar("T")


@dataclass(frozen=True)
class ImageEmbedding:
    """The image encoder's output for one region, plus the sizes needed to map prompts and masks."""

    features: torch.Tensor            # 1 x C x h x w, on the model's device
    input_size: tuple[int, int]       # (H, W) of the image inside the encoder input (SAM: longest side resized)
    original_size: tuple[int, int]    # (H, W) of the region as read
    high_res: tuple[torch.Tensor, ...] = ()  # SAM 2: the finer feature maps its mask decoder also reads

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.features, *self.high_res)

    @property
    def nbytes(self) -> int:
        return sum(tensor.element_size() * tensor.nelement() for tensor in self.tensors)

    def with_dtype(self, dtype: torch.dtype) -> "ImageEmbedding":
        """The same embedding with its features stored as dtype (fp16 halves the cache's bytes)."""
        if all(tensor.dtype == dtype for tensor in self.tensors):
            return self
        return replace(self, features=self.features.to(dtype), high_res=tuple(t.to(dtype) for t in self.high_res))

    def to(self, device: torch.device) -> "ImageEmbedding":
        """The same embedding with every feature map on device."""
        return replace(self, features=self.features.to(device), high_res=tuple(t.to(device) for t in self.high_res))


@dataclass(frozen=True)
class Candidates:
    """Every mask SAM's decoder proposes for one set of prompts, before any is chosen.

    Index 0 is the single-mask output, 1..3 the multimask outputs (SAM returns 0 when asked for one
    mask and the best of 1..3 when asked for three; SAM 2's single-mask output falls back to the best
    multimask output when it is unstable, as its predictor does).
    """

    logits: torch.Tensor              # 4 x 256 x 256 low-resolution mask logits
    scores: torch.Tensor              # 4 predicted IoUs
    points: np.ndarray | None         # N x 2 prompt points in the encoder's input frame (x, y)


@dataclass(frozen=True)
class DecodeInput:
    """One decoder pass to make: an embedding and the prompts in region pixel coordinates."""

    embedding: ImageEmbedding
    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None
    previous_logits: torch.Tensor | None


@dataclass(frozen=True)
class HostStage(Generic[T]):
    """The rest of a job once the model is done with it (tracing polygons): pure host work that may run
    on another thread, so that the model's thread goes on to the next decode meanwhile."""

    run: Callable[[], T]


@dataclass(frozen=True)
class PendingDecode(Generic[T]):
    """Work that needs one decoder pass to finish: whoever runs the decoder (possibly batched with
    other users' passes) calls complete(candidates, decode_ms) on the model's thread, and then, when
    that returns a HostStage, its run() on any thread, for the result."""

    model: "ServedModel"
    input: DecodeInput
    complete: Callable[[Candidates, float], "T | HostStage[T]"]


def token_groups(sparse: list[torch.Tensor]) -> list[list[int]]:
    """Indices of decoder passes grouped by their number of prompt tokens (sparse: 1 x tokens x C each):
    the passes of one group can share one batched decoder run."""
    groups: dict[int, list[int]] = {}
    for index, embedding in enumerate(sparse):
        groups.setdefault(embedding.shape[1], []).append(index)
    return list(groups.values())


class ServedModel(Protocol):
    """A model on one device as the engine uses it. Not thread-safe: call it from one worker thread."""

    device: torch.device
    input_size: int                   # side of the square encoder input, in pixels

    @property
    def image_encoder(self) -> torch.nn.Module:
        """The network's image encoder (compiled.py compiles its blocks)."""

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) a region of height x width pixels takes inside the encoder input (ImageEmbedding.input_size)."""

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """RGB uint8 H x W x 3 -> embedding, pausing at yield_point() between encoder blocks."""

    def encode_many(self, images: list[np.ndarray]) -> list[ImageEmbedding]:
        """Several images -> their embeddings, in one batched encoder pass."""

    def candidates(
        self, embedding: ImageEmbedding, points: np.ndarray | None, labels: np.ndarray | None,
        box: np.ndarray | None, previous_logits: torch.Tensor | None,
    ) -> Candidates:
        """Prompt encoder + mask decoder, one pass, all four masks (prompts in region pixel coordinates)."""

    def candidates_many(self, inputs: list[DecodeInput]) -> list[Candidates]:
        """Candidates for several decoder passes (any images), batched where they can be."""

    def upscale(self, embedding: ImageEmbedding, logits: torch.Tensor) -> MaskCrop:
        """One 256 x 256 logit map -> boolean mask at the region's size (upscaled and thresholded on the
        model's device), cut to the object's bounding box on the host."""
