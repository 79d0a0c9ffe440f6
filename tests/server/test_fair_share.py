"""The fair-share LRU behind the upload store and the embedding cache: one user's entries cannot push
out another's while that user stays within their share."""

from __future__ import annotations

import pytest

from slidesam.server.fair_share import FairShareLRU, Full


def store(budget: int = 100) -> FairShareLRU[str, int]:
    return FairShareLRU(budget, size_of=lambda size: size)


def test_a_user_alone_uses_the_whole_budget_and_evicts_least_recently_used_first():
    lru = store()
    for key in "abcd":
        lru.put(key, 30, "alice")
    assert "a" not in lru and lru.total_bytes == 90 and lru.evictions == 1
    assert lru.get("b") == 30
    lru.put("e", 30, "alice")
    assert "c" not in lru and "b" in lru


def test_a_flood_evicts_only_the_flooders_own_entries():
    lru = store()
    lru.put("victim", 20, "bob")
    for index in range(10):
        lru.put(f"flood-{index}", 30, "mallory")
    assert "victim" in lru, "bob holds 20 of a 50 share: mallory may not evict it"
    assert lru.held_by() == {"bob": 20, "mallory": 60}


def test_a_user_over_their_share_is_evicted_for_a_newcomer():
    lru = store()
    for key in "abc":
        lru.put(key, 30, "mallory")
    lru.put("mine", 30, "bob")
    assert "mine" in lru and "a" not in lru and lru.held_by()["mallory"] == 60


def test_no_room_within_others_shares_is_refused():
    lru = store()
    lru.put("a", 30, "alice")
    lru.put("b", 30, "bob")
    with pytest.raises(Full) as full:
        lru.put("c", 50, "carol")  # a share is 100 / 3: alice and bob are within theirs, only 40 is free
    assert (full.value.needed, full.value.free, full.value.share) == (50, 40, 33)
    assert "a" in lru and "b" in lru and "c" not in lru


def test_a_shared_entry_counts_half_for_each_holder_and_stays_while_one_holder_is_within_share():
    lru = store()
    lru.put("slide", 40, "bob")
    assert lru.get("slide", "mallory") == 40
    assert lru.held_by() == {"bob": 20, "mallory": 20}
    for index in range(5):
        lru.put(f"flood-{index}", 30, "mallory")
    assert "slide" in lru, "bob is within his share: mallory cannot evict the entry they share"


def test_setdefault_returns_the_value_already_stored_and_adds_the_holder():
    lru = store()
    lru.setdefault("image", 10, "alice")
    assert lru.setdefault("image", 10, "bob") == 10 and len(lru) == 1
    assert lru.held_by() == {"alice": 5, "bob": 5}


def test_put_replaces_and_counts_bytes_once():
    lru = store()
    lru.put("a", 40, "alice")
    lru.put("a", 10, "alice")
    assert lru.total_bytes == 10 and len(lru) == 1


def test_a_value_larger_than_the_budget_is_refused():
    with pytest.raises(Full):
        store().put("huge", 101, "alice")
