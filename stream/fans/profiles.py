"""A fan's memory: what she remembers of someone in a room. Pure, bounded, serialisable.

A profile is keyed by room and user (`profile_key`): the same person is a stranger in a
room they never visited. Texts are cut (`MAX_REMEMBERED_CHARS`) so a profile stays small
whatever fans write; `describe` turns one into the line a tier adds to her prompt, with
the persona's templates (`FanMemoryLines`). A profile keeps its fan's last item and the
one before it: a tier may read it before or after the fans app has counted the item being
answered, and either way she remembers the time before. Kafka delivers at least once, so
the last item ids are kept (`RECENT_ITEMS`) and an item read again counts once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from stream.contracts import Identifier, ItemKind, Reply, Submission, UserRef
from stream.draw.routing import draw_request
from stream.persona.card import FanMemoryLines
from stream.persona.reading import neutralise_fan_text

MAX_REMEMBERED_CHARS = 120
RECENT_ITEMS = 16


class SentItem(BaseModel):
    """What the fans app reads of a Submission: who sent what, when; the image is skipped, not decoded.

    The tiers validate and dead-letter submissions; the fans app only counts the ones that parse.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    item_id: Identifier
    kind: ItemKind
    room: Identifier
    user: UserRef
    text: str | None = Field(default=None, max_length=500)
    created_at: AwareDatetime


def profile_key(room: str, user_id: str) -> str:
    """One fan in one room (room and user ids never hold a space: they are Identifiers)."""
    return f"{room} {user_id}"


def _cut(text: str | None) -> str | None:
    if text is None:
        return None
    text = " ".join(text.split())
    return text if len(text) <= MAX_REMEMBERED_CHARS else text[: MAX_REMEMBERED_CHARS - 1] + "…"


@dataclass(frozen=True)
class FanProfile:
    room: str
    user_id: str
    display_name: str
    first_seen: datetime
    last_seen: datetime
    items_sent: int = 0
    replies_received: int = 0
    last_item_id: str | None = None
    last_sent_kind: str | None = None  # fan_image | danmaku_screenshot
    last_sent_text: str | None = None
    last_reply_text: str | None = None  # what she said last (an answer, not a holding line)
    last_reply_item_id: str | None = None  # the item she said it about
    previous_seen: datetime | None = None  # the item before the last one
    previous_sent_kind: str | None = None
    previous_sent_text: str | None = None
    previous_reply_text: str | None = None  # what she said before `last_reply_text`
    recent_items: tuple[str, ...] = ()

    def to_json(self) -> dict:
        data = asdict(self)
        for name in ("first_seen", "last_seen", "previous_seen"):
            data[name] = getattr(self, name).isoformat() if getattr(self, name) else None
        data["recent_items"] = list(self.recent_items)
        return data

    @classmethod
    def from_json(cls, data: dict) -> FanProfile:
        times = {name: datetime.fromisoformat(data[name]) if data.get(name) else None
                 for name in ("first_seen", "last_seen", "previous_seen")}
        return cls(**{**data, **times, "recent_items": tuple(data.get("recent_items", ()))})


def record_item(profile: FanProfile | None, submission: Submission | SentItem) -> tuple[FanProfile, bool]:
    """The profile after the fan sent `submission` (a new one for a first item); False for an item counted before."""
    at = submission.created_at
    if profile is None:
        profile = FanProfile(room=submission.room, user_id=submission.user.id,
                             display_name=submission.user.display_name, first_seen=at, last_seen=at)
    elif submission.item_id in profile.recent_items:
        return profile, False
    if profile.last_item_id is not None:
        profile = replace(profile, previous_seen=profile.last_seen, previous_sent_kind=profile.last_sent_kind,
                          previous_sent_text=profile.last_sent_text)
    return replace(
        profile,
        display_name=submission.user.display_name,
        last_seen=max(profile.last_seen, at),
        items_sent=profile.items_sent + 1,
        last_item_id=submission.item_id,
        last_sent_kind=submission.kind,
        last_sent_text=_cut(submission.text),
        recent_items=(*profile.recent_items, submission.item_id)[-RECENT_ITEMS:],
    ), True


def record_reply(profile: FanProfile | None, reply: Reply) -> FanProfile | None:
    """The profile after she answered the fan; holding lines, unknown fans and a second answer change nothing."""
    if profile is None or reply.role != "answer" or reply.item_id == profile.last_reply_item_id:
        return profile
    return replace(profile, replies_received=profile.replies_received + 1, last_reply_text=_cut(reply.text),
                   last_reply_item_id=reply.item_id, previous_reply_text=profile.last_reply_text)


def earlier_items(profile: FanProfile | None, item_id: str) -> int:
    """How many items the fan sent before `item_id` (the profile may or may not have it yet)."""
    if profile is None:
        return 0
    return profile.items_sent - (profile.last_item_id == item_id)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return "just now"
    if seconds < 2 * 3600:
        return f"{int(seconds // 60)} minutes ago"
    if seconds < 2 * 86400:
        return f"{int(seconds // 3600)} hours ago"
    return f"{int(seconds // 86400)} days ago"


def _what(kind: str | None) -> str:
    return "a comment wall screenshot" if kind == "danmaku_screenshot" else "a picture"


def describe(profile: FanProfile | None, item_id: str, now: datetime, lines: FanMemoryLines,
             name: str | None = None) -> str:
    """The line for her prompt about the fan sending `item_id`: a first-timer, or a regular she remembers.

    `profile` may already count `item_id` or not yet; what she remembers is the time before it.
    """
    earlier = earlier_items(profile, item_id)
    who = neutralise_fan_text(name or (profile.display_name if profile else "this fan"), 64)
    if profile is None or earlier < 1:
        return lines.first_time.format(name=who)
    parts = [lines.regular.format(name=who, earlier=earlier,
                                  first_seen=_ago((now - profile.first_seen).total_seconds()))]
    if profile.last_item_id != item_id:  # the profile's last item is an earlier one
        seen, kind, text = profile.last_seen, profile.last_sent_kind, profile.last_sent_text
    else:
        seen, kind, text = profile.previous_seen, profile.previous_sent_kind, profile.previous_sent_text
    if seen is not None:
        said = f" and wrote: {neutralise_fan_text(text, MAX_REMEMBERED_CHARS)}" if text else "."
        if text and draw_request(text) is not None:
            # Not quoted: an old request read back in her prompt would read as a request now.
            said = " and asked you for a picture."
        parts.append(lines.last_sent.format(last_seen=_ago((now - seen).total_seconds()), what=_what(kind), said=said))
    answer = profile.last_reply_text if profile.last_reply_item_id != item_id else profile.previous_reply_text
    if answer:
        parts.append(lines.last_answer.format(answer=answer))
    return " ".join(parts)
