"""Thank-you digests: the fans whose items were shed in a room and window, thanked in one line. Pure.

Items shed for pacing or rate limits (`items.shed`) are gathered per room over a window
(`DigestWindow`); at its end one in-character line thanks those fans by name ("Thank you
Aki, Ben and Chen for the drawings!"). A fan is named once however many items they sent;
at most `max_names` are named, the rest are "and N more"; a fan moderation blocked is
never named (`blocked` ids are removed). Stale and duplicate items are not thanked: a
fan waited too long, or sent the same thing twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from stream.contracts import ShedItem
from stream.reasons import ShedReason

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

    def add(self, shed: ShedItem) -> bool:
        """Take a shed item in; False for one not thanked (stale, duplicate)."""
        if shed.reason not in THANKED_REASONS or shed.room != self.room:
            return False
        self.names.setdefault(shed.user.id, shed.user.display_name)
        self.kinds.add(shed.kind)
        return True


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
