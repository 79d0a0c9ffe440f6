"""Image encoders run block by block, with a preemption point after each block.

The result is exactly the encoder's own forward pass (the same operations in the same order); only
the pauses are new. Encoders of an unknown kind run in one piece.
"""

from __future__ import annotations

import torch
from torch import nn

from slidesam.server.models.preemption import yield_point


def encode_in_steps(encoder: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """encoder(pixels), pausing at yield_point() between blocks for SAM ViT and MobileSAM's TinyViT."""
    kind = type(encoder).__name__
    if kind == "ImageEncoderViT":
        return _vit(encoder, pixels)
    if kind == "TinyViT":
        return _tiny_vit(encoder, pixels)
    return encoder(pixels)


def _vit(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = encoder.patch_embed(x)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    for block in encoder.blocks:
        x = block(x)
        yield_point()
    return encoder.neck(x.permute(0, 3, 1, 2))


def _tiny_vit(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = encoder.patch_embed(x)
    yield_point()
    for layer in encoder.layers:
        for block in layer.blocks:
            x = _mbconv(block, x) if type(block).__name__ == "MBConv" else block(x)
            yield_point()
        if layer.downsample is not None:
            x = layer.downsample(x)
            yield_point()
    batch, _, channels = x.size()
    grid = round((x.shape[1]) ** 0.5)
    x = x.view(batch, grid, grid, channels).permute(0, 3, 1, 2)
    return encoder.neck(x)


def _mbconv(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """TinyViT's MBConv block (its most expensive, at the highest resolution) with pauses between convolutions."""
    shortcut = x
    x = block.act1(block.conv1(x))
    yield_point()
    x = block.act2(block.conv2(x))
    yield_point()
    x = block.drop_path(block.conv3(x))
    x += shortcut
    return block.act3(x)
