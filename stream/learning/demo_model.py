"""The demo model: a small Qwen3-VL checkpoint trained here, from scratch, to see the picture.

`build_demo_model` writes a synthetic dataset (``producers.training_data``), builds a
random-weight Qwen3-VL dense checkpoint of `DEMO_SHAPE` whose tokenizer is trained on the
persona's instructions and the dataset's texts (so replies in en/zh/ja are short token
sequences), trains it with `stream.learning.train` and saves it as a real checkpoint
directory. The image budget is the registry entry's: training sees pictures exactly as
the fast tier will feed them. `build_missing_checkpoints` builds whatever the registry
lists as made here (tiny and demo entries) and is missing, once; the demo and the tests
share it.

`score_replies` checks answers against the held-out pictures' known facts: the
dominant colour named (and no other), the fan's name copied, the fan's language kept.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from stream.learning.train import TrainConfig, TrainProgress, TrainResult, train, training_bar
from stream.models.registry import ModelRegistry, ModelSpec
from stream.models.tiny import ModelShape, build_missing, write_scratch_checkpoint
from stream.persona import Persona, system_prompt

DEMO_MODEL_ID = "demo-qwen3vl"

# ~1.2M parameters, 0.5M of them in the vision tower. Twice as wide as the tiny shape;
# two vision blocks suffice for colours at a 16-token image budget. The tokenizer stops
# short of tokenizer_vocab (~1.5k tokens) once every word of its corpus is one token.
DEMO_SHAPE = ModelShape(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=32,
    # Sums to head_dim / 2; H and W at most a third of it each.
    mrope_section=(6, 5, 5),
    vision_depth=2,
    vision_hidden_size=64,
    vision_intermediate_size=128,
    vision_heads=2,
    vision_position_embeddings=256,
    deepstack_visual_indexes=(0, 1),
    tokenizer_vocab=2048,
)


# The entry config/models.json ships; used where a registry lacks it. 128x128 pixels is 16
# image tokens (patch 16, merge 2): plenty to see a colour, and cheap to train on.
DEMO_ENTRY = {
    "id": DEMO_MODEL_ID,
    "source": f"var/models/{DEMO_MODEL_ID}",
    "architecture": "dense",
    "mode": "instruct",
    "tier": "fast",
    "dtype": "float32",
    "max_pixels": 128 * 128,
    "min_pixels": 64 * 64,
    "max_new_tokens": 48,
    "temperature": 0.0,
    "demo": True,
}


def demo_spec(registry: ModelRegistry, out: str | Path | None, project_root: Path) -> ModelSpec:
    """The registry's demo entry (or the shipped one), its source moved to ``out`` when given."""
    spec = registry.get(DEMO_MODEL_ID) if DEMO_MODEL_ID in registry else ModelSpec.model_validate(DEMO_ENTRY)
    if out is None:
        return spec
    target = Path(out).resolve()
    root = Path(project_root).resolve()
    source = str(target.relative_to(root)) if target.is_relative_to(root) else str(target)
    return spec.model_copy(update={"source": source})


@dataclass(frozen=True)
class DemoPlan:
    """How much data and training the demo model gets (the defaults fit ~3 minutes on 2 cores)."""

    examples: int = 1000
    steps: int = 500
    batch_size: int = 16
    learning_rate: float = 4e-3
    seed: int = 0


def _texts(example) -> list[str]:
    """The user and assistant texts of an example (the system prompt is the persona's)."""
    texts = []
    for message in example.messages:
        if message["role"] == "system":
            continue
        content = message["content"]
        if isinstance(content, str):
            texts.append(content)
        else:
            texts.extend(part["text"] for part in content if part.get("type") == "text")
    return texts


def demo_corpus(persona: Persona, examples: Sequence) -> list[str]:
    """The tokenizer's training text: the persona's instructions and every text of the dataset."""
    return [system_prompt(persona), *persona.spoken_lines()] + [
        text for example in examples for text in _texts(example)
    ]


# Bump when the data generator or the reply templates change what the model should learn.
DATA_VERSION = 5  # 3: fan memory lines in prompts, regulars welcomed back; 4: bodies within bounds with it;
# 5: fans asking her to draw, answered [draw] and her idea for the picture


def demo_recipe(persona: Persona, spec: ModelSpec, plan: DemoPlan) -> str:
    """A digest of everything the demo model learns from; a checkpoint of another recipe is stale.

    The persona's prompt and lines are in it: after the persona changes, the model would be
    asked in words it never saw, so `build_missing_checkpoints` trains it again.
    """
    recipe = {
        "data_version": DATA_VERSION,
        "system_prompt": system_prompt(persona),
        "fan_memory": persona.fan_memory.model_dump(),
        "lines": persona.spoken_lines(),
        "catchphrases": persona.catchphrases,
        "languages": persona.languages,
        "plan": asdict(plan),
        "shape": asdict(DEMO_SHAPE),
        "pixels": [spec.min_pixels, spec.max_pixels],
        "architecture": [spec.architecture, spec.mode],
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def trained_recipe(checkpoint: Path) -> str | None:
    """The recipe a trained demo checkpoint records, or None (missing, or not trained here)."""
    try:
        return json.loads((checkpoint / "training.json").read_text(encoding="utf-8")).get("recipe")
    except (OSError, ValueError):
        return None


def build_demo_model(
    spec: ModelSpec,
    out_dir: str | Path,
    persona: Persona,
    plan: DemoPlan = DemoPlan(),
    on_progress: Callable[[TrainProgress], None] | None = None,
    work_dir: str | Path | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> TrainResult:
    """Generate the data, build the scratch checkpoint, train it and save it as ``out_dir``.

    ``work_dir`` (default: a temporary directory, removed afterwards) holds the dataset
    and the untrained base checkpoint. ``on_stage`` hears what is starting, in words.
    """
    say = on_stage or (lambda _: None)
    from producers.training_data import write_training_data
    from stream.learning.dataset import dataset_digest, read_dataset

    scratch = Path(tempfile.mkdtemp(prefix="demo-model-")) if work_dir is None else Path(work_dir)
    try:
        say(f"drawing {plan.examples} training pictures")
        data = write_training_data(scratch / "data", plan.examples, plan.seed, persona, max_pixels=spec.max_pixels)
        examples = read_dataset(data)
        say("training a tokenizer and building the untrained model")
        base = scratch / "base"
        base.mkdir(parents=True, exist_ok=True)
        pixels = {"min_pixels": spec.min_pixels, "max_pixels": spec.max_pixels}
        write_scratch_checkpoint(
            base, spec.architecture, spec.mode, pixels, plan.seed, shape=DEMO_SHAPE, corpus=demo_corpus(persona, examples)
        )
        config = TrainConfig(
            steps=plan.steps,
            batch_size=plan.batch_size,
            learning_rate=plan.learning_rate,
            seed=plan.seed,
            max_pixels=spec.max_pixels,
            min_pixels=spec.min_pixels,
        )
        record = {
            "builder": "train-demo",
            "base": "from scratch",
            "shape": asdict(DEMO_SHAPE),
            "data": "producers.training_data",
            "data_seed": plan.seed,
            "data_digest": dataset_digest(data),
            "recipe": demo_recipe(persona, spec, plan),
        }
        say(f"training: {plan.steps} steps of {plan.batch_size} pictures")
        return train(base, examples, out_dir, config, on_progress, record)
    finally:
        if work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def build_missing_checkpoints(
    registry: ModelRegistry,
    project_root: str | Path | None = None,
    *,
    demo: bool = True,
    persona: Persona | None = None,
    plan: DemoPlan = DemoPlan(),
    progress_bar: bool = False,
) -> list[Path]:
    """Build every registry checkpoint that is made here and missing; return what was built.

    ``tiny`` entries get random weights (``stream.models.tiny.build_missing``, seconds);
    with ``demo``, ``demo`` entries are trained with the train-demo recipe (``plan``, a
    few minutes on a CPU). A tiny entry counts as present once its directory has a
    config.json; a demo entry once it also records the current recipe (`demo_recipe`), so
    a changed persona trains it again and a second call builds nothing. ``persona``
    defaults to the project's config/persona.json; ``progress_bar`` shows each training on
    stderr with an ETA.
    """
    root = Path(project_root) if project_root is not None else registry.project_root
    built = build_missing(registry, root)
    if not demo:
        return built
    for spec in registry:
        target = spec.local_dir(root)
        if not spec.demo or target is None:
            continue
        persona = persona or Persona.load(root / "config" / "persona.json")
        present = (target / "config.json").exists()
        if present and trained_recipe(target) == demo_recipe(persona, spec, plan):
            continue
        if progress_bar:
            why = "the persona or the recipe changed since it was trained" if present else "once"
            print(f"training {spec.id} from scratch ({why}): {plan.examples} pictures, {plan.steps} steps",
                  file=sys.stderr, flush=True)
            with training_bar(plan.steps) as (on_progress, on_stage):
                build_demo_model(spec, target, persona, plan, on_progress=on_progress, on_stage=on_stage)
        else:
            build_demo_model(spec, target, persona, plan)
        built.append(target)
    return built


def held_out_requests(persona: Persona, spec: ModelSpec, count: int, seed: int, draw: bool = False) -> list[tuple]:
    """``(GenerationRequest, PictureFacts)`` for held-out pictures, built as the fast tier builds them.

    The full-size submission's image is decoded and admitted to ``spec``'s budget and the
    messages come from ``build_messages``; none of these pictures is in a training set.
    ``draw``: pictures whose fan asks her to draw (`held_out_draw_requests`).
    """
    from producers.training_data import held_out_draw_requests, held_out_submissions
    from stream.images import ImageLimits, admit_image, decode_base64_image
    from stream.models.runtime import GenerationRequest
    from stream.persona import build_messages

    limits = ImageLimits(max_pixels=spec.max_pixels)
    pairs = []
    for submission, facts in (held_out_draw_requests if draw else held_out_submissions)(count, seed):
        image = admit_image(decode_base64_image(submission.image.data), limits).image
        pairs.append((GenerationRequest(build_messages(persona, submission), [image]), facts))
    return pairs


def answer_held_out(runner, persona: Persona, count: int, seed: int, batch: int = 8,
                    draw: bool = False) -> tuple[list[str], list]:
    """The runner's answers to ``count`` held-out pictures (``draw``: drawing requests), in batches,
    and the pictures' facts."""
    pairs = held_out_requests(persona, runner.spec, count, seed, draw)
    replies: list[str] = []
    for start in range(0, len(pairs), batch):
        replies += [result.text for result in runner.generate([request for request, _ in pairs[start : start + batch]])]
    return replies, [facts for _, facts in pairs]


# --- scoring ----------------------------------------------------------------------------

_KANA = re.compile(r"[\u3040-\u30ff]")
_HAN = re.compile(r"[\u4e00-\u9fff]")


def reply_language(text: str) -> str:
    """"ja" when the text has kana, "zh" when it has Han characters only, else "en"."""
    if _KANA.search(text):
        return "ja"
    return "zh" if _HAN.search(text) else "en"


@dataclass(frozen=True)
class ReplyScore:
    count: int
    colour: int  # replies naming the picture's dominant colour and no other
    name: int  # replies that copy the fan's name
    language: int  # replies in the fan's language

    @property
    def colour_accuracy(self) -> float:
        return self.colour / self.count if self.count else 0.0


def score_replies(replies: Sequence[str], facts: Sequence) -> ReplyScore:
    """Score answers against the facts (``PictureFacts``) of the pictures they answer, in order."""
    from stream.learning.replies import names_colour

    if len(replies) != len(facts):
        raise ValueError(f"{len(replies)} replies for {len(facts)} pictures")
    pairs = list(zip(replies, facts, strict=True))
    return ReplyScore(
        count=len(pairs),
        colour=sum(names_colour(reply, fact.colour) for reply, fact in pairs),
        name=sum(fact.name in reply for reply, fact in pairs),
        language=sum(reply_language(reply) == fact.lang for reply, fact in pairs),
    )
