"""Frozen-encoder embeddings kept on disk between training runs (`train --embedding-cache DIR`).

A learning-rate or schedule sweep trains the same decoder many times on the same patches; with the
encoder frozen, every run would spend most of its time re-encoding identical inputs (1.5 s per
MobileSAM window on the project's CPU). The cache keys an embedding by what determines it exactly: the
encoder's checkpoint SHA-256, the device type (CUDA encodes under bf16 autocast) and the bytes of the
normalised input tensor. Entries are written atomically and are float32, so a run that reads them trains
exactly as one that encodes; an unreadable or mismatched entry is logged, re-encoded and replaced.
"""

from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Callable

import torch

from slidesam.atomic_files import atomic_write

log = logging.getLogger(__name__)


class EmbeddingDiskCache:
    """Encoder outputs by (checkpoint, device type, input bytes), one .pt file each under `directory`."""

    def __init__(self, directory: Path, encoder_sha256: str, device: torch.device):
        self.directory, self.encoder_sha256, self.device = directory, encoder_sha256, device
        self.hits = self.misses = 0

    def key(self, pixels: torch.Tensor) -> str:
        digest = hashlib.sha256(f"{self.encoder_sha256}:{self.device.type}:{tuple(pixels.shape)}:".encode())
        digest.update(pixels.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return digest.hexdigest()

    def get_or_encode(self, pixels: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The cached embedding of `pixels`, or `encode(pixels)` stored for the next run."""
        key = self.key(pixels)
        path = self.directory / key[:2] / f"{key}.pt"
        if path.is_file():
            try:
                embedding = torch.load(path, map_location=self.device, weights_only=True)
                if not isinstance(embedding, torch.Tensor) or embedding.dtype != torch.float32:
                    raise ValueError("not a float32 tensor")
                self.hits += 1
                return embedding
            except Exception as error:  # noqa: BLE001 - any damage means: encode again and replace
                log.warning("embedding cache: %s is unreadable (%s); encoding again", path, error)
        self.misses += 1
        embedding = encode(pixels).float()
        buffer = io.BytesIO()
        torch.save(embedding.detach().cpu(), buffer)
        atomic_write(path, buffer.getvalue())
        return embedding
