"""Which answers fans liked, joined with the items they answered: the pairs a dataset export writes.

Pure: records go in as decoded contracts, pairs and the reasons for leaving others out come
out; reading the topics is `producers.dataset_export`'s job. Feed an `ExportJoin` every
reply, feedback, review decision, retraction, moderation record and forget request first,
then the items it `wants` (only those images are kept in memory), then take its `result`.

An answer (a reply of role "answer") is exported when it is in scope (its room, replied at
or after `since`) and

- it has at least `min_likes` likes (each feedback id counted once) or an operator
  approved it in review (then with the text as approved);
- and nothing excludes it. Each left-out answer is counted once, under the first reason
  that applies, in `Exclusion`'s order: its fan asked to be forgotten in that room;
  moderation blocked the item or the reply; an operator rejected it in review; it was
  retracted; a fan reported it; it is a persona line, not a model's answer about the
  picture; too few likes and no approval; the item's picture is no longer on the items
  topics (they keep a few hours only); the picture cannot be decoded.

A decision, feedback or retraction whose reply was never read changes nothing: pairs are
made from the replies topic, which keeps replies longer than the items topics keep pictures.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from stream.contracts import Feedback, ForgetRequest, ModerationRecord, Reply, Retraction, ReviewDecision, Submission
from stream.errors import IdolstreamError, InvalidImage
from stream.images import ALLOWED_FORMATS, ImageLimits, admit_image
from stream.reasons import ModerationAction, ModerationSide

__all__ = [
    "ExportError", "ExportJoin", "ExportPair", "ExportResult", "ExportRules", "Exclusion", "IMAGE_SUFFIXES",
    "parse_since", "summary_lines",
]

IMAGE_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}


class ExportError(IdolstreamError):
    """An export cannot run as asked: a bad --since, an out directory in the way, a broker out of reach."""


class Exclusion(StrEnum):
    """Why an answer in scope was left out; an answer is counted under the first that applies."""

    FORGOTTEN = "forgotten"  # the fan asked to be forgotten in that room
    BLOCKED = "blocked"  # moderation blocked the fan's item or this reply
    REJECTED = "rejected"  # an operator rejected it in review
    RETRACTED = "retracted"
    REPORTED = "reported"  # at least one fan reported it
    PERSONA_LINE = "persona_line"  # tier "fallback": a canned line, not an answer about the picture
    NOT_LIKED = "not_liked"  # fewer likes than asked for, and not approved in review
    IMAGE_GONE = "image_gone"  # liked, but the picture aged out of the items topics
    IMAGE_UNREADABLE = "image_unreadable"  # liked, but the picture cannot be decoded


@dataclass(frozen=True)
class ExportRules:
    since: datetime | None = None  # answers replied at or after this; None: all
    room: str | None = None  # one room; None: every room
    min_likes: int = 1

    def __post_init__(self) -> None:
        if self.min_likes < 0:
            raise ExportError("--min-likes must be 0 or more")
        if self.since is not None and self.since.tzinfo is None:
            raise ExportError("since must carry its UTC offset")


@dataclass(frozen=True)
class ExportPair:
    item: Submission
    reply: Reply
    text: str  # as an operator approved it, else as it went out
    likes: int
    approved: bool
    image: bytes  # the picture's file bytes, exactly as the fan sent them
    image_suffix: str  # of the picture's real format (".png", ".jpg", ...)

    @property
    def target(self) -> str:
        """Her answer as the model writes it: the emotion tag the reply's cue came from, then the text."""
        return f"[{self.reply.cue.emotion}] {self.text}"


@dataclass
class ExportResult:
    pairs: list[ExportPair]  # in the order they were answered
    answers: int  # answers in scope (room, since), exported or not
    excluded: Counter[Exclusion] = field(default_factory=Counter)

    @property
    def liked(self) -> int:
        return sum(1 for pair in self.pairs if not pair.approved)

    @property
    def approved(self) -> int:
        return sum(1 for pair in self.pairs if pair.approved)


def parse_since(text: str, now: datetime) -> datetime:
    """An ISO-8601 time (no offset: UTC) or a span back from `now` ("90m", "6h", "2d", "1w")."""
    relative = _RELATIVE.match(text)
    if relative:
        return now - timedelta(seconds=float(relative.group(1)) * _UNIT_S[relative.group(2).lower()])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ExportError(
            f"--since {text!r} is neither an ISO-8601 time (2025-05-01T18:00:00+09:00) "
            "nor a span back from now (30m, 6h, 2d, 1w)"
        ) from exc
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _key(room: str, item_id: str) -> tuple[str, str]:
    return (room, item_id)


class ExportJoin:
    """The state an export builds from the topics; see the module's docstring for the order."""

    def __init__(self, rules: ExportRules, image_limits: ImageLimits | None = None) -> None:
        self.rules = rules
        self.image_limits = image_limits or ImageLimits()
        self._replies: dict[str, Reply] = {}  # reply id -> the first record of it, answers in scope only
        self._feedback_ids: set[str] = set()
        self._likes: Counter[str] = Counter()
        self._reports: Counter[str] = Counter()
        self._approved: dict[str, str] = {}  # reply id -> the text as approved
        self._rejected: set[str] = set()
        self._retracted: set[str] = set()
        self._blocked_items: set[tuple[str, str]] = set()
        self._blocked_replies: set[str] = set()
        self._forgotten: set[tuple[str, str]] = set()  # (room, user id)
        self._items: dict[tuple[str, str], Submission] = {}
        self._wanted: set[tuple[str, str]] | None = None  # items pairs need; None: to work out again

    def _changed(self) -> None:
        self._wanted = None

    # -- what the small topics say --------------------------------------------------

    def add_reply(self, reply: Reply) -> None:
        if reply.role != "answer":
            return
        if self.rules.room is not None and reply.room != self.rules.room:
            return
        if self.rules.since is not None and reply.timings.replied_at < self.rules.since:
            return
        # The same reply id again is a redelivery (or an approved reply sent after review): one pair.
        self._replies.setdefault(reply.reply_id, reply)
        self._changed()

    def add_feedback(self, feedback: Feedback) -> None:
        if feedback.feedback_id in self._feedback_ids:
            return
        self._feedback_ids.add(feedback.feedback_id)
        (self._likes if feedback.kind == "like" else self._reports)[feedback.reply_id] += 1
        self._changed()

    def add_decision(self, decision: ReviewDecision) -> None:
        if decision.decision == "reject":
            self._rejected.add(decision.reply_id)
        elif decision.after:
            self._approved[decision.reply_id] = decision.after
        self._changed()

    def add_retraction(self, retraction: Retraction) -> None:
        self._retracted.add(retraction.reply_id)
        self._changed()

    def add_moderation(self, record: ModerationRecord) -> None:
        if record.action != ModerationAction.BLOCK:
            return
        if record.reply_id is not None:
            self._blocked_replies.add(record.reply_id)
        # A verdict on what the fan sent, or on a reply it does not name, blocks the whole item.
        if record.side == ModerationSide.FAN or record.reply_id is None:
            self._blocked_items.add(_key(record.room, record.item_id))
        self._changed()

    def add_forget(self, request: ForgetRequest) -> None:
        self._forgotten.add((request.room, request.user_id))
        self._changed()

    # -- the pictures ------------------------------------------------------------------

    def wants(self, room: str, item_id: str) -> bool:
        """Whether a pair that passes every rule read so far needs this item, and it is not kept yet."""
        if self._wanted is None:
            self._wanted = {_key(r.room, r.item_id) for r in self._replies.values() if self._exclusion(r) is None}
        key = _key(room, item_id)
        return key in self._wanted and key not in self._items

    def add_item(self, item: Submission) -> None:
        """Keep the item when a pair needs it (its first record: a producer's retry repeats it)."""
        if self.wants(item.room, item.item_id):
            self._items[_key(item.room, item.item_id)] = item

    # -- the result --------------------------------------------------------------------

    def _exclusion(self, reply: Reply) -> Exclusion | None:
        """The first rule that leaves the reply out, not looking at its picture; None when none does."""
        reply_id, key = reply.reply_id, _key(reply.room, reply.item_id)
        item = self._items.get(key)
        fans = {reply.in_reply_to.id} | ({item.user.id} if item else set())
        if any((reply.room, fan) in self._forgotten for fan in fans):
            return Exclusion.FORGOTTEN
        if key in self._blocked_items or reply_id in self._blocked_replies:
            return Exclusion.BLOCKED
        if reply_id in self._rejected:
            return Exclusion.REJECTED
        if reply_id in self._retracted:
            return Exclusion.RETRACTED
        if self._reports[reply_id]:
            return Exclusion.REPORTED
        if reply.tier == "fallback":
            return Exclusion.PERSONA_LINE
        if reply_id not in self._approved and self._likes[reply_id] < self.rules.min_likes:
            return Exclusion.NOT_LIKED
        return None

    def result(self) -> ExportResult:
        replies = sorted(self._replies.values(), key=lambda r: (r.timings.replied_at, r.reply_id))
        result = ExportResult(pairs=[], answers=len(replies))
        for reply in replies:
            pair_or_why = self._pair(reply)
            if isinstance(pair_or_why, Exclusion):
                result.excluded[pair_or_why] += 1
            else:
                result.pairs.append(pair_or_why)
        return result

    def _pair(self, reply: Reply) -> ExportPair | Exclusion:
        why = self._exclusion(reply)
        if why is not None:
            return why
        item = self._items.get(_key(reply.room, reply.item_id))
        if item is None:
            return Exclusion.IMAGE_GONE
        raw = item.image.raw_bytes()
        try:
            # The checks `idolstream models finetune` makes when it loads the picture.
            admitted = admit_image(raw, self.image_limits)
        except InvalidImage:
            return Exclusion.IMAGE_UNREADABLE
        return ExportPair(
            item=item, reply=reply, text=self._approved.get(reply.reply_id, reply.text),
            likes=self._likes[reply.reply_id], approved=reply.reply_id in self._approved, image=raw,
            image_suffix=IMAGE_SUFFIXES[ALLOWED_FORMATS[admitted.format]],
        )


def summary_lines(
    result: ExportResult, written_to: str, min_likes: int, undecodable: Mapping[str, int], items_kept_h: float
) -> list[str]:
    """What the export says when it is done: the pairs written, and how many answers each reason left out."""
    lines = [
        f"wrote {len(result.pairs)} pair{'' if len(result.pairs) == 1 else 's'} to {written_to} "
        f"({result.liked} liked, {result.approved} approved in review) out of {result.answers} answers in scope"
    ]
    left_out = sum(result.excluded.values())
    reasons = ", ".join(f"{why} {result.excluded[why]}" for why in Exclusion if result.excluded[why])
    lines.append(f"left out {left_out}" + (f": {reasons}" if reasons else ""))
    if result.excluded[Exclusion.NOT_LIKED]:
        lines.append(f"not_liked: fewer than {min_likes} like{'' if min_likes == 1 else 's'} "
                     "and not approved in review (--min-likes)")
    gone = result.excluded[Exclusion.IMAGE_GONE]
    if gone:
        lines.append(
            f"image_gone: {gone} liked pair{' was' if gone == 1 else 's were'} not exported because the picture "
            f"had aged out of the items topics (kept {items_kept_h:g} h by default); export more often to keep them"
        )
    skipped = sum(undecodable.values())
    if skipped:
        where = ", ".join(f"{topic} {n}" for topic, n in undecodable.items() if n)
        lines.append(f"skipped {skipped} undecodable record{'' if skipped == 1 else 's'} ({where})")
    return lines
