"""Training a Qwen3-VL-architecture checkpoint on chat examples, loss on the assistant turns only.

The path is the real one: ``AutoModelForImageTextToText`` and the checkpoint's own
processor (``ImageOnlyProcessor`` where torchvision is missing), each example rendered
with the checkpoint's chat template over the whole conversation and tokenized with its
images, exactly as the runner does at inference. Images go through the same admission
(``admit_image``: decoded, flattened to RGB, downscaled to the budget) as a fan's upload.

Labels are the input ids on the assistant turns (the answer and its closing
``<|im_end|>``) and ``IGNORE_INDEX`` everywhere else: system prompt, user turns, image
tokens, the ``<|im_start|>assistant`` header and padding. ``assistant_labels`` is a pure
function on token ids, tested without a model.

The result is saved like a real checkpoint (``save_pretrained`` of model, tokenizer and
processor configs, chat template, generation config) into a staging directory that is
checked with ``check_checkpoint_consistency`` and then renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from stream.images import ImageLimits, admit_image
from stream.models.tiny import staged_checkpoint

IGNORE_INDEX = -100
ASSISTANT_HEADER = "<|im_start|>assistant\n"
TURN_END = "<|im_end|>"
# Files of a checkpoint that describe its processor; copied from the base when the
# image-only path cannot write them itself.
_PROCESSOR_FILES = ("processor_config.json", "video_preprocessor_config.json", "preprocessor_config.json")


class ModelAdapter(Protocol):
    """Changes what is trained and what is saved, e.g. LoRA adapters merged into the weights on save."""

    def prepare(self, model: Any) -> Any:
        """The model to train, given the loaded one (parameters not to train have requires_grad off)."""

    def finish(self, model: Any) -> Any:
        """The model to save, given the trained one: a plain model that loads like any checkpoint."""


class TrainingExample(Protocol):
    """What the loop trains on: image files in the order of the image parts, and HF chat messages."""

    @property
    def images(self) -> Sequence[Path]: ...

    @property
    def messages(self) -> list[dict]: ...


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 300
    batch_size: int = 16
    learning_rate: float = 2e-3
    # Cosine decay ends at this fraction of the peak learning rate.
    final_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0
    # The image budget: training must see pictures as the tier will (see ModelSpec).
    max_pixels: int = 256 * 256
    min_pixels: int = 64 * 64
    # Where the model trains: None is the first CUDA device when there is one, else the CPU.
    device: str | None = None
    # The weights' dtype while training. float32 for full training (the optimizer needs
    # it); a frozen base under LoRA can be bfloat16, the adapters stay float32 (peft).
    dtype: str = "float32"


def training_device(requested: str | None) -> str:
    """The torch device to train on: `requested`, or CUDA when available, else the CPU."""
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"device {requested!r} asked for, but torch sees no CUDA device here")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def to_device(inputs: Mapping[str, Any], device: str, dtype: Any) -> dict[str, Any]:
    """A batch on `device`; its floating-point tensors (the pixels) in the model's `dtype`."""
    return {
        key: value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
        for key, value in inputs.items()
    }


@dataclass(frozen=True)
class TrainProgress:
    step: int  # steps done, 1..steps
    steps: int
    loss: float  # this step's mean loss over the assistant tokens
    examples_per_s: float  # since the first step
    elapsed_s: float

    @property
    def eta_s(self) -> float:
        return self.elapsed_s / self.step * (self.steps - self.step) if self.step else math.inf


@dataclass(frozen=True)
class TrainResult:
    out_dir: Path
    steps: int
    examples_seen: int
    final_loss: float  # mean over the last tenth of the steps (at least one)
    losses: tuple[float, ...]
    encode_s: float  # rendering, tokenizing and image processing, once before training
    train_s: float
    examples_per_s: float


@dataclass(frozen=True)
class EncodedExample:
    """One example as model inputs (1-D token rows; images as the processor returns them)."""

    input_ids: Any  # LongTensor [seq]
    labels: Any  # LongTensor [seq]
    mm_token_type_ids: Any  # LongTensor [seq]
    pixel_values: Any | None  # FloatTensor [patches, patch_dim]
    image_grid_thw: Any | None  # LongTensor [images, 3]


# --- labels ---------------------------------------------------------------------------


def assistant_labels(
    input_ids: Sequence[int], header_ids: Sequence[int], turn_end_id: int
) -> list[int]:
    """``input_ids`` on the assistant turns' tokens, ``IGNORE_INDEX`` elsewhere.

    An assistant turn starts after ``header_ids`` (``<|im_start|>assistant\\n``) and ends
    with its ``turn_end_id`` (``<|im_end|>``), which is labelled too: it teaches the model
    to stop. A turn that never closes is labelled to the end of the row.
    """
    ids = list(input_ids)
    header = list(header_ids)
    labels = [IGNORE_INDEX] * len(ids)
    width = len(header)
    i = 0
    while i + width <= len(ids):
        if ids[i : i + width] != header:
            i += 1
            continue
        j = i + width
        while j < len(ids):
            labels[j] = ids[j]
            j += 1
            if ids[j - 1] == turn_end_id:
                break
        i = j
    return labels


def assistant_spans(labels: Sequence[int]) -> list[tuple[int, int]]:
    """The ``[start, end)`` runs of labelled positions."""
    spans: list[tuple[int, int]] = []
    start = None
    for index, label in enumerate([*labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = index
        elif label == IGNORE_INDEX and start is not None:
            spans.append((start, index))
            start = None
    return spans


# --- loading and encoding ---------------------------------------------------------------


def load_processor(source: str | Path, min_pixels: int, max_pixels: int) -> Any:
    """The checkpoint's processor (image-only without torchvision), set to this image budget."""
    from transformers import AutoProcessor

    from stream.models.runtime import ImageOnlyProcessor

    try:
        processor = AutoProcessor.from_pretrained(source)
    except ImportError:
        # Qwen3VLVideoProcessor needs torchvision; the runner falls back the same way.
        processor = ImageOnlyProcessor.from_pretrained(source)
    # Rows are padded here, one side is as good as the other; keep what the checkpoint says.
    processor.tokenizer.padding_side = "right"
    processor.image_processor.size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    return processor


def load_images(paths: Sequence[Path], max_pixels: int) -> list[Any]:
    """Image files admitted exactly as a fan's upload is (RGB, downscaled to the budget)."""
    limits = ImageLimits(max_pixels=max_pixels)
    return [admit_image(Path(path).read_bytes(), limits).image for path in paths]


def encode_example(processor: Any, messages: list[dict], images: Sequence[Any]) -> EncodedExample:
    """Render ``messages`` with the chat template, tokenize with ``images``, label the assistant turns."""
    tokenizer = processor.tokenizer
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    inputs = processor(text=[text], images=list(images) or None, return_tensors="pt", padding=False)
    ids = inputs["input_ids"][0]
    header = tokenizer.encode(ASSISTANT_HEADER, add_special_tokens=False)
    labels = assistant_labels(ids.tolist(), header, tokenizer.convert_tokens_to_ids(TURN_END))
    turns = sum(1 for message in messages if message.get("role") == "assistant")
    found = len(assistant_spans(labels))
    if turns == 0:
        raise ValueError("an example needs at least one assistant turn to learn from")
    if found != turns:
        raise ValueError(f"found {found} assistant spans in the rendered example but it has {turns} assistant turns")
    import torch

    mm_types = inputs.get("mm_token_type_ids")
    return EncodedExample(
        input_ids=ids,
        labels=torch.tensor(labels, dtype=torch.long),
        mm_token_type_ids=mm_types[0] if mm_types is not None else torch.zeros_like(ids),
        pixel_values=inputs.get("pixel_values"),
        image_grid_thw=inputs.get("image_grid_thw"),
    )


def collate(batch: Sequence[EncodedExample], pad_id: int) -> dict[str, Any]:
    """Pad rows on the right; images are concatenated in row order, as the processor does."""
    import torch

    width = max(len(example.input_ids) for example in batch)
    rows = len(batch)
    input_ids = torch.full((rows, width), pad_id, dtype=torch.long)
    labels = torch.full((rows, width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((rows, width), dtype=torch.long)
    mm_types = torch.zeros((rows, width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example.input_ids)
        input_ids[row, :n] = example.input_ids
        labels[row, :n] = example.labels
        attention[row, :n] = 1
        mm_types[row, :n] = example.mm_token_type_ids
    out: dict[str, Any] = {
        "input_ids": input_ids,
        "attention_mask": attention,
        "labels": labels,
        "mm_token_type_ids": mm_types,
    }
    pixels = [example.pixel_values for example in batch if example.pixel_values is not None]
    if pixels:
        out["pixel_values"] = torch.cat(pixels)
        out["image_grid_thw"] = torch.cat([e.image_grid_thw for e in batch if e.image_grid_thw is not None])
    return out


# --- the loop ---------------------------------------------------------------------------


def assistant_loss(model: Any, inputs: Mapping[str, Any]) -> Any:
    """Mean next-token cross-entropy over the labelled positions, as ``model(**inputs).loss`` is.

    Only the positions that predict a labelled token go through the LM head: they are a
    few percent of a row whose bulk is the system prompt, and the head is the largest
    matrix of a small model.
    """
    import torch.nn.functional as F

    labels = inputs["labels"]
    features = {key: value for key, value in inputs.items() if key != "labels"}
    hidden = model.base_model(**features, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    wanted = targets != IGNORE_INDEX
    logits = model.get_output_embeddings()(hidden[:, :-1][wanted])
    return F.cross_entropy(logits.float(), targets[wanted])


def _learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to ``final_lr_ratio`` of the peak (``step`` from 0)."""
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.final_lr_ratio
    return config.learning_rate * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def adamw_optimizer(model: Any, config: TrainConfig) -> Any:
    """AdamW over the parameters that train (LoRA: the adapters only), no decay on norms and biases."""
    import torch

    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        # Norm weights and biases are not shrunk toward zero.
        (decay if param.ndim >= 2 and "norm" not in name else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.98), eps=1e-8)


def _batches(count: int, batch_size: int, rng: random.Random):
    """Shuffled batches of indexes, epoch after epoch; a short last batch is dropped."""
    size = min(batch_size, count)
    while True:
        order = list(range(count))
        rng.shuffle(order)
        for start in range(0, count - size + 1, size):
            yield order[start : start + size]


def train(
    base: str | Path,
    examples: Sequence[TrainingExample],
    out_dir: str | Path,
    config: TrainConfig,
    on_progress: Callable[[TrainProgress], None] | None = None,
    record: Mapping[str, Any] | None = None,
    adapter: ModelAdapter | None = None,
) -> TrainResult:
    """Train the checkpoint at ``base`` on ``examples`` and save the result as ``out_dir``.

    Deterministic on CPU for a given seed, data and thread count. ``out_dir`` is replaced
    only once the new checkpoint is complete and consistent. It holds a ``training.json``
    with the settings, the final loss and ``record`` (e.g. where the data came from).
    ``adapter`` (default: none, every weight trains) decides what trains and what is saved.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    if not examples:
        raise ValueError("no training examples")
    if config.steps < 1:
        raise ValueError("steps must be at least 1")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)

    started = time.perf_counter()
    processor = load_processor(base, config.min_pixels, config.max_pixels)
    encoded = [
        encode_example(processor, example.messages, load_images(example.images, config.max_pixels))
        for example in examples
    ]
    encode_s = time.perf_counter() - started

    device = training_device(config.device)
    dtype = getattr(torch, config.dtype)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=dtype).to(device)
    if adapter is not None:
        model = adapter.prepare(model)
    model.train()
    optimizer = adamw_optimizer(model, config)
    tokenizer = processor.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    losses: list[float] = []
    seen = 0
    batches = _batches(len(encoded), config.batch_size, rng)
    train_started = time.perf_counter()
    for step in range(config.steps):
        indexes = next(batches)
        inputs = to_device(collate([encoded[i] for i in indexes], pad_id), device, dtype)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate(config, step)
        loss = assistant_loss(model, inputs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        optimizer.step()
        losses.append(float(loss.detach()))
        seen += len(indexes)
        if on_progress is not None:
            elapsed = time.perf_counter() - train_started
            on_progress(TrainProgress(step + 1, config.steps, losses[-1], seen / max(elapsed, 1e-9), elapsed))
    train_s = time.perf_counter() - train_started

    model.eval()
    if adapter is not None:
        model = adapter.finish(model)
    tail = losses[-max(1, len(losses) // 10) :]
    result = TrainResult(
        out_dir=Path(out_dir),
        steps=config.steps,
        examples_seen=seen,
        final_loss=sum(tail) / len(tail),
        losses=tuple(losses),
        encode_s=encode_s,
        train_s=train_s,
        examples_per_s=seen / max(train_s, 1e-9),
    )
    summary = {
        **dict(record or {}),
        "config": {**asdict(config), "device": device},
        "examples": len(examples),
        "examples_seen": seen,
        "final_loss": round(result.final_loss, 6),
        "train_s": round(train_s, 1),
    }
    save_checkpoint(model, processor, base, out_dir, {"training.json": json.dumps(summary, indent=2) + "\n"})
    return result


def save_checkpoint(
    model: Any, processor: Any, base: str | Path, out_dir: str | Path, extra_files: Mapping[str, str] | None = None
) -> Path:
    """Write ``model`` and ``processor`` as a checkpoint directory, staged, checked, renamed into place.

    ``extra_files`` (name -> text) are written beside the checkpoint's own files.
    """
    out_dir = Path(out_dir)
    with staged_checkpoint(out_dir, "training") as staging:
        model.save_pretrained(staging)  # config.json, generation_config.json, model.safetensors
        if hasattr(processor, "save_pretrained"):
            processor.save_pretrained(staging)  # tokenizer, chat template, every processor config
        else:
            processor.tokenizer.save_pretrained(staging)
            processor.image_processor.save_pretrained(staging)
            base_dir = Path(base)
            for name in _PROCESSOR_FILES:
                if (base_dir / name).exists() and not (staging / name).exists():
                    shutil.copyfile(base_dir / name, staging / name)
        for name, text in (extra_files or {}).items():
            (staging / name).write_text(text, encoding="utf-8")
    return out_dir


@contextlib.contextmanager
def training_bar(steps: int, file: TextIO | None = None) -> Iterator[tuple[Callable, Callable]]:
    """A progress bar for a training run: yields its ``(on_progress, on_stage)`` callbacks.

    One line on ``file`` (stderr by default): the stage in words, steps done, the rate,
    the time left, the loss and the examples per second.
    """
    from tqdm import tqdm
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one bar: ours
    with tqdm(total=steps, unit="step", dynamic_ncols=True, file=file or sys.stderr) as bar:

        def on_progress(progress: TrainProgress) -> None:
            bar.set_postfix(loss=f"{progress.loss:.3f}", ex_s=f"{progress.examples_per_s:.1f}", refresh=False)
            bar.update(progress.step - bar.n)

        yield on_progress, bar.set_description_str
