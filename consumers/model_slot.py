"""The model a worker runs, and switching it while the worker keeps consuming.

A switch unloads the current model before loading the next (two real-sized models rarely
fit one GPU). Meanwhile `runner` is None and the tier answers through its degradation
path (persona lines, or the fast draft), so no item waits for the load. If the new model
cannot be loaded, the previous one is loaded again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from stream.errors import ModelFailure, SwitchRefused
from stream.metrics import WorkerMetrics
from stream.models.errors import ModelLoadError
from stream.models.registry import ModelSpec
from stream.models.runtime import ModelRunner
from stream.switching import ModelSwitchGate

log = logging.getLogger("idolstream.models")

Loader = Callable[[str], ModelRunner]  # registry id -> loaded runner (blocking; runs in a thread)
# The registry ids a switch may ask for, read when the switch is asked (so a model
# registered since the worker started, a fine-tuned one say, can be switched to).
KnownIds = Callable[[], Collection[str]]
T = TypeVar("T")


async def call_isolating_failures(
    call: Callable[[list[T]], list[Any]], items: Sequence[T], metrics: WorkerMetrics
) -> tuple[list[Any], float]:
    """Run `call` on the batch in a worker thread; if it fails, on each item alone.

    One bad item then fails alone, as a ModelFailure in its place, and the others are
    answered. Returns one result per item and the seconds spent in the model.
    """
    metrics.batch_size.observe(len(items))
    t0 = time.perf_counter()
    try:
        results: list[Any] = await asyncio.to_thread(call, list(items))
    except Exception:
        log.warning("batch of %d failed; retrying item by item", len(items), exc_info=True)
        results = []
        for item in items:
            try:
                results.extend(await asyncio.to_thread(call, [item]))
            except Exception as exc:
                results.append(ModelFailure(f"{type(exc).__name__}: {exc}"[:500]))
    elapsed = time.perf_counter() - t0
    metrics.inference_seconds.observe(elapsed)
    return results, elapsed


class ModelSlot:
    def __init__(
        self, runner: ModelRunner, loader: Loader, known_ids: KnownIds, gate: ModelSwitchGate, metrics: WorkerMetrics
    ) -> None:
        self.runner: ModelRunner | None = runner
        self.spec: ModelSpec = runner.spec  # of the model loaded, or loaded last while switching
        self.loader = loader
        self.known_ids = known_ids
        self.gate = gate
        self.metrics = metrics
        self.last_error: str | None = None
        metrics.model_loaded(self.model_id).set(1)

    @property
    def model_id(self) -> str:
        return self.spec.id

    @classmethod
    def around(cls, runner: ModelRunner, metrics: WorkerMetrics) -> ModelSlot:
        """A slot for an already loaded runner that refuses every switch (benchmarks, tests)."""
        def cannot_load(model_id: str) -> ModelRunner:
            raise ModelLoadError(f"this worker cannot load {model_id!r}")

        return cls(runner, cannot_load, lambda: [runner.spec.id], ModelSwitchGate(0.0), metrics)

    def request_switch(self, model_id: str) -> asyncio.Task:
        """Start switching to `model_id` (raises SwitchRefused at once when it may not)."""
        try:
            known = self.known_ids()
        except ModelLoadError as exc:
            raise SwitchRefused("registry_unreadable", str(exc)) from exc
        self.gate.begin(model_id, self.model_id, known, time.monotonic())
        return asyncio.create_task(self._switch(model_id), name=f"switch-to-{model_id}")

    async def _switch(self, model_id: str) -> None:
        previous, old = self.model_id, self.runner
        self.metrics.model_switching.set(1)
        self.runner = None  # from here on the tier degrades instead of waiting
        try:
            if old is not None:
                await asyncio.to_thread(old.close)  # waits for a batch already in the model
            self.metrics.model_loaded(previous).set(0)
            try:
                runner = await asyncio.to_thread(self.loader, model_id)
            except ModelLoadError as exc:
                self.last_error = str(exc)
                log.error("switch to %s failed, loading %s again: %s", model_id, previous, exc)
                runner = await asyncio.to_thread(self.loader, previous)
            self.runner, self.spec = runner, runner.spec
            self.metrics.model_loaded(runner.spec.id).set(1)
            log.info("model %s loaded", runner.spec.id)
        finally:
            self.metrics.model_switching.set(0)
            self.gate.finish()

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None
