"""Tiny random-weight Qwen-Image pipelines, built offline.

No weights can be downloaded here, so the draw tier's tests and the CPU demo use a
pipeline that this module writes from scratch, laid out like ``Qwen/Qwen-Image`` on the
hub: ``model_index.json`` naming ``QwenImagePipeline`` and one folder per component,

* ``transformer/`` a ``QwenImageTransformer2DModel`` (the MMDiT denoiser),
* ``vae/`` an ``AutoencoderKLQwenImage`` with the real one's 8x spatial scale factor,
* ``text_encoder/`` a ``Qwen2_5_VLForConditionalGeneration`` (vision tower included: the
  edit pipelines feed it the fan's picture),
* ``tokenizer/`` a byte-level BPE ``Qwen2Tokenizer`` trained here, with Qwen's control tokens,
* ``scheduler/`` a ``FlowMatchEulerDiscreteScheduler`` with Qwen-Image's published settings,

all saved with ``save_pretrained`` so that ``DiffusionPipeline.from_pretrained(directory)``
loads it exactly as it loads the real one. A ``QwenImageControlNetModel`` of the same shape
is written to its own directory, as ControlNets are published, and is passed to
``QwenImageControlNetPipeline.from_pretrained(directory, controlnet=...)``.

The pipelines drop the first ``prompt_template_encode_start_idx`` hidden states of the
text encoder: the system prompt of their template, 34 tokens with Qwen's tokenizer. The
tiny tokenizer is trained on those templates so that it spends the same number of tokens
on them; ``template_problems`` checks it (otherwise the template's tail would silently
reach the denoiser as if the fan had written it).

Random weights draw noise-like pictures: the tiny pipeline exists to run the real
loading, prompting, conditioning and decoding path, not to draw well.

Run ``python -m stream.draw.tiny OUT_DIR [CONTROLNET_DIR]`` to build both.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stream.models.tiny import SPECIAL_TOKENS, TINY_CORPUS, build_tokenizer, swap_into_place

# scheduler/scheduler_config.json of Qwen/Qwen-Image: the shift grows with the picture's
# token count (``use_dynamic_shifting``), so small pictures get a milder schedule.
QWEN_IMAGE_SCHEDULER = {
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "invert_sigmas": False,
    "max_image_seq_len": 8192,
    "max_shift": 0.9,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.02,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

# The system prompts of the Qwen-Image pipelines' templates (text-to-image, ControlNet,
# img2img and inpainting share the first; the edit pipelines use the second). The tokenizer
# learns them whole so that the pipelines' fixed drop index lands where it does with Qwen's.
_TEMPLATE_SYSTEM_PROMPTS = (
    "Describe the image by detailing the color, shape, size, texture, quantity, text, spatial "
    "relationships of the objects and background:",
    "Describe the key features of the input image (color, shape, size, texture, objects, background), "
    "then explain how the user's text instruction should alter or modify the image. Generate a new image "
    "that meets the user's requirements while maintaining consistency with the original input where "
    "appropriate.",
)

# Drawing requests as fans write them, and image prompts as the fast model writes them.
_DRAW_CORPUS = """\
Draw me with my cat under the stars, please!
Can you draw us watching the fireworks together?
A cheerful idol girl with a star hair clip waving at the camera, pastel colours, anime style.
She stands on a stage with a microphone, pink and blue lights, confetti in the air.
Put yourself in this picture next to me, holding the light stick.
画一个我和你一起看星星
帮我画一只戴着蝴蝶结的小猫，和你一起唱歌。
一个可爱的偶像女孩在舞台上唱歌，粉色和蓝色的灯光。
私と一緒に桜を見ている絵を描いて!
猫と一緒にいる私を描いてください。
"""


@dataclass(frozen=True)
class DrawShape:
    """The sizes of a from-scratch Qwen-Image pipeline; the defaults are the tiny one's.

    The real model: 60 transformer layers of 24 heads x 128, a 3584-wide Qwen2.5-VL-7B text
    encoder, 16 latent channels. What must agree: ``sum(axes_dims_rope) == attention_head_dim``,
    ``sum(mrope_section) == text head dim / 2``, the transformer's ``in_channels`` is four
    times the VAE's latent channels (2x2 patches), its ``joint_attention_dim`` is the text
    encoder's width. The VAE downsamples ``len(vae_dim_mult) - 1`` times, and the pipelines
    take its scale factor as ``2 ** len(vae_temporal_downsample)`` (one flag per level): 8
    here, as in the real VAE, so picture sizes must be multiples of 16 (8 x the 2x2 patch).
    """

    transformer_layers: int = 2
    attention_heads: int = 2
    attention_head_dim: int = 16
    # Frame, height and width rotary dimensions (the real model: 16, 56, 56 of 128).
    axes_dims_rope: tuple[int, int, int] = (4, 6, 6)
    # Scale of the attention's query/key norms (1 at initialisation). Trained attention is
    # peaked; flat random attention averages the few text tokens away among the picture's,
    # and the prompt would barely change the picture.
    attention_sharpness: float = 4.0
    controlnet_layers: int = 2
    # Spread of the ControlNet's output projections (zero in an untrained one).
    controlnet_init_std: float = 0.2
    latent_channels: int = 4
    vae_base_dim: int = 8
    vae_dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    vae_temporal_downsample: tuple[bool, ...] = (False, True, True)
    text_hidden_size: int = 32
    text_intermediate_size: int = 64
    text_layers: int = 2
    text_heads: int = 2
    text_kv_heads: int = 1
    mrope_section: tuple[int, int, int] = (2, 3, 3)
    vision_depth: int = 2
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_heads: int = 2
    tokenizer_vocab: int = 2048


TINY_DRAW_SHAPE = DrawShape()


def draw_corpus() -> list[str]:
    """The lines the tiny tokenizer is trained on: whole templated prompts (weighted), fan chat."""
    requests = _DRAW_CORPUS.splitlines()
    templated = [
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{request}<|im_end|>\n<|im_start|>assistant\n"
        for system in _TEMPLATE_SYSTEM_PROMPTS
        for request in requests
    ]
    # Repeated so that every word of the templates wins its merges over the fan chat's.
    return templated * 5 + TINY_CORPUS.splitlines() + requests


def build_draw_tokenizer(shape: DrawShape = TINY_DRAW_SHAPE):
    """A ``Qwen2Tokenizer`` (byte-level BPE plus Qwen's control tokens) trained on ``draw_corpus()``."""
    return build_tokenizer(draw_corpus(), shape.tokenizer_vocab, thinking=False)


def text_encoder_config(tokenizer, shape: DrawShape = TINY_DRAW_SHAPE):
    """A ``Qwen2_5_VLConfig`` whose token ids match ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig

    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    # Rounded up like Qwen's embedding tables (152064 rows for 151665 tokens).
    vocab_size = -(-len(tokenizer) // 64) * 64
    text = {
        "vocab_size": vocab_size,
        "hidden_size": shape.text_hidden_size,
        "intermediate_size": shape.text_intermediate_size,
        "num_hidden_layers": shape.text_layers,
        "num_attention_heads": shape.text_heads,
        "num_key_value_heads": shape.text_kv_heads,
        "max_position_embeddings": 8192,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": list(shape.mrope_section),
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
        "out_hidden_size": shape.text_hidden_size,
        # Blocks with full attention (the others attend within windows); the last one here.
        "fullatt_block_indexes": [shape.vision_depth - 1],
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def _transformer_kwargs(shape: DrawShape, layers: int) -> dict:
    return {
        "patch_size": 2,
        "in_channels": shape.latent_channels * 4,
        "out_channels": shape.latent_channels,
        "num_layers": layers,
        "attention_head_dim": shape.attention_head_dim,
        "num_attention_heads": shape.attention_heads,
        "joint_attention_dim": shape.text_hidden_size,
        "axes_dims_rope": tuple(shape.axes_dims_rope),
    }


def template_problems(pipeline) -> list[str]:
    """What is wrong between ``pipeline``'s prompt template and its tokenizer (empty when nothing).

    The pipeline drops a fixed number of leading hidden states, meant to be its system
    prompt; a tokenizer that spells the system prompt in more tokens leaks template text into
    the prompt embeddings, one that spells it in fewer drops the fan's words. Nothing raises.
    """
    template = getattr(pipeline, "prompt_template_encode", None)
    drop = getattr(pipeline, "prompt_template_encode_start_idx", None)
    if template is None or drop is None:
        return []
    # The system turn and the opening of the user turn: what the pipeline means to drop.
    head = template[: template.index("<|im_start|>user\n") + len("<|im_start|>user\n")]
    spent = len(pipeline.tokenizer(head, add_special_tokens=False)["input_ids"])
    if spent != drop:
        return [f"{type(pipeline).__name__} drops {drop} template tokens, but this tokenizer spells them in {spent}"]
    return []


@contextlib.contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """A temporary sibling of ``out_dir``, renamed into place when the block succeeds."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
    try:
        yield staging
        swap_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _refuse_existing(out_dir: Path, marker: str, overwrite: bool) -> None:
    if (out_dir / marker).exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a build (pass overwrite=True to replace it)")


def build_tiny_draw_pipeline(
    out_dir: str | Path, seed: int = 0, *, shape: DrawShape = TINY_DRAW_SHAPE, overwrite: bool = False
) -> Path:
    """Write a random-weight ``QwenImagePipeline`` into ``out_dir`` and return it.

    Same ``seed``, same weights. The directory is written beside ``out_dir`` and renamed
    into place, so it is never seen half-built.
    """
    import torch
    from diffusers import (
        AutoencoderKLQwenImage,
        FlowMatchEulerDiscreteScheduler,
        QwenImagePipeline,
        QwenImageTransformer2DModel,
    )
    from transformers import Qwen2_5_VLForConditionalGeneration

    out_dir = Path(out_dir)
    _refuse_existing(out_dir, "model_index.json", overwrite)
    tokenizer = build_draw_tokenizer(shape)
    z = shape.latent_channels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = QwenImageTransformer2DModel(**_transformer_kwargs(shape, shape.transformer_layers))
        with torch.no_grad():
            for block in transformer.transformer_blocks:
                for norm in (block.attn.norm_q, block.attn.norm_k, block.attn.norm_added_q, block.attn.norm_added_k):
                    norm.weight.fill_(shape.attention_sharpness)
        torch.manual_seed(seed + 1)
        vae = AutoencoderKLQwenImage(
            base_dim=shape.vae_base_dim,
            z_dim=z,
            dim_mult=list(shape.vae_dim_mult),
            num_res_blocks=1,
            temperal_downsample=list(shape.vae_temporal_downsample),
            # The real VAE's per-channel statistics normalise its latents; random ones have none.
            latents_mean=[0.0] * z,
            latents_std=[1.0] * z,
        )
        torch.manual_seed(seed + 2)
        text_encoder = Qwen2_5_VLForConditionalGeneration(text_encoder_config(tokenizer, shape))
    pipeline = QwenImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**QWEN_IMAGE_SCHEDULER),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        transformer=transformer.eval(),
    )
    problems = template_problems(pipeline)
    if problems:
        raise ValueError("; ".join(problems))
    with _staged(out_dir) as staging:
        pipeline.save_pretrained(staging)
    return out_dir


def build_tiny_controlnet(
    out_dir: str | Path, seed: int = 0, *, shape: DrawShape = TINY_DRAW_SHAPE, overwrite: bool = False
) -> Path:
    """Write a random-weight ``QwenImageControlNetModel`` matching the tiny pipeline into ``out_dir``.

    Its zero-initialised output projections are replaced by random ones (as after training),
    so the control image visibly changes the picture.
    """
    import torch
    from diffusers import QwenImageControlNetModel

    out_dir = Path(out_dir)
    _refuse_existing(out_dir, "config.json", overwrite)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 3)
        controlnet = QwenImageControlNetModel(**_transformer_kwargs(shape, shape.controlnet_layers))
        with torch.no_grad():
            # diffusers zero-initialises these so that an untrained ControlNet changes nothing.
            for layer in [*controlnet.controlnet_blocks, controlnet.controlnet_x_embedder]:
                layer.weight.normal_(0.0, shape.controlnet_init_std)
    with _staged(out_dir) as staging:
        controlnet.eval().save_pretrained(staging)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """``python -m stream.draw.tiny OUT_DIR [CONTROLNET_DIR]``: build the tiny pipeline (and ControlNet)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or len(args) > 2:
        print(main.__doc__, file=sys.stderr)
        return 2
    print(f"built {build_tiny_draw_pipeline(args[0], overwrite=True)}")
    if len(args) == 2:
        print(f"built {build_tiny_controlnet(args[1], overwrite=True)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
