"""Errors of the moderation package.

    ModerationError            base of this package's errors
    └── WordListError          a word list file is unreadable or invalid (names file and field)
"""

from __future__ import annotations

from stream.errors import IdolstreamError


class ModerationError(IdolstreamError):
    """Base of the moderation package's errors."""


class WordListError(ModerationError):
    """A word list cannot be used; the message names the file and the field or line."""
