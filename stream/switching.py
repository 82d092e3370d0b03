"""When a worker may switch its model: one switch at a time, at most one per `min_interval_s`.

Pure bookkeeping for the admin endpoint; the worker does the unloading and loading.
"""

from __future__ import annotations

from collections.abc import Collection

from stream.errors import SwitchRefused


class ModelSwitchGate:
    def __init__(self, min_interval_s: float) -> None:
        self.min_interval_s = min_interval_s
        self.switching_to: str | None = None
        self._last_started: float | None = None

    def begin(self, model_id: str, current_id: str | None, known_ids: Collection[str], now: float) -> None:
        """Accept a switch to `model_id`, or raise SwitchRefused saying why."""
        if model_id not in known_ids:
            raise SwitchRefused("unknown_model", f"unknown model id {model_id!r}; known: {', '.join(known_ids)}")
        if self.switching_to is not None:
            raise SwitchRefused("busy", f"already switching to {self.switching_to!r}")
        if model_id == current_id:
            raise SwitchRefused("same_model", f"{model_id!r} is already loaded")
        if self._last_started is not None:
            wait = self.min_interval_s - (now - self._last_started)
            if wait > 0:
                raise SwitchRefused("too_soon", f"the last switch was under {self.min_interval_s:g} s ago", wait)
        self.switching_to = model_id
        self._last_started = now

    def finish(self) -> None:
        self.switching_to = None
