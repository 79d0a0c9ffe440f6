"""One loaded SAM 2 image model, served like SAM: the engine's ServedModel over Meta's sam2 package.

It computes what `SAM2ImagePredictor` computes, in the engine's terms, so that its masks are
pixel-equal to the predictor's:
- a region is resized to the square encoder input (1024 x 1024, its aspect ratio not kept) and
  normalised by the package's own SAM2Transforms, so the 256 x 256 logits cover the whole region
  (ImageEmbedding.input_size is the whole input);
- the mask decoder reads two finer feature maps beside the image features; the embedding carries them
  (ImageEmbedding.high_res), so the cache, the disk store and fp16 storage keep them too;
- prompts: points scaled by input / width and input / height, a box as two corner points (labels 2
  and 3) before the clicks, previous logits clamped to +-32 as the predictor hands them back;
- candidate 0 is what the predictor answers when asked for one mask: the single-mask output, or the
  best multimask output where that is unstable.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from slidesam.server.models.mask_crop import MaskCrop, crop_to_object
from slidesam.server.models.precision import check_precision, encoder_autocast
from slidesam.server.models.sam2_build import import_sam2
from slidesam.server.models.sam2_encoder import backbone_levels, decoder_features
from slidesam.server.models.served import Candidates, DecodeInput, ImageEmbedding, token_groups

MASK_THRESHOLD = 0.0
LOGIT_LIMIT = 32.0
"""The predictor clamps the low-resolution logits it returns (the next step's mask input) to +-32."""
Points = tuple[torch.Tensor, torch.Tensor]


def sam2_prompt_embeddings(
    sam2: nn.Module, points: Points | None, boxes: torch.Tensor | None, previous: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM 2's prompt encoder as its predictor calls it: coordinates in the encoder's input frame
    (B x N x 2 with B x N labels; boxes B x 4), box corners before the points, previous logits clamped."""
    if boxes is not None:
        corners = boxes.reshape(-1, 2, 2)
        corner_labels = torch.tensor([[2, 3]], dtype=torch.int, device=corners.device).repeat(corners.shape[0], 1)
        if points is None:
            points = (corners, corner_labels)
        else:
            points = (torch.cat([corners, points[0]], dim=1), torch.cat([corner_labels.to(points[1].dtype), points[1]], dim=1))
    masks = None if previous is None else previous.float().clamp(-LOGIT_LIMIT, LOGIT_LIMIT)
    return sam2.sam_prompt_encoder(points=points, boxes=None, masks=masks)


def sam2_masks(
    sam2: nn.Module, image: torch.Tensor, high_res: tuple[torch.Tensor, ...], sparse: torch.Tensor, dense: torch.Tensor,
    stable_single: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM 2's mask decoder over B (image, prompts) pairs: all four logit maps and scores (B x 4 x 256 x 256,
    B x 4). stable_single: output 0 falls back to the best multimask output where it is unstable, as the
    predictor's single-mask answer does (training takes the raw output 0, as SAM 2's own training does)."""
    decoder = sam2.sam_mask_decoder
    logits, scores, _, _ = decoder.predict_masks(
        image_embeddings=image,
        image_pe=sam2.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        repeat_image=False,
        high_res_features=list(high_res),
    )
    if stable_single and decoder.dynamic_multimask_via_stability:
        single, single_score = decoder._dynamic_multimask_via_stability(logits, scores)
        logits, scores = torch.cat([single, logits[:, 1:]], dim=1), torch.cat([single_score, scores[:, 1:]], dim=1)
    return logits, scores


class Sam2Model:
    """A SAM 2 or SAM 2.1 image model on one device (ServedModel). Not thread-safe: call it from one worker thread."""

    def __init__(self, sam2: nn.Module, device: torch.device, encoder_precision: str = "float32"):
        transforms = import_sam2("sam2.utils.transforms")
        self.sam2 = sam2.to(device).eval()
        self.device = device
        self.encoder_precision = check_precision(encoder_precision)
        self.input_size: int = sam2.image_size
        self._transforms = transforms.SAM2Transforms(resolution=self.input_size, mask_threshold=MASK_THRESHOLD)
        self._dtype = sam2.sam_prompt_encoder.point_embeddings[0].weight.dtype

    @property
    def image_encoder(self) -> nn.Module:
        return self.sam2.image_encoder

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """SAM 2 resizes every region to its whole square input."""
        return self.input_size, self.input_size

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """RGB uint8 H x W x 3 -> embedding with its high-resolution features (done once per region)."""
        return self.encode_many([image])[0]

    @torch.inference_mode()
    def encode_many(self, images: list[np.ndarray]) -> list[ImageEmbedding]:
        """Several RGB uint8 H x W x 3 images -> their embeddings, in one batched encoder pass."""
        batch = torch.stack([self._transforms(np.ascontiguousarray(image)) for image in images]).to(self.device)
        with encoder_autocast(self.device, self.encoder_precision):
            features, high_res = decoder_features(self.sam2, backbone_levels(self.sam2, batch))
        features, high_res = features.float(), tuple(level.float() for level in high_res)
        square = (self.input_size, self.input_size)
        if len(images) == 1:
            return [ImageEmbedding(features, square, tuple(images[0].shape[:2]), high_res)]
        # each embedding owns its memory (a cached one must not keep the whole batch alive)
        return [
            ImageEmbedding(features[row][None].clone(), square, tuple(image.shape[:2]), tuple(level[row][None].clone() for level in high_res))
            for row, image in enumerate(images)
        ]

    def candidates(
        self,
        embedding: ImageEmbedding,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        box: np.ndarray | None,
        previous_logits: torch.Tensor | None,
    ) -> Candidates:
        """Prompt encoder + mask decoder, one pass, all four masks (points, box: region pixel coordinates
        as for SAM; SAM 2 adds 0.5 too)."""
        return self.candidates_many([DecodeInput(embedding, points, labels, box, previous_logits)])[0]

    @torch.inference_mode()
    def candidates_many(self, inputs: list[DecodeInput]) -> list[Candidates]:
        """Candidates for several decoder passes (any images): passes with the same number of prompt tokens
        share one batched decoder run (batched and single runs agree to float rounding)."""
        encoded = [self._encode_prompts(item) for item in inputs]
        results: list[Candidates | None] = [None] * len(inputs)
        for indices in token_groups([sparse for sparse, _, _ in encoded]):
            embeddings = [inputs[i].embedding for i in indices]
            logits, scores = sam2_masks(
                self.sam2,
                torch.cat([e.features.to(self._dtype) for e in embeddings]),
                tuple(torch.cat([e.high_res[level].to(self._dtype) for e in embeddings]) for level in range(len(embeddings[0].high_res))),
                torch.cat([encoded[i][0] for i in indices]),
                torch.cat([encoded[i][1] for i in indices]),
                stable_single=True,
            )
            for row, index in enumerate(indices):
                results[index] = Candidates(logits[row], scores[row], encoded[index][2])
        return results

    def _encode_prompts(self, item: DecodeInput) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None]:
        """Sparse (1 x tokens x C) and dense (1 x C x h x w) prompt embeddings, and the points in the input frame."""
        original = item.embedding.original_size
        points, coords = None, None
        if item.points is not None and len(item.points):
            scaled = self._transforms.transform_coords(
                torch.as_tensor(item.points, dtype=torch.float, device=self.device), normalize=True, orig_hw=original
            )
            points = (scaled[None], torch.as_tensor(item.labels, dtype=torch.int, device=self.device)[None])
            coords = scaled.cpu().numpy().astype(np.float64)
        boxes = None
        if item.box is not None:
            box = torch.as_tensor(item.box, dtype=torch.float, device=self.device)
            boxes = self._transforms.transform_boxes(box, normalize=True, orig_hw=original)
        sparse, dense = sam2_prompt_embeddings(self.sam2, points, boxes, item.previous_logits)
        return sparse, dense, coords

    @torch.inference_mode()
    def upscale(self, embedding: ImageEmbedding, logits: torch.Tensor) -> MaskCrop:
        """One 256 x 256 logit map -> boolean mask at the region's size (the predictor's own upscaling, on
        the model's device), cut to the object's bounding box on the host."""
        upscaled = self._transforms.postprocess_masks(logits[None, None], embedding.original_size)
        return crop_to_object(upscaled[0, 0] > MASK_THRESHOLD)
