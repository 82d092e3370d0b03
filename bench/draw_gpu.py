"""Qwen-Image's denoiser at its real size on a GPU: seconds per picture and peak memory.

    .venv/bin/python bench/draw_gpu.py [--size 1024x1024] [--steps 4,8,50] [--repeats 3]
        [--prompt-tokens 128] [--negative-tokens 6] [--cfg-scale 4.0] [--no-vae] [--compile]
    .venv/bin/python bench/draw_gpu.py --tiny      # a small config, CPU allowed: proves the script runs

Builds ``QwenImageTransformer2DModel`` with Qwen/Qwen-Image's transformer config (60 dual-stream
blocks, 24 heads of 128, text width 3584, 64 packed latent channels in, 16 out, 2x2 patches,
rotary axes 16/56/56: diffusers' class defaults, the same as the published
``transformer/config.json``) from random weights, in bfloat16 on the GPU: nothing is downloaded.
It refuses to run without CUDA unless ``--tiny``.

Each picture is ``QwenImagePipeline``'s own call (its latents, its scheduler with Qwen-Image's
published settings, its denoising loop) with ``output_type="latent"``: without true CFG one
transformer pass per step; with it (``true_cfg_scale`` > 1 and a negative prompt) two, the
second on the negative prompt, as the pipeline does it. The 7B Qwen2.5-VL text encoder is not
loaded: the pipeline gets random prompt embeddings of ``--prompt-tokens`` x 3584 (the width of
the encoder's last hidden state) and, for the negative prompt, ``--negative-tokens`` (a blank
negative prompt is about 6 tokens once the template is dropped); so the figures leave out prompt
encoding, its time and its ~16 GB of weights. Then the VAE decode of one picture
(``AutoencoderKLQwenImage``'s default config, the real VAE's shape, random weights, bfloat16)
is timed on its own; ``--no-vae`` skips it.

Per setting: one uncounted picture first (in 2 steps: same shapes, same kernels), then
``--repeats`` counted ones; prints the median seconds per picture, seconds per transformer
pass and ``torch.cuda.max_memory_allocated`` over the setting's counted pictures (weights
included), then one JSON line. ``--compile`` compiles the repeated transformer blocks first
(``compile_repeated_blocks``; the warm-ups then take minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream.draw.tiny import QWEN_IMAGE_SCHEDULER, TINY_DRAW_SHAPE  # noqa: E402

# transformer/config.json of Qwen/Qwen-Image (diffusers' defaults for the class).
QWEN_IMAGE_TRANSFORMER = {
    "patch_size": 2,
    "in_channels": 64,
    "out_channels": 16,
    "num_layers": 60,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 3584,
    "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}
# vae/config.json of Qwen/Qwen-Image: diffusers' defaults for AutoencoderKLQwenImage.
QWEN_IMAGE_VAE: dict = {}

_tiny = TINY_DRAW_SHAPE
TINY_TRANSFORMER = {
    "patch_size": 2,
    "in_channels": _tiny.latent_channels * 4,
    "out_channels": _tiny.latent_channels,
    "num_layers": _tiny.transformer_layers,
    "attention_head_dim": _tiny.attention_head_dim,
    "num_attention_heads": _tiny.attention_heads,
    "joint_attention_dim": _tiny.text_hidden_size,
    "guidance_embeds": False,
    "axes_dims_rope": tuple(_tiny.axes_dims_rope),
}
TINY_VAE = {
    "base_dim": _tiny.vae_base_dim,
    "z_dim": _tiny.latent_channels,
    "dim_mult": list(_tiny.vae_dim_mult),
    "num_res_blocks": 1,
    "temperal_downsample": list(_tiny.vae_temporal_downsample),
    "latents_mean": [0.0] * _tiny.latent_channels,
    "latents_std": [1.0] * _tiny.latent_channels,
}
VAE_SCALE = 8  # both VAEs: 2 ** len(temperal_downsample)


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height or width)


def count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"


def gib(n_bytes: int) -> float:
    return round(n_bytes / 2**30, 2)


class Device:
    """Where the bench runs: synchronising and peak memory on CUDA, nothing to do on a CPU."""

    def __init__(self, torch, name: str) -> None:
        self.torch, self.name = torch, name
        self.cuda = name == "cuda"

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return gib(self.torch.cuda.max_memory_allocated()) if self.cuda else None

    def describe(self) -> str:
        if self.cuda:
            return self.torch.cuda.get_device_name()
        return f"{platform.machine()} CPU, {os.cpu_count()} cores ({self.torch.get_num_threads()} threads)"


@contextlib.contextmanager
def made_on(torch, device: Device, dtype) -> Iterator[None]:
    """New modules' weights made straight on the device in ``dtype``: 41 GB of bfloat16 for the real
    transformer, never its 82 GB of float32 (the rotary tables are float32 whatever the default)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device.name):
            yield
    finally:
        torch.set_default_dtype(default)


def build_transformer(torch, config: dict, device: Device, dtype):
    """The transformer from random weights, as ``from_pretrained(..., torch_dtype=dtype)`` would lay it out."""
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    with made_on(torch, device, dtype):
        transformer = QwenImageTransformer2DModel(**config)
    return transformer.eval().requires_grad_(False)


def timed(device: Device, run, warm_up, repeats: int) -> tuple[list[float], float | None]:
    """Seconds of each of ``repeats`` calls of ``run`` (after one uncounted ``warm_up()``), and their peak memory."""
    warm_up()
    device.sync()
    device.reset_peak()
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        device.sync()
        seconds.append(time.perf_counter() - t0)
    return seconds, device.peak_gib()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the tiny pipeline's shape (CPU allowed): a smoke run")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT, multiples of 16 (default 1024x1024; tiny 256x256)")
    parser.add_argument("--steps", default=None, help="step counts to time, comma-separated (default 4,8,50; tiny 2,4)")
    parser.add_argument("--repeats", type=int, default=None, help="counted pictures per setting (default 3; tiny 1)")
    parser.add_argument("--prompt-tokens", type=int, default=128, help="length of the random prompt embeddings")
    parser.add_argument("--negative-tokens", type=int, default=6, help="length of the negative prompt's")
    parser.add_argument("--cfg-scale", type=float, default=4.0, help="true_cfg_scale of the CFG runs (> 1)")
    parser.add_argument("--no-vae", action="store_true", help="skip timing the VAE decode")
    parser.add_argument("--compile", action="store_true", help="torch.compile the repeated transformer blocks")
    args = parser.parse_args()
    if args.cfg_scale <= 1.0:
        parser.error("--cfg-scale must be above 1: at 1 the pipeline runs no CFG")

    import torch

    if not args.tiny and not torch.cuda.is_available():
        print("draw_gpu.py: no CUDA device here. The real Qwen-Image transformer (20B parameters, about 41 GB in "
              "bfloat16) needs an NVIDIA GPU with at least 80 GB; run it on one, or pass --tiny for a smoke run "
              "of the small shape on this CPU.", file=sys.stderr)
        return 2

    import diffusers
    from diffusers import AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline

    diffusers.utils.logging.set_verbosity_error()  # each call warns that prompt_embeds come without a mask
    device = Device(torch, "cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.cuda else torch.float32
    width, height = parse_size(args.size or ("256x256" if args.tiny else "1024x1024"))
    steps_list = [int(s) for s in (args.steps or ("2,4" if args.tiny else "4,8,50")).split(",") if s]
    repeats = args.repeats if args.repeats is not None else (1 if args.tiny else 3)
    config, vae_config = (TINY_TRANSFORMER, TINY_VAE) if args.tiny else (QWEN_IMAGE_TRANSFORMER, QWEN_IMAGE_VAE)
    if width % (VAE_SCALE * 2) or height % (VAE_SCALE * 2):
        parser.error(f"--size {width}x{height}: both sides must be multiples of {VAE_SCALE * 2}")

    t0 = time.perf_counter()
    transformer = build_transformer(torch, config, device, dtype)
    device.sync()
    build_s = time.perf_counter() - t0
    params = sum(p.numel() for p in transformer.parameters())
    weights_gib = gib(sum(p.numel() * p.element_size() for p in transformer.parameters()))
    if args.compile:
        transformer.compile_repeated_blocks(fullgraph=True)
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER), vae=None,
                             text_encoder=None, tokenizer=None, transformer=transformer)
    pipe.set_progress_bar_config(disable=True)

    text_width = config["joint_attention_dim"]
    embed = torch.Generator(device.name).manual_seed(1)
    prompt = torch.randn(1, args.prompt_tokens, text_width, generator=embed, device=device.name, dtype=dtype)
    negative = torch.randn(1, args.negative_tokens, text_width, generator=embed, device=device.name, dtype=dtype)
    ones = {"device": device.name, "dtype": torch.long}
    conditioning = {"prompt_embeds": prompt, "prompt_embeds_mask": torch.ones(1, args.prompt_tokens, **ones)}
    with_cfg = {"negative_prompt_embeds": negative,
                "negative_prompt_embeds_mask": torch.ones(1, args.negative_tokens, **ones),
                "true_cfg_scale": args.cfg_scale}
    image_tokens = (width // VAE_SCALE // 2) * (height // VAE_SCALE // 2)

    def picture(steps: int, cfg: bool):
        kwargs = {**conditioning, **(with_cfg if cfg else {})}
        return pipe(**kwargs, width=width, height=height, num_inference_steps=steps, output_type="latent",
                    generator=torch.Generator(device.name).manual_seed(0)).images

    print(f"device: {device.describe()}; torch {torch.__version__}, diffusers {diffusers.__version__}")
    print(f"transformer: {'tiny shape' if args.tiny else 'Qwen/Qwen-Image shape'}, {config['num_layers']} blocks, "
          f"{count(params)} parameters, {weights_gib} GiB in {str(dtype).removeprefix('torch.')}, random weights, "
          f"built in {build_s:.1f} s{'; blocks compiled' if args.compile else ''}")
    print(f"picture: {width}x{height} ({image_tokens} image tokens); prompt: RANDOM embeddings of "
          f"{args.prompt_tokens} x {text_width} (no text encoder: prompt encoding not included), negative prompt "
          f"{args.negative_tokens} tokens; true CFG scale {args.cfg_scale}; 1 warm-up + {repeats} counted per setting")
    print(f"{'steps':>5}  {'true CFG':<9}{'passes':>7}{'median s':>10}{'min s':>8}{'s/pass':>8}{'peak GiB':>10}")
    rows = []
    with torch.inference_mode():
        for steps in steps_list:
            for cfg in (False, True):
                # The warm-up draws in 2 steps: the shapes, hence the kernels (and compiled code), are the same.
                seconds, peak = timed(device, lambda: picture(steps, cfg), lambda: picture(min(steps, 2), cfg),
                                      repeats)
                passes = steps * (2 if cfg else 1)
                median = statistics.median(seconds)
                row = {"steps": steps, "true_cfg": cfg, "passes": passes, "median_s": round(median, 3),
                       "min_s": round(min(seconds), 3), "s_per_pass": round(median / passes, 4), "peak_gib": peak}
                rows.append(row)
                print(f"{steps:>5}  {'on' if cfg else 'off':<9}{passes:>7}{row['median_s']:>10}{row['min_s']:>8}"
                      f"{row['s_per_pass']:>8}{peak if peak is not None else '-':>10}")
        vae_row = None
        if not args.no_vae:
            del pipe, transformer  # the decode runs after the denoiser in the pipeline; measured alone here
            if device.cuda:
                torch.cuda.empty_cache()
            torch.manual_seed(2)
            with made_on(torch, device, dtype):
                vae = AutoencoderKLQwenImage(**vae_config)
            vae = vae.eval().requires_grad_(False)
            latents = torch.randn(1, vae.config.z_dim, 1, height // VAE_SCALE, width // VAE_SCALE,
                                  device=device.name, dtype=dtype)
            decode = lambda: vae.decode(latents, return_dict=False)[0]  # noqa: E731
            seconds, peak = timed(device, decode, decode, repeats)
            vae_params = sum(p.numel() for p in vae.parameters())
            vae_row = {"median_s": round(statistics.median(seconds), 3), "min_s": round(min(seconds), 3),
                       "peak_gib": peak, "parameters": vae_params}
            print(f"VAE decode of one {width}x{height} picture ({count(vae_params)} parameters, alone on the "
                  f"device): median {vae_row['median_s']} s, min {vae_row['min_s']} s, peak "
                  f"{peak if peak is not None else '-'} GiB")
    print(json.dumps({"device": device.describe(), "tiny": args.tiny, "dtype": str(dtype), "width": width,
                      "height": height, "parameters": params, "weights_gib": weights_gib, "build_s": round(build_s, 1),
                      "prompt_tokens": args.prompt_tokens, "negative_tokens": args.negative_tokens,
                      "cfg_scale": args.cfg_scale, "compiled": args.compile, "repeats": repeats,
                      "denoise": rows, "vae_decode": vae_row}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
