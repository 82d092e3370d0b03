"""`idolstream`: the command line for operators, bot authors and developers.

    idolstream kafka up|down|status      the local single-node KRaft broker
    idolstream topics                    create the topics (idempotent)
    idolstream models build-tiny|list    tiny offline checkpoints; the registry
    idolstream models train-demo [--steps N --seed S --out DIR]   train the demo model here
    idolstream models finetune --base ID --data FILE.jsonl --out DIR [--lora]   fine-tune and register
    idolstream submit --room R --user U [--text T] IMAGE...
    idolstream serve fast-tier|deep-tier|draw-tier|gateway|console|fans   run one service until SIGTERM
    idolstream switch-model MODEL_ID --admin URL     ask a running tier to switch model
    idolstream token --room R [--ttl S]  a signed room token for the overlay page
    idolstream operator-token --operator NAME [--ttl S]   a signed token for the operator console
    idolstream schemas                   export the contracts' JSON Schemas
    idolstream persona check FILE        validate a persona file, naming each bad field
    idolstream moderation check [--words FILE] TEXT   the word filter's verdict on TEXT, as JSON
    idolstream dataset export --since T [--room R] [--min-likes N] --out DIR   what fans liked, to fine-tune on
    idolstream fans forget ROOM USER [--by NAME]   forget a fan: profile, memory, exports
    idolstream demo [--items N --exit]   everything, with sample traffic

Heavy imports (torch, transformers) happen inside the commands that need them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from stream.errors import IdolstreamError
from stream.settings import (
    CommonSettings,
    ConsoleSettings,
    DeepTierSettings,
    DrawTierSettings,
    FansSettings,
    FastTierSettings,
    GatewaySettings,
    describe_settings,
    load_settings,
)


def _persona(args: argparse.Namespace) -> int:
    """`persona check FILE`: 0 and a summary when it can be used, else 2 and each problem by field."""
    from stream.persona import Persona, PersonaError

    try:
        persona = Persona.load(args.file)
    except PersonaError as exc:
        print(f"idolstream: {exc}", file=sys.stderr)
        return 2
    lines = sum(len(lines.holding) + len(lines.fallback) for lines in persona.lines.values())
    print(f"{args.file}: ok, {persona.name} version {persona.version}; speaks {', '.join(persona.languages)} "
          f"(default {persona.default_language}); {lines} lines, {len(persona.forbidden_topics)} forbidden topics, "
          f"replies of {persona.min_reply_chars}-{persona.max_reply_chars} characters")
    return 0


def _kafka(args: argparse.Namespace) -> int:
    from stream.kafka_io import local_kafka

    settings = load_settings(CommonSettings)
    if settings.kafka_bootstrap:
        print(f"KAFKA_BOOTSTRAP={settings.kafka_bootstrap} is set: the local broker is not used", file=sys.stderr)
    broker = local_kafka(settings)
    if args.action == "up":
        print(f"Kafka up at {broker.up()}")
    elif args.action == "down":
        print("Kafka stopped" if broker.down() else "Kafka was not running")
    else:
        status = broker.status()
        print(json.dumps(status))
        return 0 if status["answering"] else 3
    return 0


def _topics(args: argparse.Namespace) -> int:
    from consumers.services import prepare_topics
    from stream.kafka_io import bootstrap_for

    settings = load_settings(CommonSettings)
    bootstrap = bootstrap_for(settings, start_local=False)
    created = asyncio.run(prepare_topics(settings, bootstrap))
    print(f"created: {', '.join(created) or 'nothing (all topics exist)'}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from stream.models.registry import ModelRegistry

    settings = load_settings(FastTierSettings)
    registry = ModelRegistry.load(settings.registry_path)
    if args.action == "list":
        for model_id in registry.ids():
            spec = registry.get(model_id)
            print(f"{spec.id:<36} {spec.tier:<5} {spec.architecture:<5} {spec.mode or '-':<9} {spec.source}")
        return 0
    if args.action == "train-demo":
        return _train_demo(args, settings)
    if args.action == "finetune":
        return _finetune(args, settings)
    from stream.models.tiny import build_missing

    built = build_missing(registry, Path.cwd())
    print(f"built: {', '.join(str(p) for p in built) or 'nothing (all tiny checkpoints exist)'}")
    return 0


def _train_demo(args: argparse.Namespace, settings: FastTierSettings) -> int:
    """Train the demo model from scratch with a progress bar, register it, score it on held-out pictures."""
    import time

    from stream.learning.demo_model import (
        DEMO_MODEL_ID,
        DemoPlan,
        answer_held_out,
        build_demo_model,
        demo_spec,
        score_replies,
    )
    from stream.learning.train import training_bar
    from stream.models.registry import ModelRegistry, register_model
    from stream.models.runtime import TransformersRunner
    from stream.persona import Persona, read_reply

    registry_path = settings.registry_path
    registry = ModelRegistry.load(registry_path)
    root = registry.project_root
    spec = demo_spec(registry, args.out, root)
    out = spec.local_dir(root)
    plan = DemoPlan(examples=args.examples, steps=args.steps, seed=args.seed)
    persona = Persona.load(settings.persona_path)
    print(f"training {DEMO_MODEL_ID} from scratch: {plan.examples} pictures, {plan.steps} steps of {plan.batch_size}")
    started = time.perf_counter()
    with training_bar(plan.steps) as (show, stage):
        result = build_demo_model(spec, out, persona, plan, on_progress=show, on_stage=stage)
    print(
        f"saved {out} in {time.perf_counter() - started:.0f} s "
        f"(final loss {result.final_loss:.3f}, {result.examples_per_s:.1f} examples/s)"
    )
    if DEMO_MODEL_ID not in registry:
        register_model(registry_path, spec)
        print(f"registered {spec.id} in {registry_path}")
    elif registry.get(DEMO_MODEL_ID).local_dir(root) != out:
        print(f"note: the registry's {DEMO_MODEL_ID} still points at {registry.get(DEMO_MODEL_ID).source}")
    if args.check:
        runner = TransformersRunner.load(spec, root)
        try:
            replies, facts = answer_held_out(runner, persona, args.check, seed=plan.seed)
            asks = max(1, args.check // 5)
            drawn, drawn_facts = answer_held_out(runner, persona, asks, seed=plan.seed, draw=True)
        finally:
            runner.close()
        score = score_replies(replies, facts)
        print(
            f"held-out pictures: {score.colour}/{score.count} replies name the colour, "
            f"{score.name} the fan, {score.language} in the fan's language"
        )
        print(f"for example: {replies[0]}")
        tagged = sum(read_reply(text, persona, "check").wants_draw for text in drawn)
        told = sum(read_reply(text, persona, "check").wants_draw for text in replies)
        draw_score = score_replies(drawn, drawn_facts)
        print(f"held-out drawing requests: {tagged}/{asks} tagged [draw] ({told}/{score.count} other pictures were), "
              f"{draw_score.colour} name the fan's colour in her idea")
        print(f"for example: {drawn[0]}")
    return 0


def _finetune(args: argparse.Namespace, settings: FastTierSettings) -> int:
    """Fine-tune a registered model on a dataset with a progress bar, then register the result."""
    import time

    from stream.learning.finetune import FinetunePlan, finetune
    from stream.learning.train import training_bar
    from stream.models.errors import ModelLoadError

    plan = FinetunePlan(
        steps=args.steps,
        batch_size=args.batch,
        learning_rate=args.lr,
        seed=args.seed,
        lora=args.lora,
        lora_rank=args.lora_rank,
        device=args.device,
    )
    started = time.perf_counter()
    try:
        with training_bar(plan.steps) as (show, stage):
            done = finetune(
                settings.registry_path, args.base, args.data, args.out, plan, args.id,
                on_progress=show, on_stage=stage,
            )
    except (ModelLoadError, ValueError) as exc:  # ValueError: a device torch cannot use
        print(f"idolstream: {exc}", file=sys.stderr)
        return 2
    result, spec = done.result, done.spec
    print(
        f"saved {done.out_dir} in {time.perf_counter() - started:.0f} s: {result.steps} steps, "
        f"final loss {result.final_loss:.3f}, {result.examples_per_s:.1f} examples/s"
    )
    verb = "registered" if done.registered else "already registered:"
    print(f"{verb} {spec.id} in {settings.registry_path} (base {args.base}, data {spec.lineage.data_digest[:12]})")
    print(f"switch a running tier to it: idolstream switch-model {spec.id} --admin http://HOST:ADMIN_PORT")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from producers.submit import submit_files

    return asyncio.run(submit_files(args))


def _serve(args: argparse.Namespace) -> int:
    from consumers.services import serve_console, serve_deep_tier, serve_fast_tier, serve_gateway

    if args.service == "fans":
        from consumers.fans_app import serve_fans

        serve_fans(load_settings(FansSettings))
    elif args.service == "console":
        asyncio.run(serve_console(load_settings(ConsoleSettings)))
    elif args.service == "fast-tier":
        asyncio.run(serve_fast_tier(load_settings(FastTierSettings)))
    elif args.service == "deep-tier":
        asyncio.run(serve_deep_tier(load_settings(DeepTierSettings)))
    elif args.service == "draw-tier":
        from consumers.services import serve_draw_tier

        asyncio.run(serve_draw_tier(load_settings(DrawTierSettings)))
    else:
        asyncio.run(serve_gateway(load_settings(GatewaySettings)))
    return 0


def _switch_model(args: argparse.Namespace) -> int:
    """POST /switch_model to a running tier's admin port; exit 0 when the switch started."""
    import httpx

    url = args.admin.rstrip("/") + "/switch_model"
    try:
        response = httpx.post(url, json={"model_id": args.model_id}, timeout=10)
    except httpx.HTTPError as exc:
        print(f"idolstream: cannot reach {url}: {exc}", file=sys.stderr)
        return 2
    print(response.text)
    return 0 if response.status_code == 202 else 1


def _token(args: argparse.Namespace) -> int:
    """Print a room token signed with IDOLSTREAM_OVERLAY_SECRET, and the overlay URL on stderr."""
    from urllib.parse import urlencode

    from stream.tokens import issue_token

    settings = load_settings(GatewaySettings)
    token = issue_token(settings.secret(), args.room, args.ttl)
    print(token)
    query = urlencode({"room": args.room, "token": token})
    print(f"overlay: http://{settings.host}:{settings.port}/?{query}", file=sys.stderr)
    return 0


def _operator_token(args: argparse.Namespace) -> int:
    """Print an operator token signed with IDOLSTREAM_CONSOLE_SECRET, and the console URL on stderr."""
    from stream.tokens import issue_operator_token

    settings = load_settings(ConsoleSettings)
    token = issue_operator_token(settings.secret(), args.operator, args.ttl)
    print(token)
    print(f"console: http://{settings.console_host}:{settings.console_port}/#token={token}", file=sys.stderr)
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from stream.contracts import export_schemas

    for path in export_schemas():
        print(path)
    return 0


# `moderation check` exits with the verdict, so a script can test a list line by line.
MODERATION_EXIT = {"allow": 0, "review": 3, "block": 4}


def _moderation(args: argparse.Namespace) -> int:
    """Print the word filter's verdict on TEXT as one JSON object; the exit status says the action."""
    import orjson

    from stream.moderation.text_filter import TextFilter

    verdict = TextFilter.from_file(args.words).check(args.text)
    sys.stdout.write(orjson.dumps(verdict.to_dict()).decode() + "\n")
    return MODERATION_EXIT[verdict.action]


def _dataset(args: argparse.Namespace) -> int:
    """`dataset export`: liked and approved answers with their pictures, as a fine-tuning dataset; a summary."""
    from producers.dataset_export import run_export

    for line in run_export(load_settings(FastTierSettings), args.since, args.room, args.min_likes, args.out):
        print(line)
    return 0


def _fans(args: argparse.Namespace) -> int:
    """`fans forget`: ask the fans app to forget a fan in a room (a ForgetRequest on fans.forget, kept for good)."""
    from stream.contracts import ForgetRequest, new_id, utcnow
    from stream.kafka_io import bootstrap_for, make_producer

    from pydantic import ValidationError

    settings = load_settings(CommonSettings)
    try:
        request = ForgetRequest(request_id=new_id(), room=args.room, user_id=args.user, requested_by=args.by,
                                at=utcnow())
    except ValidationError as error:
        fields = ", ".join(".".join(map(str, e["loc"])) for e in error.errors())
        print(f"idolstream: not a room and user id ({fields}): ids are 1-128 of A-Z a-z 0-9 . _ : @ -", file=sys.stderr)
        return 2

    async def send() -> None:
        from consumers.services import prepare_topics

        bootstrap = bootstrap_for(settings, start_local=False)
        await prepare_topics(settings, bootstrap)
        producer = make_producer(bootstrap, "idolstream-cli")
        await producer.start()
        try:
            await producer.send_and_wait(settings.topics.fans_forget, request.to_json(), key=args.room.encode())
        finally:
            await producer.stop()

    asyncio.run(send())
    print(f"asked to forget {args.user} in {args.room} (request {request.request_id}): the fans app removes their "
          "profile, the tiers their memory of them, and exports leave them out")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from consumers.demo import run_demo

    try:
        return asyncio.run(run_demo(args.items, args.exit, args.rooms, args.interval, args.timeout))
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    from stream.learning.demo_model import DemoPlan

    parser = argparse.ArgumentParser(
        prog="idolstream",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=describe_settings(FastTierSettings, DeepTierSettings, DrawTierSettings, GatewaySettings),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", help="the local single-node KRaft broker")
    kafka.add_argument("action", choices=["up", "down", "status"])
    kafka.set_defaults(func=_kafka)

    sub.add_parser("topics", help="create the topics (idempotent)").set_defaults(func=_topics)

    models = sub.add_parser("models", help="the model registry, tiny checkpoints and the demo model")
    models_sub = models.add_subparsers(dest="action", required=True)
    models_sub.add_parser("build-tiny", help="build the registry's missing tiny random checkpoints")
    models_sub.add_parser("list", help="list the registry's models")
    demo_model = models_sub.add_parser(
        "train-demo", help="train the small demo model from scratch (a few minutes on a CPU) and register it"
    )
    plan = DemoPlan()
    demo_model.add_argument("--steps", type=int, default=plan.steps, help=f"training steps (default {plan.steps})")
    demo_model.add_argument("--seed", type=int, default=plan.seed, help="seed of the data, the weights and the batches")
    demo_model.add_argument(
        "--examples", type=int, default=plan.examples, help=f"synthetic training pictures (default {plan.examples})"
    )
    demo_model.add_argument("--out", type=Path, help="checkpoint directory (default: the registry entry's)")
    demo_model.add_argument(
        "--check", type=int, default=40, metavar="N", help="held-out pictures to ask it about afterwards (0: none)"
    )
    from stream.learning.finetune import FULL_LR, LORA_LR, FinetunePlan

    tune = models_sub.add_parser(
        "finetune",
        help="fine-tune a registered model on a dataset in Qwen3-VL's format and register the result",
        description="Fine-tune registry model --base on --data (Qwen3-VL fine-tuning format, JSONL), the loss "
        "on the assistant turns only; save the checkpoint as --out and register it with its lineage.",
    )
    defaults = FinetunePlan()
    tune.add_argument("--base", required=True, metavar="ID", help="registry id of the model to start from")
    tune.add_argument("--data", required=True, type=Path, metavar="FILE.jsonl", help="the dataset (.jsonl or .json)")
    tune.add_argument("--out", required=True, type=Path, metavar="DIR", help="directory for the new checkpoint")
    tune.add_argument("--steps", type=int, default=defaults.steps, help=f"training steps (default {defaults.steps})")
    tune.add_argument(
        "--lr",
        type=float,
        help=f"peak learning rate (default {FULL_LR:g}, with --lora {LORA_LR:g}: for the small models here; "
        "real 2B-8B models want ~1e-5, with --lora ~1e-4)",
    )
    tune.add_argument(
        "--batch", type=int, default=defaults.batch_size, help=f"examples per step (default {defaults.batch_size})"
    )
    tune.add_argument("--seed", type=int, default=defaults.seed, help="seed of the batches' order")
    tune.add_argument("--id", help="registry id of the new model (default: <base>-ft-<data digest>)")
    tune.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) and merge them on save")
    tune.add_argument(
        "--lora-rank", type=int, default=defaults.lora_rank, help=f"LoRA adapter rank (default {defaults.lora_rank})"
    )
    tune.add_argument(
        "--device", help="torch device to train on, e.g. cuda:1 or cpu (default: the first GPU if any, else the CPU)"
    )
    models.set_defaults(func=_models)

    submit = sub.add_parser("submit", help="send fan images to the fast tier")
    submit.add_argument("--room", required=True)
    submit.add_argument("--user", required=True, help="user id")
    submit.add_argument("--name", help="display name (default: the user id)")
    submit.add_argument("--text", help="what the fan wrote")
    submit.add_argument("--kind", choices=["fan_image", "danmaku_screenshot"], default="fan_image")
    submit.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    submit.set_defaults(func=_submit)

    serve = sub.add_parser("serve", help="run one service until SIGTERM")
    serve.add_argument("service", choices=["fast-tier", "deep-tier", "draw-tier", "gateway", "console", "fans"])
    serve.set_defaults(func=_serve)

    switch = sub.add_parser("switch-model", help="ask a running tier to switch to another registry model")
    switch.add_argument("model_id", help="registry id (see `idolstream models list`)")
    switch.add_argument("--admin", required=True, help="the tier's admin URL, e.g. http://127.0.0.1:8081")
    switch.set_defaults(func=_switch_model)

    token = sub.add_parser("token", help="issue a signed room token for an overlay (IDOLSTREAM_OVERLAY_SECRET)")
    token.add_argument("--room", required=True)
    token.add_argument("--ttl", type=float, default=86_400.0, help="seconds until it expires (default: a day)")
    token.set_defaults(func=_token)

    operator = sub.add_parser(
        "operator-token", help="issue a signed operator token for the console (IDOLSTREAM_CONSOLE_SECRET)"
    )
    operator.add_argument("--operator", required=True, help="the operator's name, recorded on every decision")
    operator.add_argument("--ttl", type=float, default=43_200.0, help="seconds until it expires (default: 12 h)")
    operator.set_defaults(func=_operator_token)

    sub.add_parser("schemas", help="export JSON Schemas into stream/schemas").set_defaults(func=_schemas)

    persona = sub.add_parser("persona", help="the persona file (see config/persona-guide.md)")
    persona_sub = persona.add_subparsers(dest="action", required=True)
    persona_check = persona_sub.add_parser(
        "check", help="validate a persona file: its fields, and its own lines against the reply checks"
    )
    persona_check.add_argument("file", type=Path, metavar="FILE")
    persona.set_defaults(func=_persona)

    moderation = sub.add_parser("moderation", help="test a word list against a line of text")
    moderation_sub = moderation.add_subparsers(dest="action", required=True)
    check = moderation_sub.add_parser(
        "check",
        help="print the word filter's verdict on TEXT as JSON",
        description="Print the word filter's verdict on TEXT as one JSON object: action, categories, and each "
        "match's term, category, span and text as written. Exit status: 0 allow, 3 review, 4 block, "
        "2 when the word list is unreadable or invalid.",
    )
    check.add_argument(
        "--words",
        type=Path,
        default=Path("config/moderation/words.json"),
        metavar="FILE",
        help="the word list (default: config/moderation/words.json)",
    )
    check.add_argument("text", metavar="TEXT", help="the line to check, as a fan or the idol would write it")
    moderation.set_defaults(func=_moderation)

    dataset = sub.add_parser("dataset", help="fine-tuning datasets made of what fans liked")
    dataset_sub = dataset.add_subparsers(dest="action", required=True)
    export = dataset_sub.add_parser(
        "export",
        help="write the answers fans liked (or operators approved) with their pictures, for `models finetune`",
        description="Read the topics up to where they end now and write each answer liked at least --min-likes "
        "times or approved in review, with the fan's picture, in Qwen3-VL's fine-tuning format (DIR/data.jsonl, "
        "DIR/images/). Never a reported, retracted, rejected or blocked answer, nor one to a fan who asked to be "
        "forgotten. Prints how many pairs were written and why the others were left out.",
    )
    export.add_argument(
        "--since", required=True, metavar="T",
        help="answers given at or after T: an ISO-8601 time (no offset: UTC) or a span back from now: 30m, 6h, 2d, 1w",
    )
    export.add_argument("--room", help="one room only (default: every room)")
    export.add_argument(
        "--min-likes", type=int, default=1, metavar="N", help="likes an answer needs unless approved (default 1)"
    )
    export.add_argument("--out", required=True, type=Path, metavar="DIR", help="a new (or empty) directory")
    dataset.set_defaults(func=_dataset)

    fans = sub.add_parser("fans", help="the fans app's memory of fans")
    fans_sub = fans.add_subparsers(dest="action", required=True)
    forget = fans_sub.add_parser(
        "forget", help="forget a fan in a room: their profile, the tiers' memory of them, and their exports",
    )
    forget.add_argument("room", metavar="ROOM")
    forget.add_argument("user", metavar="USER", help="the fan's user id")
    forget.add_argument("--by", default="operator", help="who asked (recorded with the request)")
    fans.set_defaults(func=_fans)

    demo = sub.add_parser("demo", help="broker, services, sample traffic, replies on the overlay")
    demo.add_argument("--items", type=int, default=12, help="sample items to send first")
    demo.add_argument("--exit", action="store_true", help="exit after the items (0 only if all were answered)")
    demo.add_argument("--rooms", type=int, default=2)
    demo.add_argument("--interval", type=float, default=0.1, help="seconds between sample items")
    demo.add_argument("--timeout", type=float, default=300.0, help="give up waiting for replies after this")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.func(args)
    except IdolstreamError as exc:
        print(f"idolstream: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
