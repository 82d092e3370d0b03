"""Fine-tuning a registered model on a dataset in Qwen3-VL's format, and registering the result.

`finetune` is what ``idolstream models finetune`` runs:

1. the base is a registry entry, loaded from its checkpoint directory (or cached hub id)
   through the same classes as every other model;
2. the dataset is read and validated with `read_dataset` before anything is written,
   and fingerprinted with `dataset_digest`;
3. `stream.learning.train.train` fine-tunes it, the loss on the assistant turns only,
   and saves a plain checkpoint directory (staged, consistency-checked, renamed into place);
   With ``lora``, only LoRA adapters (peft) on the text model's attention and MLP
   projections train; they are merged into the weights before saving, so the checkpoint
   is a plain model directory (no adapter files) that loads like any other;
4. a new registry entry (default id ``<base>-ft-<digest[:8]>``) copies the base's settings
   and records its `Lineage`: base id, data file and digest, steps, final loss, seed.

The new model is then one ``switch-model`` away from a running tier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream.errors import IdolstreamError
from stream.learning.dataset import dataset_digest, read_dataset
from stream.learning.train import TrainConfig, TrainProgress, TrainResult, train
from stream.models.errors import UnknownModelError
from stream.models.registry import Lineage, ModelRegistry, ModelSpec, register_model

__all__ = [
    "FinetuneError",
    "FinetunePlan",
    "Finetuned",
    "LoraAdapter",
    "default_model_id",
    "finetune",
    "finetuned_spec",
]

DIGEST_CHARS = 8
# Default peak learning rates, for the small models trained here; real 2B-8B models want
# about 1e-5 (full) and 1e-4 (LoRA): pass --lr.
FULL_LR = 1e-3
LORA_LR = 5e-3
# The text model's attention and MLP projections (Qwen3-VL dense; the MoE's experts are
# fused parameters, not Linear layers, so there only attention gets adapters). The vision
# tower and the LM head stay as they are.
LORA_TARGETS = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"


class FinetuneError(IdolstreamError):
    """The fine-tuning cannot start as asked (unknown base, a remote base, a clashing id or directory)."""


@dataclass(frozen=True)
class FinetunePlan:
    """How long and how hard to fine-tune. The defaults suit the small models trained here."""

    steps: int = 100
    batch_size: int = 8
    # None: FULL_LR, or LORA_LR with lora (adapters start at zero and need bigger steps).
    learning_rate: float | None = None
    seed: int = 0
    lora: bool = False
    lora_rank: int = 8
    # LoRA's scale is alpha / rank; twice the rank is the common choice.
    lora_alpha: int | None = None
    # None: the first GPU when there is one, else the CPU.
    device: str | None = None

    @property
    def peak_lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        return LORA_LR if self.lora else FULL_LR

    def train_config(self, spec: ModelSpec) -> TrainConfig:
        """The loop's settings: this plan, at the base's image budget (as the tier will feed it)."""
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            learning_rate=self.peak_lr,
            # A short warm-up: the weights are already trained (or, for tiny ones, tiny).
            warmup_steps=max(1, min(20, self.steps // 10)),
            seed=self.seed,
            max_pixels=spec.max_pixels,
            min_pixels=spec.min_pixels,
            device=self.device,
            # LoRA trains adapters only: the frozen base can stay in the registry's dtype
            # (a 4B model in bfloat16 is 8 GB) while peft keeps the adapters in float32.
            # Full fine-tuning keeps float32 weights for the optimizer.
            dtype=spec.dtype if self.lora else "float32",
        )


class LoraAdapter:
    """LoRA adapters (peft) on the text model's projections while training, merged into the weights on save.

    Only the adapters train (the optimizer sees nothing else); `finish` folds them into
    the projections they adapt and removes every trace of peft, so ``save_pretrained``
    writes a plain checkpoint.
    """

    def __init__(self, rank: int, alpha: int | None = None) -> None:
        self.rank = rank
        self.alpha = alpha if alpha is not None else 2 * rank
        self._wrapped: Any = None
        self.trainable_parameters = 0

    def prepare(self, model: Any) -> Any:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=0.0, target_modules=LORA_TARGETS)
        # peft injects the adapters into `model` itself and freezes the rest; the loop keeps
        # training `model`, whose base_model and LM head the loss reads directly.
        self._wrapped = get_peft_model(model, config)
        self.trainable_parameters = sum(p.numel() for p in model.parameters() if p.requires_grad)
        if not self.trainable_parameters:
            raise FinetuneError("LoRA found no text projections to adapt in this model")
        return model

    def finish(self, model: Any) -> Any:
        merged = self._wrapped.merge_and_unload()
        merged.requires_grad_(True)  # as from_pretrained leaves a model
        return merged


def lora_available() -> str | None:
    """None when LoRA can be used here, else why not (in words)."""
    try:
        import peft  # noqa: F401
    except ImportError:
        return "--lora needs the peft package, which is not installed; install it or fine-tune without --lora"
    return None


@dataclass(frozen=True)
class Finetuned:
    spec: ModelSpec  # the registered entry, lineage included
    out_dir: Path
    result: TrainResult
    registered: bool  # False when the registry already held this entry exactly


def default_model_id(base_id: str, digest: str) -> str:
    """``<base>-ft-<first 8 hex of the data digest>``: the same data on the same base, the same id."""
    return f"{base_id}-ft-{digest[:DIGEST_CHARS]}"


def finetuned_spec(base: ModelSpec, model_id: str, source: str, lineage: Lineage) -> ModelSpec:
    """The base's entry, renamed and pointed at the new checkpoint, with its lineage.

    Settings (tier, mode, image budget, generation limits, dtype) are the base's: the model
    was trained to see pictures at that budget. It is neither a ``tiny`` nor a ``demo``
    entry: nothing may rebuild it over the fine-tuned weights.
    """
    return base.model_copy(
        update={"id": model_id, "source": source, "tiny": False, "demo": False, "lineage": lineage}
    )


def finetune(
    registry_path: str | Path,
    base_id: str,
    data: str | Path,
    out_dir: str | Path,
    plan: FinetunePlan = FinetunePlan(),
    model_id: str | None = None,
    on_progress: Callable[[TrainProgress], None] | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> Finetuned:
    """Fine-tune registry entry ``base_id`` on ``data``, save it as ``out_dir`` and register it.

    Raises `DatasetError` (naming file:line) for a bad dataset and `FinetuneError` for a
    request that cannot be carried out, in both cases before anything is written.
    """
    say = on_stage or (lambda _: None)
    registry_path = Path(registry_path)
    registry = ModelRegistry.load(registry_path)
    root = registry.project_root
    try:
        base = registry.get(base_id)
    except UnknownModelError as exc:
        raise FinetuneError(str(exc)) from exc
    if base.backend != "transformers":
        raise FinetuneError(
            f"model {base_id!r} runs on a remote server (backend {base.backend!r}): "
            "fine-tuning needs its weights in this process"
        )
    if plan.steps < 1 or plan.batch_size < 1 or plan.peak_lr <= 0:
        raise FinetuneError("steps and batch size must be at least 1 and the learning rate above 0")
    if plan.lora:
        if plan.lora_rank < 1:
            raise FinetuneError("the LoRA rank must be at least 1")
        problem = lora_available()
        if problem:
            raise FinetuneError(problem)

    say("reading the dataset")
    examples = read_dataset(Path(data))
    digest = dataset_digest(Path(data))
    new_id = model_id or default_model_id(base_id, digest)
    _check_target(registry, base, new_id, Path(out_dir))

    out = Path(out_dir).resolve()
    config = plan.train_config(base)
    record = {
        "builder": "models finetune",
        "base": base_id,
        "base_source": base.source,
        "data": str(data),
        "data_digest": digest,
        "method": f"lora (rank {plan.lora_rank}, merged)" if plan.lora else "full",
    }
    adapter = LoraAdapter(plan.lora_rank, plan.lora_alpha) if plan.lora else None
    say(f"fine-tuning {base_id}: {len(examples)} examples, {plan.steps} steps of {min(plan.batch_size, len(examples))}")
    result = train(base.resolve_source(root), examples, out, config, on_progress, record, adapter)

    lineage = Lineage(
        base=base_id,
        data=str(data),
        data_digest=digest,
        steps=result.steps,
        final_loss=round(result.final_loss, 6),
        seed=plan.seed,
    )
    spec = finetuned_spec(base, new_id, _source_for(out, root), lineage)
    registered = register_model(registry_path, spec)
    return Finetuned(spec=spec, out_dir=out, result=result, registered=registered)


def _check_target(registry: ModelRegistry, base: ModelSpec, new_id: str, out_dir: Path) -> None:
    """Refuse to overwrite another model's entry or checkpoint, the base's above all."""
    if new_id in registry:
        existing = registry.get(new_id)
        if existing.lineage is None:
            raise FinetuneError(
                f"registry id {new_id!r} is taken by a model that was not fine-tuned here; choose another --id"
            )
    root = registry.project_root
    target = out_dir.resolve()
    for spec in registry:
        local = spec.local_dir(root)
        if local is None or spec.id == new_id:
            continue
        local = local.resolve()
        if target == local or local.is_relative_to(target):
            raise FinetuneError(f"--out {out_dir} holds the checkpoint of registry model {spec.id!r}; choose another")
    if target.exists() and not target.is_dir():
        raise FinetuneError(f"--out {out_dir} is a file, not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / "config.json").exists():
        raise FinetuneError(f"--out {out_dir} is a non-empty directory that holds no checkpoint; choose another")


def _source_for(out: Path, root: Path) -> str:
    """The registry's ``source`` for a checkpoint directory: relative to the project root when inside it."""
    root = root.resolve()
    if out.is_relative_to(root):
        return "./" + out.relative_to(root).as_posix()
    return str(out)
