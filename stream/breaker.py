"""A circuit breaker for escalation: stop sending items to a deep tier that does not answer.

    closed ──(failure_threshold failures in a row)──► open
    open ──(open_s passed)──► half_open: exactly one probe is let through
    half_open ──(probe answered)──► closed
    half_open ──(probe failed)──► open again

Pure: the caller reports outcomes (a deep answer arrived in time, or a deadline passed)
and passes the clock in.
"""

from __future__ import annotations

from typing import Literal

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    def __init__(self, failure_threshold: int, open_s: float) -> None:
        if failure_threshold < 1 or open_s <= 0:
            raise ValueError("need failure_threshold >= 1 and open_s > 0")
        self.failure_threshold = failure_threshold
        self.open_s = open_s
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_out = False

    def state(self, now: float) -> BreakerState:
        if self._state == "open" and now - self._opened_at >= self.open_s:
            self._state = "half_open"
            self._probe_out = False
        return self._state

    def allow(self, now: float) -> bool:
        """May one more item escalate now? In half-open, only the single probe may."""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "half_open" and not self._probe_out:
            self._probe_out = True
            return True
        return False

    def record_success(self, now: float) -> None:
        self._failures = 0
        if self.state(now) == "half_open":
            self._state = "closed"
            self._probe_out = False

    def record_failure(self, now: float) -> None:
        state = self.state(now)
        self._failures += 1
        if state == "half_open" or (state == "closed" and self._failures >= self.failure_threshold):
            self._state = "open"
            self._opened_at = now
            self._probe_out = False
