"""Byte-budgeted cache of image embeddings, keyed by (model, image, region, resolution), shared fairly
between users (server/fair_share.py): one user's new fields of view evict their own embeddings, or
those of users holding more than their share, never those of users within theirs."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from slidesam.server.fair_share import acting_user, FairShareLRU, Full
from slidesam.server.models.served import ImageEmbedding

log = logging.getLogger(__name__)


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
    not_kept: int                                  # embeddings used once and not kept: no room within the user's share


class EmbeddingCache:
    """The most recently used embeddings within budget_bytes, held on behalf of the user whose work
    stored or used them (the scheduler's acting user)."""

    def __init__(self, budget_bytes: int):
        if budget_bytes <= 0:
            raise ValueError("the embedding cache budget must be positive")
        self.budget_bytes = budget_bytes
        self._entries: FairShareLRU[EmbeddingKey, ImageEmbedding] = FairShareLRU(budget_bytes, lambda e: e.nbytes)
        self._hits = self._misses = self._not_kept = 0
        self._lock = threading.Lock()

    def get(self, key: EmbeddingKey) -> ImageEmbedding | None:
        """The embedding, marked most recently used and held by the acting user; None (a miss) when absent."""
        embedding = self._entries.get(key, acting_user())
        with self._lock:
            if embedding is None:
                self._misses += 1
            else:
                self._hits += 1
        return embedding

    def put(self, key: EmbeddingKey, embedding: ImageEmbedding) -> None:
        """Keeps an embedding for the acting user; one that does not fit their share is not kept (logged)."""
        user = acting_user()
        try:
            self._entries.put(key, embedding, user)
        except Full as full:
            with self._lock:
                self._not_kept += 1
            log.info("embedding cache: not keeping an embedding of user %s: %s", user, full)

    def clear(self) -> int:
        """Evicts every embedding (after a CUDA out-of-memory error); returns how many were held."""
        return self._entries.clear()

    def __contains__(self, key: EmbeddingKey) -> bool:
        return key in self._entries

    def held_by(self) -> dict[str, int]:
        """Bytes of embeddings each user holds."""
        return self._entries.held_by()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._entries), self._entries.total_bytes, self.budget_bytes, self._hits, self._misses,
                              self._entries.evictions, self._not_kept)
