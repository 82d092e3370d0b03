"""Seconds per picture of a draw model on this machine, by mode and picture size.

    .venv/bin/python bench/draw_pipeline.py [--model tiny-qwen-image] [--sizes 128x128,256x256]
        [--steps 4] [--repeats 5] [--warmup 1] [--modes text_to_image,pose,img2img,outpaint] [--threads N]

Loads the registry entry as the draw tier does (``DrawRunner``: ``DiffusionPipeline.from_pretrained``,
the ControlNet the entry names, the other modes' pipelines derived with ``from_pipe``), once
per size, with the entry's settings except size and steps; a tiny entry's pipeline is built
first when it is missing. The conditioned modes (pose, img2img, outpaint) draw from the same
fan picture (a 320x240 poster, ``producers.samples.draw_fan_image``). A picture is timed from
calling ``DrawRunner.draw`` to getting the finished picture back: prompt encoding, picture
encoding, the denoising steps, decoding, and outpaint's paste-back. Warm-up pictures are not
counted. img2img runs fewer steps than asked (the entry's strength skips the first ones), so
steps/s (the median of steps over seconds, each picture's) is from the steps each picture
actually ran, and includes the work around the steps. Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from producers.client import build_submission  # noqa: E402
from producers.samples import draw_fan_image  # noqa: E402
from stream.contracts import DrawRequest, Source, Timings, new_id, utcnow  # noqa: E402
from stream.draw.runner import DrawRunner  # noqa: E402
from stream.models.registry import DrawSettings, ModelRegistry, ModelSpec  # noqa: E402
from stream.models.tiny import build_missing  # noqa: E402
from stream.reasons import RouteReason  # noqa: E402

MODES = ("text_to_image", "pose", "img2img", "outpaint")
PROMPT = "A cheerful idol girl with a star hair clip waving at the camera, pastel colours, anime style."


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height or width)


def sized(spec: ModelSpec, width: int, height: int, steps: int) -> ModelSpec:
    """The entry drawing at ``width`` x ``height`` in ``steps`` steps, with no deadline worth the name."""
    draw = DrawSettings.model_validate({**spec.draw.model_dump(), "width": width, "height": height, "steps": steps,
                                        "deadline_ms": 600_000})
    return spec.model_copy(update={"draw": draw})


def fan_request(mode: str, picture_png: bytes) -> DrawRequest:
    """A drawing request as the fast tier hands it over (a fresh id: each picture its own seed)."""
    item = build_submission(room="bench-room", user_id="fan1", display_name="Hoshi", image_bytes=picture_png,
                            mime="image/png", text="draw me with you on stage!", lang="en")
    now = utcnow()
    return DrawRequest(
        request_id=new_id(), item=item, prompt=PROMPT, mode=mode, reason=RouteReason.DRAW_REQUEST, language="en",
        requested_at=now, deadline_at=now + timedelta(minutes=10), holding_sent=True,
        fast_timings=Timings(item_created_at=item.created_at, queue_ms=0.0, admission_ms=0.0, inference_ms=0.0,
                             replied_at=now),
        source=Source(topic="fan.images", partition=0, offset=0, key="bench-room"),
    )


def time_mode(runner: DrawRunner, mode: str, picture, picture_png: bytes, warmup: int, repeats: int) -> dict:
    """Seconds per picture (warm-ups left out) and the steps each counted picture ran."""
    seconds, steps = [], []
    for n in range(warmup + repeats):
        request = fan_request(mode, picture_png)
        t0 = time.perf_counter()
        drawing = runner.draw(request, None if mode == "text_to_image" else picture)
        elapsed = time.perf_counter() - t0
        if n >= warmup:
            seconds.append(elapsed)
            steps.append(drawing.steps_done)
    return {"seconds": seconds, "steps": steps}


def summary(seconds: list[float], steps: list[int]) -> dict:
    ordered = sorted(seconds)
    p90 = ordered[0] if len(ordered) == 1 else statistics.quantiles(ordered, n=10, method="inclusive")[8]
    return {"median_s": round(statistics.median(ordered), 3), "p90_s": round(p90, 3), "min_s": round(ordered[0], 3),
            "steps": statistics.median_low(steps),
            "steps_per_s": round(statistics.median(s / t for s, t in zip(steps, seconds)), 2), "pictures": len(seconds)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-qwen-image", help="a draw entry of config/models.json")
    parser.add_argument("--sizes", default="128x128,256x256", help="WIDTHxHEIGHT,... (multiples of 16)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps asked per picture")
    parser.add_argument("--repeats", type=int, default=5, help="counted pictures per mode and size")
    parser.add_argument("--warmup", type=int, default=1, help="uncounted pictures first, per mode and size")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's CPU threads (default: torch's own choice, one per core)")
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown modes {sorted(unknown)} (known: {', '.join(MODES)})")

    import diffusers
    import torch

    # from_pipe warns about casting to float32 on every mode, and loading draws a progress bar.
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    registry = ModelRegistry.load(ROOT / "config" / "models.json")
    spec = registry.get(args.model)
    if spec.tier != "draw":
        parser.error(f"{args.model} is a {spec.tier} model, not a draw model")
    build_missing(registry, ROOT)
    picture = draw_fan_image(random.Random(7), (320, 240))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    picture_png = buffer.getvalue()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"machine: {platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__} on {device} "
          f"({torch.get_num_threads()} threads); model {spec.id} ({spec.dtype}); {args.steps} steps asked; "
          f"{args.warmup} warm-up + {args.repeats} counted pictures per mode and size")
    print(f"{'size':<10}{'mode':<15}{'steps':>6}{'median s':>10}{'p90 s':>9}{'min s':>9}{'steps/s':>9}")
    results = []
    for width, height in (parse_size(s) for s in args.sizes.split(",") if s):
        t0 = time.perf_counter()
        runner = DrawRunner(sized(spec, width, height, args.steps), ROOT)
        load_s = time.perf_counter() - t0
        try:
            for mode in modes:
                timed = time_mode(runner, mode, picture, picture_png, args.warmup, args.repeats)
                row = {"size": f"{width}x{height}", "mode": mode, **summary(timed["seconds"], timed["steps"]),
                       "load_s": round(load_s, 2)}
                results.append(row)
                print(f"{row['size']:<10}{mode:<15}{row['steps']:>6}{row['median_s']:>10}{row['p90_s']:>9}{row['min_s']:>9}"
                      f"{row['steps_per_s']:>9}")
        finally:
            runner.close()
        print(f"{width}x{height}: loaded in {load_s:.2f} s (pipeline and ControlNet, from disk)")
    print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "device": device, "model": spec.id,
                      "threads": torch.get_num_threads(), "steps": args.steps, "warmup": args.warmup,
                      "repeats": args.repeats, "results": results}))


if __name__ == "__main__":
    main()
