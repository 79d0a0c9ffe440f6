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
class MaskPrediction:
    mask: np.ndarray                  # bool, original_size
    score: float                      # predicted IoU of the kept mask
    low_res_logits: torch.Tensor      # 1 x 1 x 256 x 256, fed back with the next click


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
    def decode(
        self,
        embedding: ImageEmbedding,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        previous_logits: torch.Tensor | None,
        multimask: bool,
    ) -> MaskPrediction:
        """Prompt encoder + mask decoder; keeps the best-scoring mask and upscales only that one.

        points: N x 2 region pixel coordinates (x, y) as SAM uses them (pixel index; SAM adds 0.5),
        labels: N (1 positive, 0 negative), box: x0, y0, x1, y1 in the same coordinates.
        """
        point_prompt = None
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
        low_res, scores = self.sam.mask_decoder(
            image_embeddings=embedding.features,
            image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
        )
        best = int(torch.argmax(scores[0]))
        logits = low_res[:, best : best + 1]
        upscaled = self.sam.postprocess_masks(logits, embedding.input_size, embedding.original_size)
        mask = (upscaled[0, 0] > self.sam.mask_threshold).cpu().numpy()
        return MaskPrediction(mask, float(scores[0, best]), logits)
