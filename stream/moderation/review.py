"""The review queue: held replies waiting for an operator, and the decisions taken on them. Pure.

The console builds it from two topics read from their start: `replies.held` adds a
pending reply, `review.decisions` settles one (whichever comes first: after a restart a
decision may be read before the reply it settles). So any number of consoles, restarted
at any time, show the same queue.

Bounded: at most `capacity` pending replies are listed, oldest first. A held reply
beyond that is counted (`unlisted`) and not listed until older ones are decided and the
console rereads the topic; it is never dropped from Kafka.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from stream.contracts import HeldReply, ReviewDecision, new_id


class ReviewError(Exception):
    """A decision the queue refuses; `status` is the HTTP status the console answers with."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class Decided:
    """What an operator's decision produces: the audit record, and the reply to send when approved."""

    decision: ReviewDecision
    reply: object | None  # contracts.Reply when approved


class ReviewQueue:
    def __init__(self, capacity: int = 2000, remembered: int = 20_000) -> None:
        self.capacity = capacity
        self._pending: OrderedDict[str, HeldReply] = OrderedDict()
        # Reply ids already decided (bounded): a held reply read after its decision is not pending.
        self._decided: OrderedDict[str, None] = OrderedDict()
        self._remembered = remembered
        self.unlisted = 0

    def __len__(self) -> int:
        return len(self._pending)

    def held(self, held: HeldReply) -> bool:
        """Add a held reply; False when it was decided already, is listed already, or the queue is full."""
        reply_id = held.reply.reply_id
        if reply_id in self._decided or reply_id in self._pending:
            return False
        if len(self._pending) >= self.capacity:
            self.unlisted += 1
            return False
        self._pending[reply_id] = held
        return True

    def settled(self, decision: ReviewDecision) -> None:
        """A decision read back from Kafka (this console's or another's)."""
        self._pending.pop(decision.reply_id, None)
        self._decided[decision.reply_id] = None
        while len(self._decided) > self._remembered:
            self._decided.popitem(last=False)

    def pending(self) -> list[HeldReply]:
        """Oldest first."""
        return sorted(self._pending.values(), key=lambda held: held.held_at)

    def oldest_age_s(self, now: datetime) -> float:
        return max(((now - held.held_at).total_seconds() for held in self._pending.values()), default=0.0)

    def decide(self, reply_id: str, operator: str, decision: str, now: datetime, text: str | None = None) -> Decided:
        """An operator's decision on a pending reply: the audit record, and the reply to send if approved.

        The queue forgets the reply at once, so a second click (or a second operator) gets 409.
        """
        if decision not in ("approve", "reject"):
            raise ReviewError(400, "decision must be approve or reject")
        if reply_id in self._decided:
            raise ReviewError(409, f"reply {reply_id} was decided already")
        held = self._pending.get(reply_id)
        if held is None:
            raise ReviewError(404, f"no reply {reply_id} is waiting for review")
        before = held.reply.text
        after = None
        reply = None
        if decision == "approve":
            after = " ".join((text if text is not None else before).split())
            if not after:
                raise ReviewError(400, "an approved reply needs some text")
            if len(after) > 2000:
                raise ReviewError(400, "an approved reply fits in 2000 characters")
            reply = held.reply.model_copy(update={"text": after})
        record = ReviewDecision(
            decision_id=new_id(), reply_id=reply_id, item_id=held.reply.item_id, room=held.reply.room,
            operator=operator, decision=decision, edited=after is not None and after != before, before=before,
            after=after, held_at=held.held_at, at=now,
        )
        self.settled(record)
        return Decided(record, reply)
