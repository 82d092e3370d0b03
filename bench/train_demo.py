"""Training speed and held-out accuracy of the demo model (`idolstream models train-demo`).

    .venv/bin/python bench/train_demo.py [--steps 300] [--examples 1000] [--seed 0] [--held-out 100]

Trains the demo model from scratch into a temporary directory with the same recipe as
train-demo (nothing in var/ or the registry changes), then asks it, through the runner,
about held-out pictures built as the fast tier builds its requests. Prints the time of
each stage, training examples/s, and how many answers name the picture's colour, copy the
fan's name and keep the fan's language; then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stream.learning.demo_model import DemoPlan, answer_held_out, build_demo_model, demo_spec, score_replies  # noqa: E402
from stream.models.registry import ModelRegistry  # noqa: E402
from stream.models.runtime import TransformersRunner  # noqa: E402
from stream.persona import Persona  # noqa: E402


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    defaults = DemoPlan()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=defaults.steps)
    parser.add_argument("--examples", type=int, default=defaults.examples)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--held-out", type=int, default=100)
    args = parser.parse_args()

    import torch

    registry = ModelRegistry.load(ROOT / "config" / "models.json")
    persona = Persona.load(ROOT / "config" / "persona.json")
    plan = DemoPlan(examples=args.examples, steps=args.steps, seed=args.seed)
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as scratch:
        spec = demo_spec(registry, Path(scratch) / "demo", ROOT)
        started, cpu_started = time.perf_counter(), _cpu_s()
        result = build_demo_model(spec, Path(scratch) / "demo", persona, plan, work_dir=Path(scratch) / "work")
        total_s, cpu_s = time.perf_counter() - started, _cpu_s() - cpu_started

        runner = TransformersRunner.load(spec, ROOT)
        asked = time.perf_counter()
        replies, facts = answer_held_out(runner, persona, args.held_out, seed=args.seed)
        answer_s = time.perf_counter() - asked
        runner.close()
    score = score_replies(replies, facts)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"demo model: {plan.examples} pictures, {plan.steps} steps of {plan.batch_size}, "
          f"{spec.max_pixels} pixels per image")
    print(f"  train-demo total     {total_s:7.1f} s wall  {cpu_s:7.1f} s CPU")
    print(f"  encode (once)        {result.encode_s:7.1f} s")
    print(f"  training             {result.train_s:7.1f} s   {result.examples_per_s:6.1f} examples/s")
    print(f"  final loss           {result.final_loss:7.3f}")
    print(f"held-out pictures: {score.count}, answered in {answer_s:.1f} s")
    print(f"  name the colour      {score.colour:4d}  ({score.colour_accuracy:.0%})")
    print(f"  copy the fan's name  {score.name:4d}")
    print(f"  fan's language       {score.language:4d}")
    print(json.dumps({
        "bench": "train_demo", "steps": plan.steps, "examples": plan.examples, "total_s": round(total_s, 1),
        "cpu_s": round(cpu_s, 1), "train_s": round(result.train_s, 1),
        "examples_per_s": round(result.examples_per_s, 2), "final_loss": round(result.final_loss, 4),
        "held_out": score.count, "colour": score.colour, "name": score.name, "language": score.language,
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
