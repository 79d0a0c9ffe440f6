"""The disk store of grid-window embeddings: exact round trip, byte budget with LRU, refusals."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from slidesam.server.engine.embedding_store import MANIFEST, EmbeddingStore, StoreKey, encode_entry
from slidesam.server.engine.window_grid import WindowIndex
from slidesam.server.errors import FailedPrecondition, InvalidArgument
from slidesam.server.models.served import ImageEmbedding

KEY = StoreKey("mobile_sam@6dbb90523a35", "6dbb9052" * 8, "openslide-quickhash-1:abc", "ds2-w1024-o256",
               WindowIndex(1, 0), (1536.0, 0.0, 2048.0, 2048.0), 2.0)


def _embedding(seed: int, dtype: torch.dtype = torch.float16, channels: int = 256) -> ImageEmbedding:
    generator = torch.Generator().manual_seed(seed)
    return ImageEmbedding(torch.randn(1, channels, 64, 64, generator=generator).to(dtype), (1024, 1024), (1024, 1024))


def _key(column: int, row: int = 0, **changes) -> StoreKey:
    return replace(KEY, window=WindowIndex(column, row), **changes)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.emb"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_round_trip_is_exact_and_survives_a_restart(tmp_path, dtype):
    embedding = replace(_embedding(1, dtype), input_size=(768, 1024), original_size=(1500, 2000))
    store = EmbeddingStore(tmp_path / "store", 1 << 30)
    assert KEY not in store and store.get(KEY) is None
    store.put(KEY, embedding)
    path = store.path(KEY)
    assert path.relative_to(store.root).parts[2:] == ("ds2-w1024-o256", "c1_r0.emb")
    assert json.loads((store.root / MANIFEST).read_text())["format_version"] == 1
    reopened = EmbeddingStore(tmp_path / "store", 1 << 30)
    assert reopened.stats().entries == 1 and reopened.stats().bytes == path.stat().st_size
    loaded = reopened.get(KEY)
    assert loaded.features.device.type == "cpu" and loaded.features.dtype == dtype
    assert torch.equal(loaded.features, embedding.features)
    assert (loaded.input_size, loaded.original_size) == ((768, 1024), (1500, 2000))
    other = EmbeddingStore(tmp_path / "other", 1 << 30)
    other.put(KEY, embedding)  # later, elsewhere: the same bytes (no timestamps, no paths inside)
    assert other.path(KEY).read_bytes() == path.read_bytes()


def test_budget_is_never_exceeded_and_the_least_recently_used_goes_first(tmp_path):
    entry = len(encode_entry(_key(0), _embedding(0)))
    store = EmbeddingStore(tmp_path / "store", 3 * entry + entry // 2)
    for column in range(3):
        store.put(_key(column), _embedding(column))
        assert _disk_bytes(store.root) <= store.budget_bytes
    assert store.get(_key(0)) is not None  # 0 is now the most recently used; 1 is the oldest
    store.put(_key(3), _embedding(3))
    assert _disk_bytes(store.root) <= store.budget_bytes
    assert [_key(c) in store for c in range(4)] == [True, False, True, True]
    store.put(_key(4), _embedding(4))
    assert [_key(c) in store for c in range(5)] == [True, False, False, True, True]
    stats = store.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (3, _disk_bytes(store.root), 2)
    # recency is kept in modification times, so a restarted store evicts in the same order
    reopened = EmbeddingStore(store.root, 2 * entry)
    assert _disk_bytes(store.root) <= 2 * entry
    assert [_key(c) in reopened for c in (0, 3, 4)] == [False, True, True]


def test_an_entry_larger_than_the_budget_is_not_stored(tmp_path, caplog):
    store = EmbeddingStore(tmp_path / "store", 1000)
    with caplog.at_level(logging.WARNING):
        store.put(KEY, _embedding(0))
    assert KEY not in store and _disk_bytes(store.root) == 0
    assert "exceed the whole store budget" in caplog.text


def _corrupt_payload(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-4096])


def _garbage_header(path: Path) -> None:
    data = path.read_bytes()
    start = data.index(b"\n") + 1
    path.write_bytes(data[:start] + b"{not json" + data[start + 9:])


def _no_magic(path: Path) -> None:
    path.write_bytes(b"hello" + path.read_bytes())


@pytest.mark.parametrize(
    "damage, reason",
    [
        (_corrupt_payload, "does not match the SHA-256"),
        (_truncate, "truncated"),
        (_garbage_header, "header is not valid"),
        (_no_magic, "magic line"),
    ],
)
def test_a_damaged_file_is_refused_with_a_warning_and_deleted(tmp_path, caplog, damage, reason):
    store = EmbeddingStore(tmp_path / "store", 1 << 30)
    store.put(KEY, _embedding(0))
    damage(store.path(KEY))
    with caplog.at_level(logging.WARNING, logger="slidesam.server.engine.embedding_store"):
        assert store.get(KEY) is None
    assert reason in caplog.text and str(store.path(KEY)) in caplog.text and "encoded again" in caplog.text
    assert not store.path(KEY).exists()
    assert store.stats().refused == 1 and store.stats().entries == 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("model_id", "sam_vit_b@01ec64000000"),
        ("checkpoint_sha256", "01ec64" * 10 + "abcd"),
        ("image_identity", "openslide-quickhash-1:other"),
        ("grid_key", "ds4-w1024-o256"),
        ("window", WindowIndex(2, 3)),
        ("region", (1536.0, 0.0, 2048.0, 2046.0)),
        ("downsample", 2.0000001),
    ],
)
def test_a_foreign_file_in_a_keys_place_is_refused(tmp_path, caplog, field, value):
    store = EmbeddingStore(tmp_path / "store", 1 << 30)
    foreign = replace(KEY, **{field: value})
    store.path(KEY).parent.mkdir(parents=True)
    store.path(KEY).write_bytes(encode_entry(foreign, _embedding(0)))  # e.g. copied from another model's folder
    with caplog.at_level(logging.WARNING, logger="slidesam.server.engine.embedding_store"):
        assert store.get(KEY) is None
    assert f"holds {field}" in caplog.text and "foreign" in caplog.text
    assert not store.path(KEY).exists()


def test_a_file_vanishing_under_the_store_is_a_miss(tmp_path):
    store = EmbeddingStore(tmp_path / "store", 1 << 30)
    store.put(KEY, _embedding(0))
    store.path(KEY).unlink()  # another process evicted it
    assert store.get(KEY) is None and store.stats().entries == 0
    store.put(_key(5), _embedding(5))
    assert store.stats().bytes == _disk_bytes(store.root)


def test_files_written_by_another_process_are_served_and_counted(tmp_path):
    root = tmp_path / "store"
    reader = EmbeddingStore(root, 1 << 30)
    script = (
        "import sys, torch; sys.path.insert(0, '.')\n"
        "from tests.server.test_embedding_store import KEY, _embedding\n"
        "from slidesam.server.engine.embedding_store import EmbeddingStore\n"
        f"EmbeddingStore({str(root)!r}, 1 << 30).put(KEY, _embedding(7))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=Path(__file__).resolve().parents[2])
    assert torch.equal(reader.get(KEY).features, _embedding(7).features)
    assert reader.stats().bytes == _disk_bytes(root)


def test_temporaries_of_dead_writers_are_removed(tmp_path):
    store = EmbeddingStore(tmp_path / "store", 1 << 30)
    store.put(KEY, _embedding(0))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    stale = store.path(KEY).with_name(f".c9_r9.emb.{int(dead.stdout)}.tmp")
    live = store.path(KEY).with_name(f".c8_r8.emb.{os.getpid()}.tmp")
    stale.write_bytes(b"half a file")
    live.write_bytes(b"being written")
    EmbeddingStore(store.root, 1 << 30)
    assert not stale.exists() and live.exists()


def test_bad_roots_and_budgets_are_refused(tmp_path):
    with pytest.raises(InvalidArgument, match="positive number of bytes"):
        EmbeddingStore(tmp_path / "a", 0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidArgument, match="is a file, not a directory"):
        EmbeddingStore(tmp_path / "file", 1 << 20)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("keep me")
    with pytest.raises(FailedPrecondition, match="not empty and not an embedding store"):
        EmbeddingStore(tmp_path / "home", 1 << 20)
    assert (tmp_path / "home" / "notes.txt").read_text() == "keep me"
    old = tmp_path / "old"
    EmbeddingStore(old, 1 << 30).put(KEY, _embedding(0))
    (old / MANIFEST).write_text(json.dumps({"format_version": 99}))
    before = _files(old)
    with pytest.raises(FailedPrecondition, match="format version 99"):
        EmbeddingStore(old, 1 << 30)
    assert _files(old) == before
    with pytest.raises(InvalidArgument, match="not a plain name"):
        EmbeddingStore(tmp_path / "b", 1 << 20).path(replace(KEY, grid_key="../../escape"))
