"""What training needs of a model family: its input frame, encoder, prompt encoder and mask decoder.

- SAM and MobileSAM (`SamParts`): the longest side resized to the encoder input and padded at the
  right and bottom; the decoder reads the image embedding.
- SAM 2 and 2.1 (`Sam2Parts`): the image resized to the whole square input; the encoder's output is
  its feature levels, and the mask decoder (whose 1x1 projections of the two finer levels train with
  it) reads the finer levels beside the image features. Prompts and the decoder run as the served model
  runs them (server/models/sam2_model.py), except that output 0 is SAM 2's raw single-mask output, as
  in SAM 2's own training.
Both decode all four masks: B x 4 x 256 x 256 logits and B x 4 predicted IoUs.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from slidesam.server.models.sam2_build import import_sam2
from slidesam.server.models.sam2_encoder import backbone_levels, decoder_features
from slidesam.server.models.sam2_model import MASK_THRESHOLD, Points, sam2_masks, sam2_prompt_embeddings

Embedding = torch.Tensor | list[torch.Tensor]
"""What an encoder gives the decoder: SAM's image embedding, or SAM 2's feature levels."""
PARTS = ("image_encoder", "prompt_encoder", "mask_decoder")


def is_sam2_network(network: nn.Module) -> bool:
    """SAM 2's networks name their prompt encoder and mask decoder sam_prompt_encoder / sam_mask_decoder."""
    return hasattr(network, "sam_mask_decoder")


def module_names(network: nn.Module) -> dict[str, str]:
    """The network's top-level module for each part of PARTS."""
    prefix = "sam_" if is_sam2_network(network) else ""
    return {part: part if part == "image_encoder" else prefix + part for part in PARTS}


class SamParts:
    """SAM and MobileSAM."""

    single_tensor_embedding = True

    def __init__(self, sam: nn.Module):
        self.network = sam
        self.size: int = sam.image_encoder.img_size
        self._resize = ResizeLongestSide(self.size)

    def prepare_image(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """(1 x 3 x S x S normalised padded input, the image as resized into the top left of the frame)."""
        resized = self._resize.apply_image(np.ascontiguousarray(image))
        pixels = torch.as_tensor(resized, device=_device(self.network)).permute(2, 0, 1).contiguous()[None]
        return self.network.preprocess(pixels), resized

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network.image_encoder(pixels)

    @staticmethod
    def to_float(embedding: torch.Tensor) -> torch.Tensor:
        return embedding.float()

    def prompts(self, points: Points | None, boxes: torch.Tensor | None, previous: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.prompt_encoder(points=points, boxes=boxes, masks=previous)

    def decode(self, embedding: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.mask_decoder.predict_masks(embedding, self.network.prompt_encoder.get_dense_pe(), sparse, dense)


class Sam2Parts:
    """SAM 2 and SAM 2.1 image models."""

    single_tensor_embedding = False

    def __init__(self, sam2: nn.Module):
        self.network = sam2
        self.size: int = sam2.image_size
        transforms = import_sam2("sam2.utils.transforms")
        self._transforms = transforms.SAM2Transforms(resolution=self.size, mask_threshold=MASK_THRESHOLD)

    def prepare_image(self, image: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """(1 x 3 x S x S normalised input, the image resized to the whole S x S frame)."""
        image = np.ascontiguousarray(image)
        pixels = self._transforms(image)[None].to(_device(self.network))
        return pixels, cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)

    def encode(self, pixels: torch.Tensor) -> list[torch.Tensor]:
        return backbone_levels(self.network, pixels)

    @staticmethod
    def to_float(levels: list[torch.Tensor]) -> list[torch.Tensor]:
        return [level.float() for level in levels]

    def prompts(self, points: Points | None, boxes: torch.Tensor | None, previous: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        return sam2_prompt_embeddings(self.network, points, boxes, previous)

    def decode(self, levels: list[torch.Tensor], sparse: torch.Tensor, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, high_res = decoder_features(self.network, levels)
        return sam2_masks(self.network, image, high_res, sparse, dense, stable_single=False)


def training_parts(network: nn.Module) -> SamParts | Sam2Parts:
    return Sam2Parts(network) if is_sam2_network(network) else SamParts(network)


def _device(network: nn.Module) -> torch.device:
    return next(network.parameters()).device
