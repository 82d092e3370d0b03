"""A text-only chat model in this process: the runner behind a text guard (Qwen3Guard-Gen).

``TextGuardRunner`` implements the ``ModelRunner`` protocol of ``stream.models.runtime`` for
a ``text_only`` registry entry: ``AutoTokenizer`` + ``AutoModelForCausalLM.from_pretrained``
(``Qwen3ForCausalLM`` for Qwen3Guard-Gen and the tiny text guard), the checkpoint's own chat
template, left-padded batches and greedy decoding of ``max_new_tokens`` at most (a verdict
is a few dozen tokens). Served over HTTP instead, a text guard needs nothing of its own:
``OpenAIRunner`` sends the same chat messages and the server applies the same template.

Like ``TransformersRunner`` it trusts its inputs: the text in the messages must already be
neutralised (``stream.moderation.guard`` builds the messages and does that).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream.models.errors import ModelLoadError, ModelRuntimeError
from stream.models.registry import ModelSpec
from stream.models.runtime import (
    GenerationOptions, GenerationRequest, GenerationResult, decode_generated, generate_options, release_memory,
    stop_token_ids,
)
from stream.models.tiny import checkpoint_problems


class TextGuardRunner:
    """A text-only causal LM (a Qwen3Guard-Gen text guard) running in this process."""

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, device: str) -> None:
        self.spec = spec
        self.device = device
        self._model = model
        self._tokenizer = tokenizer
        # generate() is not safe to run twice at once on one model: one batch at a time.
        self._lock = threading.Lock()
        eos = model.generation_config.eos_token_id
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        candidates = [*(eos if isinstance(eos, list) else [eos]), im_end]
        self._stop_ids = {token for token in candidates if token is not None}
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._stop_ids)

    @classmethod
    def load(cls, spec: ModelSpec, project_root: str | Path, device: str | None = None) -> TextGuardRunner:
        """Load ``spec`` from its local directory or hub id (hub ids work only where the weights are cached)."""
        if not spec.text_only:
            raise ModelLoadError(f"model {spec.id!r} sees images: it is not loaded as a text-only model")
        source = spec.resolve_source(Path(project_root))
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            tokenizer = AutoTokenizer.from_pretrained(source)
            tokenizer.padding_side = "left"  # new tokens must line up at the end of every row
            model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, spec.dtype))
            model.to(device).eval()
        except Exception as exc:  # noqa: BLE001 - every load failure is a ModelLoadError for the caller
            raise ModelLoadError(f"cannot load model {spec.id!r} from {source}: {exc}") from exc
        problems = checkpoint_problems(model.config, tokenizer, None, model.generation_config)
        if not tokenizer.chat_template:
            # Without it there is no judging prompt: the verdict lines would never be asked for.
            problems.append("the tokenizer has no chat template")
        if problems:
            raise ModelLoadError(f"model {spec.id!r} at {source} is inconsistent:\n  - " + "\n  - ".join(problems))
        return cls(spec, model, tokenizer, device)

    def generate(
        self, requests: Sequence[GenerationRequest], options: GenerationOptions | None = None
    ) -> list[GenerationResult]:
        """Answer a batch synchronously (call it from a worker thread, not the event loop)."""
        if not requests:
            return []
        for index, request in enumerate(requests):
            if request.images:
                raise ModelRuntimeError(f"request {index}: {self.spec.id!r} is text-only but was given images")
        try:
            with self._lock:
                if self._model is None:
                    raise ModelRuntimeError(f"model {self.spec.id!r} was closed")
                return self._generate(requests, options or GenerationOptions())
        except ModelRuntimeError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated at the boundary
            raise ModelRuntimeError(f"generation failed on {self.spec.id!r}: {exc}") from exc

    def _stop_ids_for(self, stop: tuple[str, ...]) -> set[int]:
        return stop_token_ids(self._tokenizer, self._stop_ids, stop, self.spec.id)

    def _generate(self, requests: Sequence[GenerationRequest], opts: GenerationOptions) -> list[GenerationResult]:
        import torch

        started = time.perf_counter()
        tokenizer = self._tokenizer
        prompts = [
            tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
            + request.assistant_prefix
            for request in requests
        ]
        stop_ids = self._stop_ids_for(opts.stop)
        # The template writes every control token itself; none may be added around it.
        inputs = tokenizer(prompts, padding=True, return_tensors="pt", add_special_tokens=False).to(self.device)
        preprocess_s = time.perf_counter() - started

        options = generate_options(self.spec, opts, self._pad_id, stop_ids)
        with torch.inference_mode():
            output = self._model.generate(**inputs, **options)

        return decode_generated(tokenizer, inputs, output, stop_ids, preprocess_s)

    def close(self) -> None:
        """Release the weights; the runner cannot be used afterwards."""
        with self._lock:
            self._model = None
            self._tokenizer = None
        release_memory()
