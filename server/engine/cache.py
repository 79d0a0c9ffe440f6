"""Byte-budgeted LRU cache of image embeddings, keyed by (model, image, region, resolution)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

from server.models.sam import ImageEmbedding


@dataclass(frozen=True)
class EmbeddingKey:
    model_id: str
    image_key: str                                 # identifies the pixels (slide path+size+mtime, or upload hash)
    region: tuple[float, float, float, float]      # level-0 rectangle actually read
    downsample: float


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    budget_bytes: int
    hits: int
    misses: int
    evictions: int


class EmbeddingCache:
    """Keeps the most recently used embeddings whose total size stays within budget_bytes."""

    def __init__(self, budget_bytes: int):
        if budget_bytes <= 0:
            raise ValueError("the embedding cache budget must be positive")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[EmbeddingKey, ImageEmbedding] = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = self._evictions = 0
        self._lock = threading.Lock()

    def get(self, key: EmbeddingKey) -> ImageEmbedding | None:
        """The embedding, marked most recently used; None (a miss) when absent."""
        with self._lock:
            embedding = self._entries.get(key)
            if embedding is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return embedding

    def put(self, key: EmbeddingKey, embedding: ImageEmbedding) -> None:
        """Stores an embedding, evicting least recently used ones; one larger than the budget is not kept."""
        size = embedding.nbytes
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous.nbytes
            if size > self.budget_bytes:
                return
            while self._bytes + size > self.budget_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.nbytes
                self._evictions += 1
            self._entries[key] = embedding
            self._bytes += size

    def clear(self) -> int:
        """Evicts every embedding (after a CUDA out-of-memory error); returns how many were held."""
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self._bytes = 0
            self._evictions += count
            return count

    def __contains__(self, key: EmbeddingKey) -> bool:
        with self._lock:
            return key in self._entries

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self._bytes, self.budget_bytes, self._hits, self._misses, self._evictions)
