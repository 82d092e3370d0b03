import asyncio

import pytest

from stream.flow import Backpressure, MicroBatcher, OffsetLedger


def test_commit_point_waits_for_the_earliest_unfinished_offset():
    ledger = OffsetLedger()
    for offset in (10, 11, 12):
        ledger.track("p0", offset)
    ledger.finish("p0", 12)
    ledger.finish("p0", 11)
    assert ledger.committable() == {}  # 10 is still in the model: committing 13 would lose it
    ledger.finish("p0", 10)
    assert ledger.committable() == {"p0": 13}
    assert ledger.in_flight() == 0


def test_committed_points_are_not_offered_again():
    ledger = OffsetLedger()
    ledger.track("p0", 0)
    ledger.finish("p0", 0)
    ledger.mark_committed(ledger.committable())
    assert ledger.committable() == {}


def test_partitions_are_independent_and_revoked_ones_are_forgotten():
    ledger = OffsetLedger()
    ledger.track("a", 0)
    ledger.track("b", 5)
    ledger.finish("b", 5)
    ledger.forget(["a"])
    ledger.finish("a", 0)  # finishing after revocation is ignored
    assert ledger.committable() == {"b": 6}


def test_backpressure_pauses_at_high_and_resumes_at_low():
    bp = Backpressure(high=4, low=1)
    assert [bp.update(d) for d in (0, 3, 4, 5, 3, 2, 1, 0, 4)] == [None, None, "pause", None, None, None, "resume", None, "pause"]


def test_backpressure_rejects_inverted_watermarks():
    with pytest.raises(ValueError):
        Backpressure(high=2, low=2)


async def test_batches_fill_up_to_the_max_size():
    batcher: MicroBatcher[int] = MicroBatcher(max_size=3, max_wait_s=5)
    for i in range(7):
        batcher.put_nowait(i)
    assert await batcher.next_batch() == [0, 1, 2]
    assert await batcher.next_batch() == [3, 4, 5]


async def test_a_lone_item_goes_out_after_the_max_wait():
    batcher: MicroBatcher[int] = MicroBatcher(max_size=8, max_wait_s=0.05)
    batcher.put_nowait(1)
    assert await asyncio.wait_for(batcher.next_batch(), 2) == [1]


async def test_drain_removes_items_of_revoked_partitions_only():
    batcher: MicroBatcher[int] = MicroBatcher(max_size=8, max_wait_s=0)
    for i in range(6):
        batcher.put_nowait(i)
    removed = batcher.drain(keep=lambda i: i % 2 == 0)
    assert removed == [1, 3, 5] and await batcher.next_batch() == [0, 2, 4]
