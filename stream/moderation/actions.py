"""What a moderation check decides about a line, in order of severity."""

from __future__ import annotations

from enum import StrEnum


class ModerationAction(StrEnum):
    """`allow`: show it; `review`: hold it for an operator; `block`: never show it."""

    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {ModerationAction.ALLOW: 0, ModerationAction.REVIEW: 1, ModerationAction.BLOCK: 2}


def most_severe(actions: list[ModerationAction] | tuple[ModerationAction, ...]) -> ModerationAction:
    """The most severe of `actions`; `allow` when there are none."""
    return max(actions, key=_SEVERITY.__getitem__, default=ModerationAction.ALLOW)
