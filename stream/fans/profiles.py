"""A fan's memory: what she remembers of someone in a room. Pure, bounded, serialisable.

A profile is keyed by room and user (`profile_key`): the same person is a stranger in a
room they never visited. Texts are cut (`MAX_REMEMBERED_CHARS`) so a profile stays small
whatever fans write; `describe` turns one into the line a tier adds to her prompt.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from datetime import datetime

from stream.contracts import Reply, Submission

MAX_REMEMBERED_CHARS = 120


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

    def to_json(self) -> dict:
        data = asdict(self)
        data["first_seen"], data["last_seen"] = self.first_seen.isoformat(), self.last_seen.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict) -> FanProfile:
        return cls(**{**data, "first_seen": datetime.fromisoformat(data["first_seen"]),
                      "last_seen": datetime.fromisoformat(data["last_seen"])})


def record_item(profile: FanProfile | None, submission: Submission) -> FanProfile:
    """The profile after the fan sent `submission` (a new one for a first item)."""
    at = submission.created_at
    if profile is None:
        profile = FanProfile(room=submission.room, user_id=submission.user.id,
                             display_name=submission.user.display_name, first_seen=at, last_seen=at)
    return replace(
        profile,
        display_name=submission.user.display_name,
        last_seen=max(profile.last_seen, at),
        items_sent=profile.items_sent + (submission.item_id != profile.last_item_id),  # a redelivery counts once
        last_item_id=submission.item_id,
        last_sent_kind=submission.kind,
        last_sent_text=_cut(submission.text),
    )


def record_reply(profile: FanProfile | None, reply: Reply) -> FanProfile | None:
    """The profile after she answered the fan; holding lines and unknown fans change nothing."""
    if profile is None or reply.role != "answer":
        return profile
    return replace(profile, replies_received=profile.replies_received + 1, last_reply_text=_cut(reply.text))


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


def describe(profile: FanProfile | None, item_id: str, now: datetime) -> str:
    """The line for her prompt about the fan sending `item_id`: a first-timer, or a regular she remembers."""
    earlier = earlier_items(profile, item_id)
    if profile is None or earlier < 1:
        return "This is their first time here: welcome them warmly."
    parts = [f"{profile.display_name} is a regular: {earlier} earlier item(s), "
             f"first seen {_ago((now - profile.first_seen).total_seconds())}."]
    if profile.last_item_id != item_id:  # the profile's last item is an earlier one: say what it was
        what = "a comment wall screenshot" if profile.last_sent_kind == "danmaku_screenshot" else "a picture"
        parts.append(f"Last time ({_ago((now - profile.last_seen).total_seconds())}) they sent {what}"
                     + (f" and wrote: {profile.last_sent_text}" if profile.last_sent_text else "."))
    if profile.last_reply_text:
        parts.append(f"You answered: {profile.last_reply_text}")
    return " ".join(parts)
