"""The model runner seam: chat messages + images in, decoded replies out.

``ModelRunner`` is what the consumers call. ``TransformersRunner`` runs a Qwen3-VL
checkpoint in-process through the real loading path (``AutoModelForImageTextToText`` /
``AutoProcessor.from_pretrained``); an OpenAI-compatible HTTP runner can implement the
same protocol later without touching the consumers.

The runner trusts its inputs: user text must already be neutralised (a literal
``<|im_start|>`` would become a control token) and images must already be RGB and
downscaled to the spec's pixel budget.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from PIL import Image

from stream.models.errors import ModelLoadError, ModelRuntimeError
from stream.models.registry import ModelSpec
from stream.models.tiny import checkpoint_problems

FinishReason = Literal["stop", "length"]
ProcessorKind = Literal["auto", "image-only"]

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"


@dataclass(frozen=True)
class GenerationRequest:
    """One conversation to answer.

    ``messages`` use the Hugging Face chat format, e.g. ``{"role": "user", "content":
    [{"type": "image"}, {"type": "text", "text": "..."}]}`` (content may be a string).
    ``images`` are PIL images in the order of the image parts.
    """

    messages: list[dict[str, Any]]
    images: list[Image.Image] = field(default_factory=list)
    # Text the assistant turn already holds (e.g. a thought to close); generation continues it.
    assistant_prefix: str = ""


@dataclass(frozen=True)
class GenerationOptions:
    """Per-call limits that override the spec's defaults, for every request of the batch.

    ``stop`` strings end a row early (e.g. ``"</think>"`` to stop after a thought); the
    stop string is kept in the text. ``max_time_s`` bounds the call's wall time: rows still
    running then end with ``finish_reason="length"``.
    """

    max_new_tokens: int | None = None
    stop: tuple[str, ...] = ()
    max_time_s: float | None = None


@dataclass(frozen=True)
class GenerationResult:
    text: str  # new tokens only, special tokens skipped (<think>/</think> are kept)
    prompt_tokens: int
    generated_tokens: int  # includes the stop token when there is one
    finish_reason: FinishReason
    preprocess_s: float = field(default=0.0, compare=False)  # the batch's template, tokenizer, image processor time


class ModelRunner(Protocol):
    spec: ModelSpec

    def generate(
        self, requests: Sequence[GenerationRequest], options: GenerationOptions | None = None
    ) -> list[GenerationResult]:
        """Answer a batch synchronously (call it from a worker thread, not the event loop)."""
        ...

    def close(self) -> None: ...


class ImageOnlyProcessor:
    """What ``Qwen3VLProcessor`` does for images, without its video processor.

    ``Qwen3VLProcessor`` cannot be built without torchvision (its video processor needs
    it), so where torchvision is missing this class pairs the tokenizer with the PIL
    image processor ``Qwen2VLImageProcessorPil``. It pads on the left: it exists for
    batched generation.
    """

    def __init__(self, tokenizer: Any, image_processor: Any) -> None:
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "left"
        self.image_processor = image_processor
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)

    @classmethod
    def from_pretrained(cls, source: str | Path) -> ImageOnlyProcessor:
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

        return cls(AutoTokenizer.from_pretrained(source), Qwen2VLImageProcessorPil.from_pretrained(source))

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any:
        return self.tokenizer.apply_chat_template(conversation, **kwargs)

    def __call__(
        self,
        text: str | Sequence[str],
        images: Sequence[Image.Image] | None = None,
        return_tensors: str = "pt",
        padding: bool = True,
        **_: Any,
    ) -> Any:
        """Tokenize rendered prompts, expanding each ``<|image_pad|>`` to its image's token count.

        Images are consumed in order across the whole batch, as ``Qwen3VLProcessor`` does.
        """
        import torch
        from transformers import BatchFeature

        texts = [text] if isinstance(text, str) else list(text)
        images = list(images or [])
        data: dict[str, Any] = {}
        tokens_per_image: list[int] = []
        if images:
            pixels = self.image_processor(images=images, return_tensors="pt")
            data.update(pixel_values=pixels["pixel_values"], image_grid_thw=pixels["image_grid_thw"])
            merge = self.image_processor.merge_size**2
            tokens_per_image = [int(thw.prod()) // merge for thw in pixels["image_grid_thw"]]

        expanded: list[str] = []
        next_image = 0
        for prompt in texts:
            head, *rest = prompt.split(IMAGE_TOKEN)
            parts = [head]
            for tail in rest:
                if next_image >= len(tokens_per_image):
                    raise ValueError(f"prompts hold more {IMAGE_TOKEN} than the {len(images)} images given")
                parts.append(IMAGE_TOKEN * tokens_per_image[next_image] + tail)
                next_image += 1
            expanded.append("".join(parts))
        if next_image != len(images):
            raise ValueError(f"{len(images)} images given but prompts hold {next_image} {IMAGE_TOKEN}")

        encoded = self.tokenizer(expanded, padding=padding, return_tensors=return_tensors)
        ids = encoded["input_ids"]
        # 0 text, 1 image, 2 video: the model builds its 3-D (M-RoPE) positions from this.
        mm_types = torch.zeros_like(ids)
        mm_types[ids == self.image_token_id] = 1
        mm_types[ids == self.video_token_id] = 2
        data.update(encoded)
        data["mm_token_type_ids"] = mm_types
        return BatchFeature(data=data)


def _load_processor(source: str) -> tuple[Any, ProcessorKind]:
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(source), "auto"
    except ImportError:
        # Raised when torchvision is missing: Qwen3VLVideoProcessor requires it.
        return ImageOnlyProcessor.from_pretrained(source), "image-only"


def _processor_settings(image_processor: Any) -> dict[str, Any]:
    return {
        key: getattr(image_processor, key, None) for key in ("patch_size", "merge_size", "temporal_patch_size")
    }


class TransformersRunner:
    """A Qwen3-VL checkpoint running in this process with transformers."""

    def __init__(
        self,
        spec: ModelSpec,
        model: Any,
        processor: Any,
        processor_kind: ProcessorKind,
        device: str,
    ) -> None:
        self.spec = spec
        self.processor_kind = processor_kind
        self.device = device
        self._model = model
        self._processor = processor
        # generate() mutates model state (rope deltas, caches): one batch at a time.
        self._lock = threading.Lock()
        tokenizer = processor.tokenizer
        eos = model.generation_config.eos_token_id
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        candidates = [*(eos if isinstance(eos, list) else [eos]), im_end]
        self._stop_ids = {token for token in candidates if token is not None}
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self._stop_ids)

    @classmethod
    def load(cls, spec: ModelSpec, project_root: str | Path, device: str | None = None) -> TransformersRunner:
        """Load ``spec`` from its local directory or hub id (hub ids work only where the weights are cached)."""
        source = spec.resolve_source(Path(project_root))
        try:
            import torch
            from transformers import AutoModelForImageTextToText

            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            processor, kind = _load_processor(source)
            processor.tokenizer.padding_side = "left"  # new tokens must line up at the end of every row
            # The spec's budget, not the checkpoint's default (16M pixels for Qwen3-VL).
            processor.image_processor.size = {"shortest_edge": spec.min_pixels, "longest_edge": spec.max_pixels}
            model = AutoModelForImageTextToText.from_pretrained(source, dtype=getattr(torch, spec.dtype))
            model.to(device).eval()
        except Exception as exc:  # noqa: BLE001 - every load failure is a ModelLoadError for the caller
            raise ModelLoadError(f"cannot load model {spec.id!r} from {source}: {exc}") from exc
        problems = checkpoint_problems(
            model.config, processor.tokenizer, _processor_settings(processor.image_processor), model.generation_config
        )
        if problems:
            raise ModelLoadError(f"model {spec.id!r} at {source} is inconsistent:\n  - " + "\n  - ".join(problems))
        return cls(spec, model, processor, kind, device)

    def generate(
        self, requests: Sequence[GenerationRequest], options: GenerationOptions | None = None
    ) -> list[GenerationResult]:
        if not requests:
            return []
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
        return stop_token_ids(self._processor.tokenizer, self._stop_ids, stop, self.spec.id)

    def _generate(self, requests: Sequence[GenerationRequest], opts: GenerationOptions) -> list[GenerationResult]:
        import torch

        started = time.perf_counter()
        prompts = [
            self._processor.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
            + request.assistant_prefix
            for request in requests
        ]
        stop_ids = self._stop_ids_for(opts.stop)
        for index, (prompt, request) in enumerate(zip(prompts, requests, strict=True)):
            # A mismatch here means un-neutralised user text or a wrong image list.
            if prompt.count(IMAGE_TOKEN) != len(request.images):
                raise ModelRuntimeError(
                    f"request {index}: prompt has {prompt.count(IMAGE_TOKEN)} image slots "
                    f"but {len(request.images)} images were given"
                )
        images = [image for request in requests for image in request.images]
        inputs = self._processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        preprocess_s = time.perf_counter() - started

        options = generate_options(self.spec, opts, self._pad_id, stop_ids)
        with torch.inference_mode():
            output = self._model.generate(**inputs, **options)

        return decode_generated(self._processor.tokenizer, inputs, output, stop_ids, preprocess_s)

    def close(self) -> None:
        """Release the weights; the runner cannot be used afterwards."""
        with self._lock:
            self._model = None
            self._processor = None
        release_memory()


def stop_token_ids(tokenizer: Any, always: Iterable[int], stop: tuple[str, ...], model_id: str) -> set[int]:
    """The token ids generation stops on: the model's own, and each stop string's (one token each)."""
    ids = set(always)
    for text in stop:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        if len(encoded) != 1:
            raise ModelRuntimeError(f"stop string {text!r} is not a single token of {model_id!r}")
        ids.add(encoded[0])
    return ids


def generate_options(spec: ModelSpec, opts: GenerationOptions, pad_id: int, stop_ids: set[int]) -> dict[str, Any]:
    """`model.generate`'s keyword arguments for a request's options and the model's registry settings."""
    greedy = spec.temperature == 0
    options: dict[str, Any] = {
        "max_new_tokens": opts.max_new_tokens or spec.max_new_tokens,
        "do_sample": not greedy,
        "pad_token_id": pad_id,
        "eos_token_id": sorted(stop_ids),
    }
    if opts.max_time_s is not None:
        options["max_time"] = max(0.001, opts.max_time_s)
    if greedy:
        # Drop the checkpoint's sampling defaults so greedy decoding does not warn about them.
        options |= {"temperature": None, "top_p": None, "top_k": None}
    else:
        options["temperature"] = spec.temperature
    return options


def decode_generated(tokenizer: Any, inputs: Any, output: Any, stop_ids: set[int] | frozenset[int],
                     preprocess_s: float) -> list[GenerationResult]:
    """One result per row of a left-padded batch: the new tokens up to and with the first stop token."""
    prompt_width = inputs["input_ids"].shape[1]
    prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
    results: list[GenerationResult] = []
    for row, prompt_tokens in zip(output[:, prompt_width:].tolist(), prompt_lengths, strict=True):
        stop_at = next((i for i, token in enumerate(row) if token in stop_ids), None)
        kept = row if stop_at is None else row[: stop_at + 1]
        results.append(
            GenerationResult(
                text=tokenizer.decode(kept, skip_special_tokens=True),
                prompt_tokens=int(prompt_tokens),
                generated_tokens=len(kept),
                finish_reason="length" if stop_at is None else "stop",
                preprocess_s=preprocess_s,
            )
        )
    return results


def release_memory() -> None:
    """After a model's weights are dropped: collect them, and give the GPU's cached blocks back."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # noqa: BLE001 - best effort during shutdown
        pass
