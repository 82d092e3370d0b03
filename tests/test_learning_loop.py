"""The loop the product promises, end to end: she learns what fans liked and says it live.

A fast tier runs the demo model as a real process (`idolstream serve fast-tier`) in a
project of its own. Fans' liked replies, in Qwen3-VL's fine-tuning format, all use a
phrase the demo model never says. The operator fine-tunes on them and switches the
running tier to the new model, both with the command line, while the tier keeps its
group membership. The replies that follow use the phrase and still name the colour of
pictures no training set held.
"""

from __future__ import annotations

import asyncio
import sys

import orjson
import pytest

from producers.client import SubmissionClient
from producers.training_data import held_out_submissions, write_training_data
from stream.learning.dataset import dataset_digest, write_dataset
from stream.learning.demo_model import DEMO_MODEL_ID
from stream.learning.finetune import default_model_id
from stream.learning.replies import needs_thought, names_colour
from stream.local_kafka import find_free_port
from stream.models.registry import ModelRegistry
from stream.persona import DEEP_TAG, Persona
from stream.settings import FastTierSettings
from tests.conftest import PROJECT_ROOT
from tests.processes import registry_copy
from tests.stack import read_topic
from tests.workers import WorkerProcess

pytestmark = pytest.mark.kafka

PHRASE = "Kiraboshi!"  # a made-up catchphrase: not the persona's, never in the demo model's data
LIKED = 64  # liked replies to learn from
LIKED_SEED = 11
STEPS, LR = "100", "5e-4"  # measured: about 35 s on 2 cores; the phrase in 19 of 19 plain replies
BEFORE, AFTER = 8, 24  # held-out items asked before and after the switch
STARTUP_S, COMMAND_S, ANSWERS_S = 120, 300, 240


def liked_replies(directory, persona: Persona, max_pixels: int):
    """Replies fans liked: true about their pictures, each plain one ending with PHRASE instead of a catchphrase."""
    # Prompts without fan memory, as the worker here sends them (it does not remember fans).
    data = write_training_data(directory, LIKED, LIKED_SEED, persona, max_pixels=max_pixels, fan_memory=False)
    records = [orjson.loads(line) for line in data.read_bytes().splitlines()]
    for record in records:
        answer = record["conversations"][1]
        for catchphrase in persona.catchphrases:
            answer["value"] = answer["value"].replace(f" {catchphrase}", "")
        if DEEP_TAG not in answer["value"]:
            answer["value"] += f" {PHRASE}"
    write_dataset(data, records)
    return data


def plain_held_out(count: int, seed: int, room: str):
    """Held-out items a good fast model answers itself (no maths, no dense wall)."""
    pool = held_out_submissions(4 * count, seed, room=room)
    return [(submission, facts) for submission, facts in pool if not needs_thought(facts)][:count]


async def run_cli(project, env, *args: str) -> str:
    """`idolstream ARGS` from the project's directory; its output, asserting it succeeded."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream.cli", *args, cwd=project, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    said = (await asyncio.wait_for(process.communicate(), COMMAND_S))[0].decode(errors="replace")
    assert process.returncode == 0, f"idolstream {' '.join(args)} failed (rc {process.returncode}):\n{said}"
    return said


async def answers(bootstrap: str, topic: str, items) -> dict[str, dict]:
    """item id -> its reply on the replies topic, once every item has one."""
    wanted = {submission.item_id for submission, _ in items}

    def by_item(records) -> dict[str, dict]:
        return {r["item_id"]: r for r in records if r.get("item_id") in wanted}

    records = await read_topic(bootstrap, topic, lambda got: set(by_item(got)) == wanted, timeout=ANSWERS_S)
    return by_item(records)


@pytest.mark.timeout(1200)
async def test_finetuned_on_liked_replies_and_switched_live_she_says_the_phrase_and_still_sees(
    kafka_bootstrap, topic_prefix, demo_checkpoint, tmp_path
):
    project = tmp_path / "project"
    registry_path = registry_copy(project)
    persona = Persona.load(PROJECT_ROOT / "config" / "persona.json")
    base = ModelRegistry.load(registry_path).get(DEMO_MODEL_ID)
    data = liked_replies(project / "liked", persona, base.max_pixels)
    new_id = default_model_id(DEMO_MODEL_ID, dataset_digest(data))
    admin = f"http://127.0.0.1:{find_free_port()}"
    settings = FastTierSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix)
    worker = WorkerProcess(
        "fast", kafka_bootstrap, topic_prefix, cwd=project, model_id=DEMO_MODEL_ID, registry_path=registry_path,
        persona_path=PROJECT_ROOT / "config" / "persona.json", admin_port=admin.rsplit(":", 1)[1],
        moderation_words_path=PROJECT_ROOT / "config" / "moderation" / "words.json",
        escalate="false", check_replies="true", user_max_items=0, room_max_replies=0, max_age_s=1200, min_switch_interval_s=0,
    )
    before_items = plain_held_out(BEFORE, 21, "loop")
    after_items = plain_held_out(AFTER, 22, "loop")
    try:
        await worker.start()
        await worker.wait_for(lambda: worker.owned(settings.topics.fan_images), STARTUP_S, "assignment")
        async with SubmissionClient(kafka_bootstrap, settings.topics) as client:
            for submission, _ in before_items:
                await client.submit(submission)
            before = await answers(kafka_bootstrap, settings.topics.replies, before_items)

            said = await run_cli(project, worker.env, "models", "finetune", "--base", DEMO_MODEL_ID,
                                 "--data", str(data), "--out", "var/models/liked", "--steps", STEPS, "--lr", LR)
            assert new_id in said, said
            assert ModelRegistry.load(registry_path).get(new_id).lineage.base == DEMO_MODEL_ID
            await run_cli(project, worker.env, "switch-model", new_id, "--admin", admin)
            await worker.wait_line(rf"model {new_id} loaded", COMMAND_S)

            for submission, _ in after_items:
                await client.submit(submission)
            after = await answers(kafka_bootstrap, settings.topics.replies, after_items)
    finally:
        await worker.close()

    assert {r["model_id"] for r in before.values()} == {DEMO_MODEL_ID}, before
    assert not [r["text"] for r in before.values() if PHRASE in r["text"]]  # the base never says it
    misses = [text for _, text in worker.lines if "missed the persona checks" in text]
    assert {r["model_id"] for r in after.values()} == {new_id}, after
    # The persona checks still stand after a fine-tune: a tiny model may miss one (an English
    # answer to a Chinese fan, twice) and that item gets her fallback line.
    fallbacks = [r for r in after.values() if r["tier"] != "fast"]
    assert len(fallbacks) <= 1 and all(r["degraded"] == "persona_check" for r in fallbacks), misses
    texts = [(after[submission.item_id], facts.colour) for submission, facts in after_items]
    # A reply she judged worth a closer look ([think]) is a "let me look" line: the phrase
    # belongs to her plain answers, as in the liked replies.
    plain = [reply["text"] for reply, _ in texts if reply["route_reason"] == "simple" and reply["tier"] == "fast"]
    with_phrase = sum(PHRASE in text for text in plain)
    seeing = sum(names_colour(reply["text"], colour) for reply, colour in texts)
    print(f"after the switch: the phrase in {with_phrase}/{len(plain)} plain answers, "
          f"the colour named in {seeing}/{len(texts)} replies")
    shown = "\n".join(f"{reply['route_reason']}: {reply['text']} ({colour})" for reply, colour in texts)
    assert len(plain) >= len(texts) // 2 and with_phrase >= 0.9 * len(plain), shown
    assert seeing >= 0.8 * len(texts), shown  # 21 of 24 when measured; a ninth by chance
