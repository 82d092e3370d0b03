"""Thank-you digests: the fans whose items were shed in a room and window, thanked in one line. Pure.

Items shed for pacing or rate limits (`items.shed`) are gathered per room over a window
(`DigestWindow`); at its end one in-character line thanks those fans by name ("Thank you
Aki, Ben and Chen for the drawings!"). A fan is named once however many items they sent;
at most `max_names` are named, the rest are "and N more"; a fan moderation blocked is
never named (`blocked` ids are removed). Stale and duplicate items are not thanked: a
fan waited too long, or sent the same thing twice.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from stream.contracts import Cue, Reply, ShedItem, Timings, UserRef, new_id
from stream.reasons import RouteReason, ShedReason

DIGEST_MODEL_ID = "digest-template"  # a digest is written from a template, not by a model
MAX_ITEMS_REMEMBERED = 500  # item ids kept per window, so an item read twice is counted once

THANKED_REASONS = frozenset({ShedReason.USER_RATE_LIMITED, ShedReason.ROOM_PACED})

_LINES = {
    "en": ("Thank you {names} for {what}!", "{what_cap} from {names}: thank you, I saw them all!"),
    "zh": ("谢谢{names}的{what}！",),
    "ja": ("{names}、{what}ありがとう！",),
}
_WHAT = {
    "en": {"fan_image": "the drawings", "danmaku_screenshot": "the comments", "mixed": "everything you sent"},
    "zh": {"fan_image": "画", "danmaku_screenshot": "弹幕", "mixed": "礼物和弹幕"},
    "ja": {"fan_image": "絵", "danmaku_screenshot": "コメント", "mixed": "たくさんの投稿"},
}
_AND = {"en": (", ", " and "), "zh": ("、", "和"), "ja": ("、", "と")}
_MORE = {"en": "{n} more", "zh": "还有{n}位", "ja": "ほか{n}人"}


@dataclass
class DigestWindow:
    """The shed items of one room in one window, in the order they came."""

    room: str
    names: dict[str, str] = field(default_factory=dict)  # user id -> display name, first seen first
    kinds: set[str] = field(default_factory=set)
    opened_ms: int = 0  # when its first item was shed; it closes `window` later
    items: list[str] = field(default_factory=list)

    def first_time(self, item_id: str) -> bool:
        """True for an item this window has not seen (and remember it); False for one read again."""
        if item_id in self.items:
            return False
        self.items = [*self.items, item_id][-MAX_ITEMS_REMEMBERED:]
        return True

    def add(self, shed: ShedItem) -> bool:
        """Take a shed item in; False for one not thanked (stale, duplicate, another room's)."""
        if shed.reason not in THANKED_REASONS or shed.room != self.room:
            return False
        self.names.setdefault(shed.user.id, shed.user.display_name)
        self.kinds.add(shed.kind)
        return True

    def drop(self, user_id: str) -> None:
        """Leave a fan out (moderation blocked them, or they asked to be forgotten)."""
        self.names.pop(user_id, None)

    def to_json(self) -> dict:
        return {"room": self.room, "names": self.names, "kinds": sorted(self.kinds), "opened_ms": self.opened_ms,
                "items": self.items}

    @classmethod
    def from_json(cls, data: dict) -> DigestWindow:
        return cls(room=data["room"], names=dict(data["names"]), kinds=set(data["kinds"]),
                   opened_ms=data["opened_ms"], items=list(data["items"]))


def digest_line(window: DigestWindow, language: str, max_names: int, blocked: Iterable[str] = (),
                variant: int = 0) -> str | None:
    """The thank-you line for a window, in `language` (en when she has no template in it); None for nobody."""
    gone = set(blocked)
    names = [name for user, name in window.names.items() if user not in gone]
    if not names:
        return None
    language = language if language in _LINES else "en"
    shown, rest = names[:max_names], len(names) - max_names
    if rest > 0:
        shown.append(_MORE[language].format(n=rest))
    sep, last = _AND[language]
    joined = shown[0] if len(shown) == 1 else sep.join(shown[:-1]) + last + shown[-1]
    kind = next(iter(window.kinds)) if len(window.kinds) == 1 else "mixed"
    what = _WHAT[language][kind]
    template = _LINES[language][variant % len(_LINES[language])]
    return template.format(names=joined, what=what, what_cap=what[:1].upper() + what[1:])


def digest_item_id(room: str, opened_ms: int) -> str:
    """The same id for the same room and window, so a digest published twice is shown once."""
    return "digest-" + hashlib.sha256(f"{room}\0{opened_ms}".encode()).hexdigest()[:24]


def digest_reply(window: DigestWindow, text: str, motion: str, persona_version: str | None,
                 now: datetime) -> Reply:
    """The digest as a reply of its own role, to the whole room."""
    opened = datetime.fromtimestamp(window.opened_ms / 1000, UTC)
    return Reply(
        reply_id=new_id(), item_id=digest_item_id(window.room, window.opened_ms), room=window.room, role="digest",
        tier="fallback", route_reason=RouteReason.SIMPLE, model_id=DIGEST_MODEL_ID, text=text,
        cue=Cue(emotion="happy", motion=motion),
        timings=Timings(item_created_at=opened, queue_ms=0.0, admission_ms=0.0, inference_ms=0.0, replied_at=now),
        in_reply_to=UserRef(id=window.room, display_name="everyone"), persona_version=persona_version,
    )
