"""Errors raised while reading or preparing training data and training.

    IdolstreamError
    └── DatasetError     a fine-tuning dataset is unusable; the message names file:line and the fault

Third-party errors (JSON decoding, Pillow, OS errors) are translated here with
``raise ... from exc`` so a command-line tool can print one clear line and stop.
"""

from __future__ import annotations

from stream.errors import IdolstreamError


class DatasetError(IdolstreamError):
    """A dataset file or one of its records is invalid; `where` is "file:line" (or the file alone)."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where}: {problem}")
        self.where = where
        self.problem = problem
