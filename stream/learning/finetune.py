"""Fine-tuning a registered model on a dataset in Qwen3-VL's format, and registering the result.

`finetune` is what ``idolstream models finetune`` runs:

1. the base is a registry entry, loaded from its checkpoint directory (or cached hub id)
   through the same classes as every other model;
2. the dataset is read and validated with `read_dataset` before anything is written,
   and fingerprinted with `dataset_digest`;
3. `stream.learning.train.train` fine-tunes it, the loss on the assistant turns only,
   and saves a plain checkpoint directory (staged, consistency-checked, renamed into place);
4. a new registry entry (default id ``<base>-ft-<digest[:8]>``) copies the base's settings
   and records its `Lineage`: base id, data file and digest, steps, final loss, seed.

The new model is then one ``switch-model`` away from a running tier.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from stream.errors import IdolstreamError
from stream.learning.dataset import dataset_digest, read_dataset
from stream.learning.train import TrainConfig, TrainProgress, TrainResult, train
from stream.models.errors import UnknownModelError
from stream.models.registry import Lineage, ModelRegistry, ModelSpec, register_model

__all__ = ["FinetuneError", "FinetunePlan", "Finetuned", "default_model_id", "finetune", "finetuned_spec"]

DIGEST_CHARS = 8


class FinetuneError(IdolstreamError):
    """The fine-tuning cannot start as asked (unknown base, a remote base, a clashing id or directory)."""


@dataclass(frozen=True)
class FinetunePlan:
    """How long and how hard to fine-tune. The defaults suit the small models trained here."""

    steps: int = 100
    batch_size: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    lora: bool = False
    lora_rank: int = 8

    def train_config(self, spec: ModelSpec) -> TrainConfig:
        """The loop's settings: this plan, at the base's image budget (as the tier will feed it)."""
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            # A short warm-up: the weights are already trained (or, for tiny ones, tiny).
            warmup_steps=max(1, min(20, self.steps // 10)),
            seed=self.seed,
            max_pixels=spec.max_pixels,
            min_pixels=spec.min_pixels,
        )


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
    if plan.steps < 1 or plan.batch_size < 1 or plan.learning_rate <= 0:
        raise FinetuneError("steps and batch size must be at least 1 and the learning rate above 0")
    if plan.lora:
        raise FinetuneError("--lora is not available yet: fine-tune the whole model (without --lora)")

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
        "method": "full",
    }
    say(f"fine-tuning {base_id}: {len(examples)} examples, {plan.steps} steps of {min(plan.batch_size, len(examples))}")
    result = train(base.resolve_source(root), examples, out, config, on_progress, record)

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
