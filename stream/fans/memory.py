"""The tiers' memory of fans: the latest profiles from `fans.profiles`, in a bounded map. Pure.

The fans app publishes each fan's profile to the compacted `fans.profiles` topic (key
"room user", a tombstone once forgotten); every tier reads it into a `FanMemory`. A lookup
never waits: a fan whose profile is not there (new, forgotten, evicted, or not read yet)
is answered as a first-timer and counted as a miss; a hit is a fan she remembers from an
earlier item. At most `capacity` profiles are held,
the least recently used going first; a profile older than `retention_s` is not used.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime

import orjson

from stream.contracts import Submission
from stream.fans.profiles import FanProfile, describe, earlier_items, profile_key
from stream.persona.card import FanMemoryLines


class FanMemory:
    def __init__(self, capacity: int, retention_s: float) -> None:
        self.capacity = capacity
        self.retention_s = retention_s
        self._profiles: OrderedDict[str, FanProfile] = OrderedDict()
        self._lock = threading.Lock()  # the model thread looks up while the event loop applies
        self.unreadable = 0

    def apply(self, key: bytes | str | None, value: bytes | None) -> None:
        """One record of `fans.profiles`: a profile, or a tombstone (None) that forgets the fan."""
        name = key.decode(errors="replace") if isinstance(key, bytes) else key
        if not name:
            self.unreadable += 1
            return
        if value is None:
            with self._lock:
                self._profiles.pop(name, None)
            return
        try:
            profile = FanProfile.from_json(orjson.loads(value))
        except (orjson.JSONDecodeError, TypeError, ValueError, KeyError):
            self.unreadable += 1
            return
        with self._lock:
            self._profiles[name] = profile
            self._profiles.move_to_end(name)
            while len(self._profiles) > self.capacity:
                self._profiles.popitem(last=False)

    def lookup(self, room: str, user_id: str, now: datetime) -> FanProfile | None:
        key = profile_key(room, user_id)
        with self._lock:
            profile = self._profiles.get(key)
            if profile is None:
                return None
            if (now - profile.last_seen).total_seconds() > self.retention_s:
                del self._profiles[key]
                return None
            self._profiles.move_to_end(key)
            return profile

    def line_for(self, submission: Submission, lines: FanMemoryLines, now: datetime) -> tuple[str, bool]:
        """The prompt line about the fan sending `submission`, and whether she remembered them from before (a hit).

        A miss is a fan with nothing remembered before this item: new, forgotten, or not read yet.
        """
        profile = self.lookup(submission.room, submission.user.id, now)
        hit = earlier_items(profile, submission.item_id) >= 1
        return describe(profile, submission.item_id, now, lines, submission.user.display_name), hit

    def __len__(self) -> int:
        return len(self._profiles)
