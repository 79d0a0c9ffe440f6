"""One loaded SAM model: encode a region once, decode prompts against the stored embedding many times."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide


@dataclass(frozen=True)
class ImageEmbedding:
    """The image encoder's output for one region, plus the sizes needed to map prompts and masks."""

    features: torch.Tensor            # 1 x C x h x w, on the model's device
    input_size: tuple[int, int]       # (H, W) after resizing the longest side to the encoder input
    original_size: tuple[int, int]    # (H, W) of the region as read

    @property
    def nbytes(self) -> int:
        return self.features.element_size() * self.features.nelement()


@dataclass(frozen=True)
class Candidates:
    """Every mask SAM's decoder proposes for one set of prompts, before any is chosen.

    Index 0 is the single-mask output, 1..3 the multimask outputs (SAM returns 0 when asked for one
    mask and the best of 1..3 when asked for three).
    """

    logits: torch.Tensor              # 4 x 256 x 256 low-resolution mask logits
    scores: torch.Tensor              # 4 predicted IoUs
    points: np.ndarray | None         # N x 2 prompt points in the encoder's input frame (x, y)


class SamModel:
    """A SAM-family model on one device. Not thread-safe: call it from one worker thread."""

    def __init__(self, sam: Sam, device: torch.device):
        self.sam = sam.to(device).eval()
        self.device = device
        self.input_size: int = sam.image_encoder.img_size
        self._resize = ResizeLongestSide(self.input_size)
        with torch.inference_mode():
            self._dense_pe = sam.prompt_encoder.get_dense_pe()

    @torch.inference_mode()
    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """RGB uint8 H x W x 3 -> embedding (the expensive step: done once per region)."""
        resized = self._resize.apply_image(image)
        tensor = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        features = self.sam.image_encoder(self.sam.preprocess(tensor))
        return ImageEmbedding(features, tuple(resized.shape[:2]), tuple(image.shape[:2]))

    @torch.inference_mode()
    def candidates(
        self,
        embedding: ImageEmbedding,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        previous_logits: torch.Tensor | None,
    ) -> Candidates:
        """Prompt encoder + mask decoder, one pass, all four masks.

        points: N x 2 region pixel coordinates (x, y) as SAM uses them (pixel index; SAM adds 0.5),
        labels: N (1 positive, 0 negative), box: x0, y0, x1, y1 in the same coordinates.
        """
        point_prompt, coords = None, None
        if points is not None and len(points):
            coords = self._resize.apply_coords(np.asarray(points, dtype=np.float64), embedding.original_size)
            point_prompt = (
                torch.as_tensor(coords, dtype=torch.float32, device=self.device)[None],
                torch.as_tensor(labels, dtype=torch.int64, device=self.device)[None],
            )
        box_prompt = None
        if box is not None:
            scaled = self._resize.apply_boxes(np.asarray(box, dtype=np.float64)[None], embedding.original_size)
            box_prompt = torch.as_tensor(scaled, dtype=torch.float32, device=self.device)
        sparse, dense = self.sam.prompt_encoder(points=point_prompt, boxes=box_prompt, masks=previous_logits)
        logits, scores = self.sam.mask_decoder.predict_masks(
            image_embeddings=embedding.features,
            image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return Candidates(logits[0], scores[0], coords)

    @torch.inference_mode()
    def upscale(self, embedding: ImageEmbedding, logits: torch.Tensor) -> np.ndarray:
        """One 256 x 256 logit map -> boolean mask at the region's size (SAM's own upscaling)."""
        upscaled = self.sam.postprocess_masks(logits[None, None], embedding.input_size, embedding.original_size)
        return (upscaled[0, 0] > self.sam.mask_threshold).cpu().numpy()
