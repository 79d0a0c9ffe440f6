"""The enhanced mask decoder: SAM's mask decoder with global context and a deeper two-way transformer.

The paper (Kim et al. 2023) adds a global attention block over the image tokens and more transformer
layers, and trains the decoder alone; it gives no sizes. Chosen here, and why:
- `depth = 4` two-way transformer layers (SAM has 2): twice the capacity where prompts meet the image;
  layers 0-1 start from SAM's weights, layers 2-3 are new, each behind a learnable residual gate that
  starts at zero (a new layer's output is `x + g * (layer(x) - x)`).
- a global context block before the transformer: every one of the 64 x 64 image tokens attends to the
  tokens average-pooled to `global_grid` x `global_grid` (16 x 16 = 256), with `global_heads` = 8 heads.
  Full self-attention over 4096 tokens costs 16x more (4096^2 versus 4096 x 256 scores per head) for
  context that pooled tokens already carry. Its output projections start at zero.
So at the start of training the enhanced decoder computes exactly what SAM's decoder computes, and
training grows the new capacity from there (random new layers without gates disturbed SAM enough that
a short run could not recover).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from segment_anything.modeling.mask_decoder import MaskDecoder
from segment_anything.modeling.transformer import TwoWayTransformer
from torch import nn
from torch.nn import functional as F

SAM_DECODER_DEPTH = 2  # layers SAM's own decoder has, and which load its weights


@dataclass(frozen=True)
class EnhancedDecoderConfig:
    depth: int = 4
    global_grid: int = 16
    global_heads: int = 8
    mlp_dim: int = 2048

    def to_dict(self) -> dict:
        return asdict(self)


class GlobalContextBlock(nn.Module):
    """Image tokens attend to a pooled summary of the whole field of view (residual, zero-initialised)."""

    def __init__(self, dim: int, grid: int, heads: int):
        super().__init__()
        self.grid = grid
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * 2), nn.GELU(), nn.Linear(dim * 2, dim))
        nn.init.zeros_(self.attention.out_proj.weight)
        nn.init.zeros_(self.attention.out_proj.bias)
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, image: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        b, c, h, w = image.shape
        tokens = image.flatten(2).transpose(1, 2)
        pooled = F.adaptive_avg_pool2d(image, self.grid).flatten(2).transpose(1, 2)
        pooled_position = F.adaptive_avg_pool2d(position, self.grid).flatten(2).transpose(1, 2)
        queries = self.norm(tokens) + position.flatten(2).transpose(1, 2)
        attended, _ = self.attention(queries, pooled + pooled_position, pooled, need_weights=False)
        tokens = tokens + attended
        tokens = tokens + self.mlp(tokens)
        return tokens.transpose(1, 2).reshape(b, c, h, w)


class GatedLayer(nn.Module):
    """A new two-way transformer layer that starts as the identity: x + g * (layer(x) - x), g = 0."""

    def __init__(self, layer: nn.Module):
        super().__init__()
        self.layer = layer
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, queries, keys, query_pe, key_pe):
        new_queries, new_keys = self.layer(queries=queries, keys=keys, query_pe=query_pe, key_pe=key_pe)
        return queries + self.gate * (new_queries - queries), keys + self.gate * (new_keys - keys)


class EnhancedMaskDecoder(MaskDecoder):
    """SAM's MaskDecoder with a global context block and a deeper two-way transformer."""

    def __init__(self, config: EnhancedDecoderConfig = EnhancedDecoderConfig(), transformer_dim: int = 256):
        super().__init__(
            transformer_dim=transformer_dim,
            transformer=TwoWayTransformer(depth=config.depth, embedding_dim=transformer_dim, mlp_dim=config.mlp_dim, num_heads=8),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        )
        layers = self.transformer.layers
        for index in range(SAM_DECODER_DEPTH, len(layers)):
            layers[index] = GatedLayer(layers[index])
        self.config = config
        self.global_context = GlobalContextBlock(transformer_dim, config.global_grid, config.global_heads)

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
        """SAM's mask prediction with the image tokens passed through the global context block first."""
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens.unsqueeze(0).expand(sparse_prompt_embeddings.size(0), -1, -1)
        tokens = torch.cat((output_tokens, sparse_prompt_embeddings), dim=1)
        image = torch.repeat_interleave(image_embeddings, tokens.shape[0], dim=0) + dense_prompt_embeddings
        position = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
        image = self.global_context(image, position)
        b, c, h, w = image.shape
        hidden, image = self.transformer(image, position, tokens)
        mask_tokens = hidden[:, 1 : 1 + self.num_mask_tokens, :]
        upscaled = self.output_upscaling(image.transpose(1, 2).view(b, c, h, w))
        hyper = torch.stack([mlp(mask_tokens[:, i, :]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        b, c, h, w = upscaled.shape
        masks = (hyper @ upscaled.view(b, c, h * w)).view(b, -1, h, w)
        return masks, self.iou_prediction_head(hidden[:, 0, :])


def load_pretrained_decoder(decoder: EnhancedMaskDecoder, pretrained: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """Copies every pretrained tensor whose name and shape match; returns (loaded keys, new keys)."""
    own = decoder.state_dict()
    loaded = [key for key, value in pretrained.items() if key in own and own[key].shape == value.shape]
    decoder.load_state_dict({key: pretrained[key] for key in loaded}, strict=False)
    return sorted(loaded), sorted(set(own) - set(loaded))
