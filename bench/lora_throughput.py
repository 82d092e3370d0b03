"""LoRA fine-tuning throughput and memory of a Qwen3-VL shape with random weights.

    .venv/bin/python bench/lora_throughput.py [--shape 4b|demo] [--steps 20] [--batch 4]
        [--image-side 448] [--text-tokens 256] [--device cuda] [--dtype bfloat16]

Builds the model in memory from its config (nothing is downloaded or written), puts the
project's LoRA adapters on it (`stream.learning.finetune.LoraAdapter`, the targets
`models finetune --lora` uses) and runs the training step of `stream.learning.train`
(`assistant_loss`, AdamW, gradient clipping) on synthetic batches: one picture of
`--image-side` pixels square and `--text-tokens` tokens of text per example, the loss on
the last quarter of the text as on an answer. Prints tokens/s (every token of the batch,
picture tokens included), examples/s and, on a GPU, the peak memory; then one JSON line.

`--shape 4b` is the Qwen3-VL-4B-Instruct shape (36 layers of 2560, a 24-block vision
tower of 1024); `--shape demo` is the demo model's, for a quick run on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream.learning.demo_model import DEMO_SHAPE  # noqa: E402
from stream.learning.finetune import LoraAdapter  # noqa: E402
from stream.learning.train import IGNORE_INDEX, TrainConfig, adamw_optimizer, assistant_loss, to_device  # noqa: E402
from stream.models.tiny import SPECIAL_TOKENS, ModelShape, build_tokenizer, model_config  # noqa: E402

# Qwen3-VL-4B-Instruct's config.json, in the builder's terms.
QWEN3_VL_4B = ModelShape(
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    mrope_section=(24, 20, 20),
    vision_depth=24,
    vision_hidden_size=1024,
    vision_intermediate_size=4096,
    vision_heads=16,
    vision_position_embeddings=2304,
    deepstack_visual_indexes=(5, 11, 17),
)
REAL_VOCAB = 151_936
SHAPES = {"4b": (QWEN3_VL_4B, REAL_VOCAB), "demo": (DEMO_SHAPE, None)}
TIED = {"4b"}  # the 4B model's LM head is its embedding table


def synthetic_batch(shape: ModelShape, ids: dict[str, int], vocab: int, batch: int, side: int, text: int, generator):
    """Rows of <vision_start> image pads <vision_end> text, as the processor lays them out, with pixels."""
    import torch

    patches_per_side = side // shape.patch_size
    merged = (patches_per_side // shape.merge_size) ** 2
    patch_dim = 3 * shape.temporal_patch_size * shape.patch_size**2
    rows, pixels, grids = [], [], []
    ordinary = [i for i in range(vocab) if i not in ids.values()]
    for _ in range(batch):
        words = torch.tensor(ordinary)[torch.randint(len(ordinary), (text,), generator=generator)]
        image = [ids["<|vision_start|>"]] + [ids["<|image_pad|>"]] * merged + [ids["<|vision_end|>"]]
        rows.append(torch.cat([torch.tensor(image), words]))
        pixels.append(torch.randn(patches_per_side**2, patch_dim, generator=generator))
        grids.append([1, patches_per_side, patches_per_side])
    input_ids = torch.stack(rows)
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    answer = text // 4
    labels[:, -answer:] = input_ids[:, -answer:]
    mm_types = (input_ids == ids["<|image_pad|>"]).long()
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "mm_token_type_ids": mm_types,
        "pixel_values": torch.cat(pixels),
        "image_grid_thw": torch.tensor(grids),
    }


def main() -> int:
    import torch
    from transformers import AutoModelForImageTextToText

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="4b")
    parser.add_argument("--steps", type=int, default=20, help="measured steps (after 3 warm-up steps)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--image-side", type=int, default=448, help="picture side in pixels (a multiple of 32)")
    parser.add_argument("--text-tokens", type=int, default=256)
    parser.add_argument("--rank", type=int, default=8, help="LoRA rank")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32")
    args = parser.parse_args()

    shape, vocab = SHAPES[args.shape]
    tokenizer = build_tokenizer(["a b c"], 300, thinking=False)
    vocab = vocab or 320
    shape = replace(shape, tokenizer_vocab=vocab)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    dtype = getattr(torch, args.dtype)
    started = time.perf_counter()
    torch.manual_seed(0)
    config = model_config("dense", tokenizer, vocab, shape)
    if args.shape in TIED:
        config.tie_word_embeddings = config.text_config.tie_word_embeddings = True
    with torch.device(args.device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    parameters = sum(p.numel() for p in model.parameters())
    adapter = LoraAdapter(args.rank)
    model = adapter.prepare(model)
    model.train()
    optimizer = adamw_optimizer(model, TrainConfig(learning_rate=1e-4))
    build_s = time.perf_counter() - started

    generator = torch.Generator().manual_seed(0)
    batch = to_device(
        synthetic_batch(shape, ids, vocab, args.batch, args.image_side, args.text_tokens, generator), args.device, dtype
    )
    tokens = batch["input_ids"].numel()

    def step() -> float:
        loss = assistant_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return float(loss.detach())

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    sync()
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    elapsed = time.perf_counter() - t0
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else None

    result = {
        "bench": "lora_throughput",
        "shape": args.shape,
        "parameters": parameters,
        "trainable": adapter.trainable_parameters,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.machine(),
        "dtype": args.dtype,
        "batch": args.batch,
        "tokens_per_example": tokens // args.batch,
        "image_side": args.image_side,
        "steps": args.steps,
        "build_s": round(build_s, 1),
        "step_s": round(elapsed / args.steps, 3),
        "tokens_per_s": round(tokens * args.steps / elapsed, 1),
        "examples_per_s": round(args.batch * args.steps / elapsed, 2),
        "peak_memory_gib": None if peak_gib is None else round(peak_gib, 2),
        "last_loss": round(loss, 4),
    }
    print(f"{args.shape}: {parameters / 1e9:.2f} B parameters, {adapter.trainable_parameters / 1e6:.1f} M trainable "
          f"(LoRA rank {args.rank}), {args.dtype} on {result['device']}")
    print(f"  {args.batch} x {tokens // args.batch} tokens per step: {result['step_s']} s/step, "
          f"{result['tokens_per_s']} tokens/s, {result['examples_per_s']} examples/s"
          + (f", peak {result['peak_memory_gib']} GiB" if peak_gib is not None else ""))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
