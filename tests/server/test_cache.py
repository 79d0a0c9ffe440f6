"""The embedding cache never exceeds its byte budget and evicts the least recently used entry."""

from __future__ import annotations

import pytest
import torch

from slidesam.server.engine.cache import EmbeddingCache, EmbeddingKey
from slidesam.server.models.served import ImageEmbedding


def embedding(kib: int) -> ImageEmbedding:
    return ImageEmbedding(torch.zeros(kib * 256), (64, 64), (64, 64))  # 256 float32 = 1 KiB


def key(name: str) -> EmbeddingKey:
    return EmbeddingKey("mobile_sam@x", name, (0.0, 0.0, 1.0, 1.0), 1.0)


def test_lru_within_budget():
    cache = EmbeddingCache(budget_bytes=10 * 1024)
    for name in "abcd":
        cache.put(key(name), embedding(3))
    assert key("a") not in cache and cache.stats().bytes == 9 * 1024
    assert cache.get(key("b")) is not None  # b becomes most recent
    cache.put(key("e"), embedding(3))
    assert key("c") not in cache and key("b") in cache
    stats = cache.stats()
    assert stats.bytes <= stats.budget_bytes and stats.evictions == 2 and stats.hits == 1


def test_replacing_an_entry_counts_its_bytes_once():
    cache = EmbeddingCache(budget_bytes=8 * 1024)
    cache.put(key("a"), embedding(4))
    cache.put(key("a"), embedding(2))
    assert cache.stats().bytes == 2 * 1024 and cache.stats().entries == 1


def test_an_embedding_larger_than_the_budget_is_not_kept():
    cache = EmbeddingCache(budget_bytes=1024)
    cache.put(key("a"), embedding(2))
    assert cache.get(key("a")) is None and cache.stats().misses == 1


def test_budget_must_be_positive():
    with pytest.raises(ValueError):
        EmbeddingCache(0)
