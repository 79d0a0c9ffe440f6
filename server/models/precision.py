"""The precision an image encoder runs at: float32, or bf16/fp16 autocast (faster on GPUs with tensor
cores). The encoder's output is always returned as float32, and a model id names a reduced precision
(`mobile_sam@<sha>+bf16`), so caches and stores never mix embeddings of different precisions."""

from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager

import torch

ENCODER_PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
_TAGS = {"bfloat16": "bf16", "float16": "fp16"}
PRECISION_HELP = ("image encoder precision: float32 (default), or bfloat16/float16 autocast (faster on GPUs; model ids "
                  "then end in +bf16/+fp16)")


def check_precision(precision: str) -> str:
    """The precision, or ValueError naming the ones there are."""
    if precision not in ENCODER_PRECISIONS:
        raise ValueError(f"unknown encoder precision {precision!r}; use one of {', '.join(ENCODER_PRECISIONS)}")
    return precision


def precision_tag(precision: str) -> str:
    """'' for float32, else the suffix a model id carries ('+bf16', '+fp16')."""
    return f"+{_TAGS[precision]}" if precision in _TAGS else ""


def encoder_autocast(device: torch.device, precision: str) -> ContextManager:
    """Autocast for the encoder's forward at this precision (nothing for float32)."""
    dtype = ENCODER_PRECISIONS[check_precision(precision)]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)
