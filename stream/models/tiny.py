"""Tiny random-weight Qwen3-VL checkpoints, built offline.

No weights can be downloaded here, so tests and the CPU demo use checkpoints that this
module writes from scratch: a byte-level BPE tokenizer trained on a small built-in
corpus, a Qwen3-VL chat template, image/video processor configs and a seeded random
model saved with ``save_pretrained``. The directory loads exactly like a real one
(``AutoTokenizer`` / ``AutoProcessor`` / ``AutoModelForImageTextToText.from_pretrained``).

The pieces are public for other from-scratch builders (the trained demo model):
``ModelShape`` sizes a model, ``build_tokenizer`` trains a tokenizer on any corpus,
``write_scratch_checkpoint`` writes a whole random-weight checkpoint of a shape.

``check_checkpoint_consistency`` verifies the invariants between tokenizer, config and
processor config that transformers does not check itself (a wrong ``mrope_section`` or
deepstack index silently degrades the model instead of raising). It is used on real
checkpoints too.

Run ``python -m stream.models.tiny [config/models.json]`` to build every missing
``tiny: true`` entry of a registry.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from stream.models.errors import ModelLoadError
from stream.models.registry import ModelRegistry, ModelSpec

TinyKind = Literal["moe-instruct", "moe-thinking", "dense-instruct", "dense-thinking", "text-guard"]

# Qwen's control tokens, in Qwen's relative order (real ids start at 151643).
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Added but not special: they survive skip_special_tokens, so a thinking split can see them.
THINK_TOKENS = ("<think>", "</think>")

# The split regex of Qwen2/Qwen3 tokenizers; transformers' Qwen2Tokenizer rebuilds its
# pipeline with it on load, so training with the same pipeline keeps the two identical.
_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# The built-in corpus the tiny tokenizers are trained on (en/zh/ja fan chat).
TINY_CORPUS = """\
Hello everyone, welcome back to the stream! Thank you so much for the drawing, I love it.
What a cute picture of the light stick. Is that the new album? The cover looks amazing.
You drew me with a microphone and a star on my hair, that is so sweet of you.
The danmaku wall is moving so fast today, I can barely read the comments.
Can you solve this maths question? What is twelve plus thirty? The answer is forty-two.
Please be kind in the chat and remember to drink some water.
Good morning, good evening and good night to everyone watching from far away.
I am going to sing one more song before we say goodbye for today.
This photo of the merch table is great, the stickers and the keychains are all sold out.
Let me think about it for a moment. First we look at the picture, then we answer.
The letter is very long, thank you for writing it, I will read every word.
Someone edited our group picture with cat ears, it made me laugh so hard.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 2024 2025 3.14 50% #1 @fan :) <3
大家好，欢迎来到直播间！谢谢你的画，我非常喜欢。
今天的弹幕好多呀，我都看不过来了。记得多喝水哦。
这张照片是新专辑的周边吗？应援棒好漂亮。
这道数学题是多少？十二加三十等于四十二。
晚安，明天见！我爱你们，谢谢大家的礼物和支持。
みなさん、こんばんは！絵をありがとう、とても嬉しいです。
今日も配信に来てくれてありがとう。また明日ね。
"""


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a from-scratch Qwen3-VL model; the defaults are the tiny checkpoints'.

    The defaults are small enough that a CPU forward pass takes milliseconds.
    """

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 16
    # T/H/W rotary sections; they must sum to head_dim // 2 (Qwen3-VL uses [24, 20, 20] for 128).
    mrope_section: tuple[int, int, int] = (4, 2, 2)
    num_experts: int = 4
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 32
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_heads: int = 2
    # A square number: the learned position grid is num_position_embeddings ** 0.5 per side.
    vision_position_embeddings: int = 256
    deepstack_visual_indexes: tuple[int, ...] = (0, 1)
    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    tokenizer_vocab: int = 1024


TINY_SHAPE = ModelShape()
_DEFAULT_PIXELS = {"min_pixels": 64 * 64, "max_pixels": 256 * 256}


def chat_template(thinking: bool) -> str:
    """A Jinja chat template in the Qwen3-VL message format.

    Content is a string or a list of ``{"type": "image"|"video"|"text"}`` parts; every
    image becomes ``<|vision_start|><|image_pad|><|vision_end|>`` (the processor expands
    the pad to the image's token count). Assistant history keeps only the answer after
    ``</think>``. Thinking checkpoints open ``<think>`` in the generation prompt, as the
    real Qwen3-VL Thinking models do.
    """
    generation_prompt = "<|im_start|>assistant\\n" + ("<think>\\n" if thinking else "")
    return (
        "{%- for message in messages -%}\n"
        "{{- '<|im_start|>' + message['role'] + '\\n' -}}\n"
        "{%- if message['content'] is string -%}\n"
        "{%- if message['role'] == 'assistant' and '</think>' in message['content'] -%}\n"
        "{{- message['content'].split('</think>')[-1].lstrip('\\n') -}}\n"
        "{%- else -%}\n"
        "{{- message['content'] -}}\n"
        "{%- endif -%}\n"
        "{%- else -%}\n"
        "{%- for part in message['content'] -%}\n"
        "{%- set kind = part['type'] if part['type'] is defined else '' -%}\n"
        "{%- if kind == 'image' or part['image'] is defined or part['image_url'] is defined -%}\n"
        "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}\n"
        "{%- elif kind == 'video' or part['video'] is defined -%}\n"
        "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}\n"
        "{%- elif part['text'] is defined -%}\n"
        "{{- part['text'] -}}\n"
        "{%- endif -%}\n"
        "{%- endfor -%}\n"
        "{%- endif -%}\n"
        "{{- '<|im_end|>\\n' -}}\n"
        "{%- endfor -%}\n"
        "{%- if add_generation_prompt -%}\n"
        f"{{{{- '{generation_prompt}' -}}}}\n"
        "{%- endif -%}\n"
    )


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """A byte-level BPE ``tokenizers.Tokenizer`` in Qwen's layout, trained on ``corpus`` lines.

    Qwen's control tokens come last, with the highest ids; the ``<think>`` tags are added
    as plain (non-special) tokens.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        show_progress=False,
        # All 256 byte symbols: any text, in any script, stays encodable.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(corpus, trainer)
    # Added after training so they get the highest ids, as in Qwen's vocabulary.
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tokenizer


def _resolve_kind(spec_or_kind: ModelSpec | str) -> tuple[str, str, dict[str, int]]:
    if isinstance(spec_or_kind, ModelSpec):
        spec = spec_or_kind
        return spec.architecture, spec.mode, {"min_pixels": spec.min_pixels, "max_pixels": spec.max_pixels}
    architecture, _, mode = str(spec_or_kind).partition("-")
    if architecture not in ("dense", "moe") or mode not in ("instruct", "thinking"):
        raise ValueError(f"unknown tiny kind {spec_or_kind!r}; expected e.g. 'moe-instruct' or 'dense-thinking'")
    return architecture, mode, dict(_DEFAULT_PIXELS)


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_processor_configs(directory: Path, pixels: Mapping[str, int], shape: ModelShape = TINY_SHAPE) -> None:
    """The image, video and processor configs of a Qwen3-VL checkpoint with this image budget."""
    common = {
        "patch_size": shape.patch_size,
        "merge_size": shape.merge_size,
        "temporal_patch_size": shape.temporal_patch_size,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "rescale_factor": 1 / 255,
        "resample": 3,
        "processor_class": "Qwen3VLProcessor",
    }
    _write_json(
        directory / "preprocessor_config.json",
        {
            **common,
            # AutoImageProcessor picks the torchvision or the PIL backend of this type.
            "image_processor_type": "Qwen2VLImageProcessor",
            "size": {"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"]},
        },
    )
    _write_json(
        directory / "video_preprocessor_config.json",
        {
            **common,
            "video_processor_type": "Qwen3VLVideoProcessor",
            "size": {"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"] * 4},
            "fps": 2,
            "min_frames": 4,
            "max_frames": 16,
            "do_sample_frames": True,
        },
    )
    _write_json(directory / "processor_config.json", {"processor_class": "Qwen3VLProcessor"})


def model_config(architecture: str, tokenizer, vocab_size: int, shape: ModelShape = TINY_SHAPE):
    """A ``Qwen3VLConfig`` (dense) or ``Qwen3VLMoeConfig`` (moe) whose token ids match ``tokenizer``."""
    from transformers import Qwen3VLConfig, Qwen3VLMoeConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text = {
        "vocab_size": vocab_size,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads,
        # Explicit: the dense text config defaults head_dim to 128 whatever hidden_size is.
        "head_dim": shape.head_dim,
        "max_position_embeddings": 8192,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 5_000_000.0,
            "mrope_section": list(shape.mrope_section),
            "mrope_interleaved": True,
        },
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "pad_token_id": ids["<|endoftext|>"],
    }
    vision = {
        "depth": shape.vision_depth,
        "hidden_size": shape.vision_hidden_size,
        "intermediate_size": shape.vision_intermediate_size,
        "num_heads": shape.vision_heads,
        "patch_size": shape.patch_size,
        "spatial_merge_size": shape.merge_size,
        "temporal_patch_size": shape.temporal_patch_size,
        "out_hidden_size": shape.hidden_size,
        "num_position_embeddings": shape.vision_position_embeddings,
        "deepstack_visual_indexes": list(shape.deepstack_visual_indexes),
    }
    token_ids = {
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
    }
    if architecture == "moe":
        text |= {
            "num_experts": shape.num_experts,
            "num_experts_per_tok": shape.num_experts_per_tok,
            "moe_intermediate_size": shape.moe_intermediate_size,
            "decoder_sparse_step": 1,
        }
        return Qwen3VLMoeConfig(text_config=text, vision_config=vision, **token_ids)
    return Qwen3VLConfig(text_config=text, vision_config=vision, **token_ids)


def build_tokenizer(corpus: Iterable[str], vocab_size: int, thinking: bool):
    """A ``Qwen2Tokenizer`` trained on ``corpus``, with the Qwen3-VL chat template."""
    from transformers import Qwen2Tokenizer

    tokenizer = Qwen2Tokenizer(
        tokenizer_object=train_tokenizer(corpus, vocab_size),
        # <|im_end|> ends an assistant turn, so it is what generation stops on.
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        bos_token=None,
        model_max_length=32768,
    )
    tokenizer.chat_template = chat_template(thinking=thinking)
    return tokenizer


def write_scratch_checkpoint(
    directory: Path,
    architecture: str,
    mode: str,
    pixels: Mapping[str, int],
    seed: int,
    *,
    shape: ModelShape = TINY_SHAPE,
    corpus: Iterable[str] | None = None,
) -> None:
    """Write a random-weight checkpoint of ``shape`` into the existing, empty ``directory``.

    The tokenizer is trained on ``corpus`` (default: a small built-in corpus in en/zh/ja).
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    lines = TINY_CORPUS.splitlines() if corpus is None else corpus
    tokenizer = build_tokenizer(lines, shape.tokenizer_vocab, thinking=mode == "thinking")
    tokenizer.save_pretrained(directory)  # tokenizer.json, tokenizer_config.json, chat_template.jinja
    write_processor_configs(directory, pixels, shape)

    # Round the embedding table up like Qwen does (151936 rows for 151669 tokens).
    vocab_size = math.ceil(len(tokenizer) / 64) * 64
    config = model_config(architecture, tokenizer, vocab_size, shape)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config = GenerationConfig(
        bos_token_id=endoftext,
        eos_token_id=[im_end, endoftext],
        pad_token_id=endoftext,
        do_sample=False,
    )
    model.save_pretrained(directory)  # config.json, generation_config.json, model.safetensors


def _write_checkpoint(directory: Path, architecture: str, mode: str, pixels: dict[str, int], seed: int) -> None:
    write_scratch_checkpoint(directory, architecture, mode, pixels, seed)


def build_tiny_checkpoint(
    spec_or_kind: ModelSpec | TinyKind, out_dir: str | Path, seed: int = 0, *, overwrite: bool = False
) -> Path:
    """Build a tiny checkpoint into ``out_dir`` and return it.

    ``spec_or_kind`` is a registry entry (architecture, mode and pixel budget are taken
    from it; a ``text_only`` entry is a text guard) or a kind such as ``"moe-instruct"`` or
    ``"text-guard"``. The files are written to a temporary sibling directory that is renamed
    into place, so ``out_dir`` is never seen half-built. An existing complete checkpoint is
    kept unless ``overwrite`` is set.
    """
    text_guard = spec_or_kind == "text-guard" or (isinstance(spec_or_kind, ModelSpec) and spec_or_kind.text_only)
    if not text_guard:
        architecture, mode, pixels = _resolve_kind(spec_or_kind)
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a checkpoint (pass overwrite=True to replace it)")
    with staged_checkpoint(out_dir) as staging:
        if text_guard:
            # Imported here: that module builds on this one's tokenizer.
            from stream.models.tiny_guard import write_text_guard_checkpoint

            write_text_guard_checkpoint(staging, seed)
        else:
            _write_checkpoint(staging, architecture, mode, pixels, seed)
    return out_dir


@contextlib.contextmanager
def staged_checkpoint(out_dir: Path, purpose: str = "building") -> Iterator[Path]:
    """A temporary sibling of ``out_dir`` to write a checkpoint into.

    When the block ends, the checkpoint is checked (``check_checkpoint_consistency``) and
    renamed into place; when it fails, the staging directory is removed. Either way
    ``out_dir`` is never seen half-written.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{purpose}-", dir=out_dir.parent))
    try:
        yield staging
        check_checkpoint_consistency(staging)
        swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_into_place(staging: Path, out_dir: Path) -> None:
    """Rename the finished ``staging`` directory to ``out_dir``, replacing what is there."""
    if not out_dir.exists():
        os.rename(staging, out_dir)
        return
    # Something (empty, broken or old) is there: move it aside first; readers may briefly
    # find no directory, but never a partial one.
    trash = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.rename(out_dir, trash / out_dir.name)
    os.rename(staging, out_dir)
    shutil.rmtree(trash, ignore_errors=True)


def build_missing(registry: ModelRegistry, project_root: str | Path | None = None) -> list[Path]:
    """Build every ``tiny`` registry entry whose directory has no config.json; return what was built.

    Idempotent: a second call builds nothing. ``project_root`` defaults to the registry's.
    """
    root = Path(project_root) if project_root is not None else registry.project_root
    built: list[Path] = []
    for spec in registry:
        if not spec.tiny:
            continue
        target = spec.local_dir(root)
        if target is None:  # unreachable: tiny sources always resolve to a directory
            raise ModelLoadError(f"tiny model {spec.id!r} has no local directory")
        if spec.tier == "draw":
            built.extend(_build_missing_draw(spec, target, root))
            continue
        if (target / "config.json").exists():
            continue
        built.append(build_tiny_checkpoint(spec, target, overwrite=True))
    return built


def _build_missing_draw(spec: ModelSpec, target: Path, root: Path) -> list[Path]:
    """A tiny draw entry: its Qwen-Image pipeline (model_index.json) and the ControlNet it names."""
    # Imported here: that module builds on this one's tokenizer.
    from stream.draw.tiny import build_tiny_controlnet, build_tiny_draw_pipeline

    built = []
    if not (target / "model_index.json").exists():
        built.append(build_tiny_draw_pipeline(target, overwrite=True))
    controlnet = spec.controlnet_dir(root)
    if controlnet is not None and not (controlnet / "config.json").exists():
        built.append(build_tiny_controlnet(controlnet, overwrite=True))
    return built


# --- consistency ---------------------------------------------------------------------

_VISION_TOKENS = {
    "image_token_id": "<|image_pad|>",
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def checkpoint_problems(
    config: Any,
    tokenizer: Any,
    image_processor_config: Mapping[str, Any] | None = None,
    generation_config: Any = None,
) -> list[str]:
    """Every mismatch between a loaded config, tokenizer and processor settings (empty when fine).

    Works on objects, so the runtime checks real checkpoints it has just loaded too. A
    config without a vision part (a text-only Qwen3, such as a Qwen3Guard-Gen text guard)
    gets the text checks only.
    """
    problems: list[str] = []
    text = config.get_text_config()
    vision = getattr(config, "vision_config", None)

    vocab = tokenizer.get_vocab()
    if len(tokenizer) > text.vocab_size:
        problems.append(f"tokenizer has {len(tokenizer)} tokens but the text vocab_size is {text.vocab_size}")
    if text.num_attention_heads % text.num_key_value_heads:
        problems.append(
            f"num_attention_heads={text.num_attention_heads} not divisible by "
            f"num_key_value_heads={text.num_key_value_heads}"
        )
    im_end = vocab.get("<|im_end|>")
    if generation_config is not None and im_end is not None:
        eos = _as_list(getattr(generation_config, "eos_token_id", None))
        if im_end not in eos:
            problems.append(f"generation eos_token_id={eos} lacks <|im_end|> ({im_end}): replies would never stop")
    for field in ("eos_token_id", "pad_token_id", "bos_token_id"):
        for value in _as_list(getattr(text, field, None)):
            if not 0 <= value < len(tokenizer):
                problems.append(f"text config {field}={value} is not a token of the tokenizer")
    if vision is None:
        return problems

    for field, token in _VISION_TOKENS.items():
        expected = vocab.get(token)
        actual = getattr(config, field, None)
        if expected is None:
            problems.append(f"tokenizer has no {token} token (config {field}={actual})")
        elif actual != expected:
            problems.append(f"config {field}={actual} but the tokenizer's {token} is {expected}")

    if vision.out_hidden_size != text.hidden_size:
        problems.append(
            f"vision_config.out_hidden_size={vision.out_hidden_size} != text_config.hidden_size={text.hidden_size}"
        )

    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    rope = getattr(text, "rope_parameters", None) or {}
    # The model falls back to [24, 20, 20] when the key is missing, so check that value.
    section = list(rope.get("mrope_section", [24, 20, 20]))
    if len(section) != 3 or sum(section) != head_dim // 2:
        problems.append(f"rope mrope_section={section} must be 3 numbers summing to head_dim/2={head_dim // 2}")
    elif 3 * max(section[1], section[2]) > head_dim // 2:
        # H and W frequencies are interleaved every third slot; wider sections are cut off silently.
        problems.append(f"rope mrope_section={section}: H/W sections too wide for head_dim/2={head_dim // 2}")

    deepstack = list(vision.deepstack_visual_indexes)
    bad = [i for i in deepstack if not 0 <= i < vision.depth]
    if bad or len(set(deepstack)) != len(deepstack):
        problems.append(f"deepstack_visual_indexes={deepstack} must be distinct layers below vision depth {vision.depth}")
    if len(deepstack) > text.num_hidden_layers:
        problems.append(
            f"{len(deepstack)} deepstack features but only {text.num_hidden_layers} text layers to inject them into"
        )
    side = math.isqrt(vision.num_position_embeddings)
    if side * side != vision.num_position_embeddings:
        problems.append(f"vision num_position_embeddings={vision.num_position_embeddings} is not a square number")

    if image_processor_config is not None:
        pairs = {
            "patch_size": vision.patch_size,
            "merge_size": vision.spatial_merge_size,
            "temporal_patch_size": vision.temporal_patch_size,
        }
        for key, model_value in pairs.items():
            value = image_processor_config.get(key)
            if value is not None and value != model_value:
                problems.append(f"image processor {key}={value} but the vision model uses {model_value}")
    return problems


def check_checkpoint_consistency(directory: str | Path) -> None:
    """Load a checkpoint directory's config, tokenizer and processor config and check them.

    Raises ``ModelLoadError`` listing every problem found.
    """
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    directory = Path(directory)
    try:
        config = AutoConfig.from_pretrained(directory)
        tokenizer = AutoTokenizer.from_pretrained(directory)
        preprocessor_path = directory / "preprocessor_config.json"
        image_processor_config = (
            json.loads(preprocessor_path.read_text(encoding="utf-8")) if preprocessor_path.exists() else None
        )
        generation_config = (
            GenerationConfig.from_pretrained(directory) if (directory / "generation_config.json").exists() else None
        )
    except Exception as exc:  # noqa: BLE001 - any unreadable file makes the checkpoint unusable
        raise ModelLoadError(f"cannot read checkpoint {directory}: {exc}") from exc
    problems = checkpoint_problems(config, tokenizer, image_processor_config, generation_config)
    if problems:
        raise ModelLoadError(f"checkpoint {directory} is inconsistent:\n  - " + "\n  - ".join(problems))


def main(argv: list[str] | None = None) -> int:
    """Build the registry's missing tiny checkpoints (``build-tiny``)."""
    args = sys.argv[1:] if argv is None else argv
    registry = ModelRegistry.load(args[0] if args else "config/models.json")
    for path in build_missing(registry):
        print(f"built {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
