"""SAM 2's image features, computed block by block with a preemption point after each Hiera block.

The result is exactly what `SAM2ImagePredictor.set_image` computes (the same operations in the same
order; only the pauses are new): the Hiera trunk's stage outputs, the FPN neck, the levels the mask
decoder reads, the decoder's own 1x1 projections of the two finer levels, and, for the coarsest level,
the 'no memory' embedding an image without video memory gets.
"""

from __future__ import annotations

import torch
from torch import nn

from slidesam.server.models.preemption import yield_point


def backbone_levels(sam2: nn.Module, pixels: torch.Tensor) -> list[torch.Tensor]:
    """The image encoder's feature maps, finest first (B x C x h x w each), as its forward pass makes them."""
    encoder = sam2.image_encoder
    levels, _ = encoder.neck(_trunk(encoder.trunk, pixels))
    return levels[: -encoder.scalp] if encoder.scalp > 0 else levels


def decoder_features(sam2: nn.Module, levels: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """(image features B x C x 64 x 64, finer maps for the mask decoder) from the backbone's levels."""
    used = levels[-sam2.num_feature_levels :]
    image = used[-1]
    if sam2.directly_add_no_mem_embed:
        image = image + sam2.no_mem_embed.view(1, -1, 1, 1)
    if not sam2.use_high_res_features_in_sam:
        return image, ()
    decoder = sam2.sam_mask_decoder
    return image, (decoder.conv_s0(used[0]), decoder.conv_s1(used[1]))


def _trunk(trunk: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Hiera's forward pass, pausing after every block: the outputs of its stages, finest first."""
    x = trunk.patch_embed(x)
    x = x + trunk._get_pos_embed(x.shape[1:3])
    outputs = []
    for index, block in enumerate(trunk.blocks):
        x = block(x)
        if index == trunk.stage_ends[-1] or (index in trunk.stage_ends and trunk.return_interm_layers):
            outputs.append(x.permute(0, 3, 1, 2))
        yield_point()
    return outputs
