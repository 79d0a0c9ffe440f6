"""One loaded SAM model: encode a region once, decode prompts against the stored embedding many times."""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.modeling import MaskDecoder, Sam
from segment_anything.utils.transforms import ResizeLongestSide

from slidesam.server.models.encoder_steps import encode_in_steps
from slidesam.server.models.mask_crop import MaskCrop, crop_to_object
from slidesam.server.models.precision import check_precision, encoder_autocast
from slidesam.server.models.served import Candidates, DecodeInput, ImageEmbedding, token_groups


class SamModel:
    """A SAM-family model on one device. Not thread-safe: call it from one worker thread."""

    def __init__(self, sam: Sam, device: torch.device, encoder_precision: str = "float32"):
        self.sam = sam.to(device).eval()
        self.device = device
        self.encoder_precision = check_precision(encoder_precision)
        self.input_size: int = sam.image_encoder.img_size
        self._resize = ResizeLongestSide(self.input_size)
        with torch.inference_mode():
            self._dense_pe = sam.prompt_encoder.get_dense_pe()

    @property
    def image_encoder(self) -> torch.nn.Module:
        return self.sam.image_encoder

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """(H, W) a region of height x width pixels takes inside the encoder input: its longest side resized."""
        return self._resize.get_preprocess_shape(height, width, self.input_size)

    def encode(self, image: np.ndarray) -> ImageEmbedding:
        """RGB uint8 H x W x 3 -> embedding (the expensive step: done once per region)."""
        return self.encode_many([image])[0]

    @torch.inference_mode()
    def encode_many(self, images: list[np.ndarray]) -> list[ImageEmbedding]:
        """Several RGB uint8 H x W x 3 images -> their embeddings, in one batched encoder pass."""
        resized = [self._resize.apply_image(image) for image in images]
        batch = torch.cat([
            self.sam.preprocess(torch.as_tensor(pixels, device=self.device).permute(2, 0, 1).contiguous()[None])
            for pixels in resized
        ])
        with encoder_autocast(self.device, self.encoder_precision):
            features = encode_in_steps(self.sam.image_encoder, batch).float()
        # each embedding owns its memory (a cached one must not keep the whole batch alive)
        parts = [features] if len(images) == 1 else [row[None].clone() for row in features]
        return [
            ImageEmbedding(part, tuple(pixels.shape[:2]), tuple(image.shape[:2]))
            for part, pixels, image in zip(parts, resized, images)
        ]

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
        sparse, dense, coords = self._encode_prompts(DecodeInput(embedding, points, labels, box, previous_logits))
        logits, scores = self.sam.mask_decoder.predict_masks(
            image_embeddings=self._features(embedding),
            image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
        )
        return Candidates(logits[0], scores[0], coords)

    @torch.inference_mode()
    def candidates_many(self, inputs: list[DecodeInput]) -> list[Candidates]:
        """Candidates for several decoder passes (any images), batched where prompts have the same shape.

        Passes with the same number of prompt tokens share one batched run of SAM's mask decoder; the
        rest (and decoders of another kind, e.g. the enhanced decoder) run one at a time. Batched and
        single runs agree to float rounding.
        """
        if len(inputs) == 1 or type(self.sam.mask_decoder) is not MaskDecoder:
            return [self.candidates(i.embedding, i.points, i.labels, i.box, i.previous_logits) for i in inputs]
        encoded = [self._encode_prompts(item) for item in inputs]
        results: list[Candidates | None] = [None] * len(inputs)
        for indices in token_groups([sparse for sparse, _, _ in encoded]):
            logits, scores = self._decode_batch(
                torch.cat([self._features(inputs[i].embedding) for i in indices]),
                torch.cat([encoded[i][0] for i in indices]),
                torch.cat([encoded[i][1] for i in indices]),
            )
            for row, index in enumerate(indices):
                results[index] = Candidates(logits[row], scores[row], encoded[index][2])
        return results

    def _features(self, embedding: ImageEmbedding) -> torch.Tensor:
        """Features in the decoder's dtype (the cache may store them as fp16)."""
        return embedding.features.to(self._dense_pe.dtype)

    def _encode_prompts(self, item: DecodeInput) -> tuple[torch.Tensor, torch.Tensor, np.ndarray | None]:
        """SAM's prompt encoder: sparse (1 x tokens x C) and dense (1 x C x h x w) embeddings."""
        point_prompt, coords = None, None
        if item.points is not None and len(item.points):
            coords = self._resize.apply_coords(np.asarray(item.points, dtype=np.float64), item.embedding.original_size)
            point_prompt = (
                torch.as_tensor(coords, dtype=torch.float32, device=self.device)[None],
                torch.as_tensor(item.labels, dtype=torch.int64, device=self.device)[None],
            )
        box_prompt = None
        if item.box is not None:
            scaled = self._resize.apply_boxes(np.asarray(item.box, dtype=np.float64)[None], item.embedding.original_size)
            box_prompt = torch.as_tensor(scaled, dtype=torch.float32, device=self.device)
        sparse, dense = self.sam.prompt_encoder(points=point_prompt, boxes=box_prompt, masks=item.previous_logits)
        return sparse, dense, coords

    def _decode_batch(self, features: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's mask decoder over B (image, prompts) pairs at once: features B x C x h x w, one prompt set each.

        SAM's own predict_masks pairs one image with many prompt sets; here row b of the image batch
        meets row b of the prompt batch, and every step after that is the decoder's own.
        """
        decoder = self.sam.mask_decoder
        batch = features.shape[0]
        output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
        tokens = torch.cat((output_tokens[None].expand(batch, -1, -1), sparse), dim=1)
        source = features + dense
        position = self._dense_pe.expand(batch, -1, -1, -1)
        _, channels, height, width = source.shape
        hidden, source = decoder.transformer(source, position, tokens)
        iou_token = hidden[:, 0, :]
        mask_tokens = hidden[:, 1 : 1 + decoder.num_mask_tokens, :]
        upscaled = decoder.output_upscaling(source.transpose(1, 2).view(batch, channels, height, width))
        hyper = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1)
        _, channels, height, width = upscaled.shape
        logits = (hyper @ upscaled.view(batch, channels, height * width)).view(batch, -1, height, width)
        return logits, decoder.iou_prediction_head(iou_token)

    @torch.inference_mode()
    def upscale(self, embedding: ImageEmbedding, logits: torch.Tensor) -> MaskCrop:
        """One 256 x 256 logit map -> boolean mask at the region's size (SAM's own upscaling, on the
        model's device), cut to the object's bounding box on the host."""
        upscaled = self.sam.postprocess_masks(logits[None, None], embedding.input_size, embedding.original_size)
        return crop_to_object(upscaled[0, 0] > self.sam.mask_threshold)
