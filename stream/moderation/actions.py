"""What a moderation check decides about a line (the vocabulary lives in `stream.reasons`)."""

from __future__ import annotations

from stream.reasons import ModerationAction

__all__ = ["ModerationAction", "most_severe"]


def most_severe(actions: list[ModerationAction] | tuple[ModerationAction, ...]) -> ModerationAction:
    """The most severe of `actions`; `allow` when there are none."""
    return max(actions, key=lambda action: action.severity, default=ModerationAction.ALLOW)
