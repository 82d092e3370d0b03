"""Errors raised by the model layer (registry, tiny checkpoints, runtime).

Third-party exceptions (transformers, torch, tokenizers, OS errors) are translated
at this boundary with ``raise ... from exc`` so callers map one small set of types
to reason codes and metrics::

    Exception
    ├── ModelLoadError            registry file, checkpoint directory or weights unusable
    ├── ModelRuntimeError         generation failed for a batch (bad inputs, OOM, kernel error)
    └── KeyError
        └── UnknownModelError     registry has no model with that id
"""

from __future__ import annotations


class ModelLoadError(Exception):
    """A model, its processor or the registry could not be loaded or is inconsistent."""


class ModelRuntimeError(Exception):
    """Generation failed; the whole batch is affected."""


class UnknownModelError(KeyError):
    """The registry has no entry with the requested id; the message lists the known ids."""

    def __init__(self, model_id: str, known: list[str]) -> None:
        self.model_id = model_id
        self.known = list(known)
        super().__init__(model_id)

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the key only; say what exists instead.
        return f"unknown model id {self.model_id!r}; known ids: {', '.join(self.known) or '(none)'}"
