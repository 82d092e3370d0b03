"""The draw tier's library: she answers drawing requests with a picture (Qwen-Image in diffusers).

    routing   whether a fan's words ask her to draw (zh, en, ja), in which mode, and a fallback
              image prompt in her style from their words, and the prompt with her idea in it
    runner    a loaded pipeline drawing one request per mode, stopped at its deadline
    tiny      a random-weight Qwen-Image pipeline and ControlNet built offline, laid out like the
              real checkpoints, for tests and the CPU demo
"""

from stream.draw.routing import MAX_PROMPT_CHARS, DrawAsk, draw_mode, draw_prompt, draw_request, image_prompt

__all__ = ["MAX_PROMPT_CHARS", "DrawAsk", "draw_mode", "draw_prompt", "draw_request", "image_prompt"]
