"""The tiers' bounded memory of fans: latest profile wins, tombstones forget, LRU bound, retention."""

from __future__ import annotations

from datetime import timedelta

import orjson

from stream.contracts import utcnow
from stream.fans.memory import FanMemory
from stream.fans.profiles import profile_key, record_item
from stream.persona.card import FanMemoryLines
from tests.fans.test_profiles import item


def profile_record(room="r1", user="u1", name="Aki", ago_s=0.0):
    profile, _ = record_item(None, item(room=room, user=user, name=name, ago_s=ago_s))
    return profile_key(room, user).encode(), orjson.dumps(profile.to_json())


def test_a_profile_is_remembered_until_its_tombstone():
    memory = FanMemory(capacity=10, retention_s=3600)
    memory.apply(*profile_record())
    assert memory.lookup("r1", "u1", utcnow()).display_name == "Aki"
    line, hit = memory.line_for(item(user="u1", name="Aki"), FanMemoryLines(), utcnow())
    assert hit and line.startswith("Aki is a regular: 1 earlier item(s)")
    memory.apply(profile_key("r1", "u1").encode(), None)
    assert memory.lookup("r1", "u1", utcnow()) is None
    line, hit = memory.line_for(item(user="u1", name="Aki"), FanMemoryLines(), utcnow())
    assert not hit and line == FanMemoryLines().first_time.format(name="Aki")


def test_the_least_recently_used_go_first_and_stale_profiles_are_not_used():
    memory = FanMemory(capacity=2, retention_s=3600)
    for user in ("a", "b"):
        memory.apply(*profile_record(user=user))
    memory.lookup("r1", "a", utcnow())  # a used: b is the least recently used
    memory.apply(*profile_record(user="c"))
    assert len(memory) == 2 and memory.lookup("r1", "b", utcnow()) is None
    memory.apply(*profile_record(user="old", ago_s=7200))
    assert memory.lookup("r1", "old", utcnow()) is None
    assert memory.lookup("r1", "old", utcnow() - timedelta(hours=2)) is None  # dropped at the first stale lookup


def test_an_unreadable_record_is_counted_and_changes_nothing():
    memory = FanMemory(capacity=2, retention_s=3600)
    memory.apply(b"r1 u1", b"{not json")
    memory.apply(None, b"{}")
    assert memory.unreadable == 2 and len(memory) == 0
