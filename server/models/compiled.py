"""torch.compile for an image encoder, block by block: the blocks the stepped encoder pauses between are
compiled in place, so preemption keeps working. Worth it for long batch work (precompute), where the
warm-up (about a minute for MobileSAM on 2 CPU cores) is paid once; scripts/bench_models measures both."""

from __future__ import annotations

import logging
import time

import numpy as np
from torch import nn

from slidesam.server.models.served import ServedModel

log = logging.getLogger(__name__)


def encoder_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The blocks of a SAM ViT, MobileSAM TinyViT (its attention blocks; MBConv runs by parts) or SAM 2 Hiera encoder."""
    if hasattr(encoder, "trunk"):
        return list(encoder.trunk.blocks)
    if hasattr(encoder, "blocks"):
        return list(encoder.blocks)
    if hasattr(encoder, "layers"):
        return [block for layer in encoder.layers for block in layer.blocks if type(block).__name__ != "MBConv"]
    raise ValueError(f"do not know the blocks of a {type(encoder).__name__} encoder")


def compile_encoder(model: ServedModel, batch_size: int = 1) -> float:
    """Compiles the model's encoder blocks in place and warms them up at this batch size; the seconds it took."""
    started = time.perf_counter()
    blocks = encoder_blocks(model.image_encoder)
    for block in blocks:
        block.compile()
    model.encode_many([np.zeros((model.input_size, model.input_size, 3), np.uint8)] * batch_size)
    seconds = time.perf_counter() - started
    log.info("compiled %d encoder blocks and warmed them up at batch %d in %.1f s", len(blocks), batch_size, seconds)
    return seconds
