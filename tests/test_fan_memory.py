"""She remembers fans: a regular's prompt says what she remembers, a new fan's does not, a forgotten fan is new again.

The fans app runs as a real process; the fast tier reads `fans.profiles` into its memory.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from producers.client import build_submission
from producers.samples import sample_item
from producers.training_data import held_out_submissions
from stream.contracts import UserRef, utcnow
from stream.learning.replies import names_colour, welcomes_back
from tests.conftest import PROJECT_ROOT
from tests.fans_app import FansProcess
from tests.processes import service_env
from tests.stack import WAIT_S, next_reply, running_stack

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(600)]


class PromptRecorder:
    """A real model runner, with the user turn of every request kept, in order."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.spec = runner.spec
        self.prompts: list[str] = []

    def generate(self, requests, options=None):
        for request in requests:
            self.prompts.append(request.messages[-1]["content"][-1]["text"])
        return self.runner.generate(requests, options)

    def close(self) -> None:
        pass


async def until(condition, what: str, timeout: float = WAIT_S):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s")
        await asyncio.sleep(0.1)  # poll interval of a condition wait
    return value


async def test_a_regular_is_remembered_a_new_fan_welcomed_and_a_forgotten_fan_new_again(
    kafka_bootstrap, topic_prefix, fast_runner
):
    recorder = PromptRecorder(fast_runner)
    async with running_stack(kafka_bootstrap, topic_prefix, recorder, fan_memory=True) as stack:
        fans = await FansProcess(kafka_bootstrap, topic_prefix, topic_partitions=2).start()
        memory = stack.fast_worker.tier.fan_memory
        try:
            async def send(user: str, name: str, text: str) -> str:
                sample = sample_item(len(recorder.prompts))
                await stack.client.submit(build_submission(
                    room="room1", user_id=user, display_name=name, image_bytes=sample.image_bytes, mime=sample.mime,
                    text=text))
                return await until(lambda: next((p for p in recorder.prompts if text in p), None), f"{text!r} answered")

            first = await send("aki", "Aki", "my first drawing of Mochi")
            assert "This is Aki's first time here" in first

            # Once the fans app has seen her answer, the tier's memory has Aki with it.
            profile = await until(lambda: (p := memory.lookup("room1", "aki", utcnow())) and p.replies_received
                                  and p, "Aki's profile with her answer")
            second = await send("aki", "Aki", "the sea at dusk")
            assert "Aki is a regular: 1 earlier item(s)" in second
            assert "my first drawing of Mochi" in second and profile.last_reply_text in second
            assert "first time" not in second

            third = await send("ben", "Ben", "hello from Ben")
            assert "This is Ben's first time here" in third and "Mochi" not in third

            forget = subprocess.run(
                [sys.executable, "-m", "stream.cli", "fans", "forget", "room1", "aki", "--by", "aki-herself"],
                cwd=PROJECT_ROOT, env=service_env(kafka_bootstrap, topic_prefix), capture_output=True, text=True,
                timeout=120,
            )
            assert forget.returncode == 0, forget.stderr
            await until(lambda: memory.lookup("room1", "aki", utcnow()) is None, "Aki forgotten by the tier")
            assert await fans.view("/tables/fans/room1/aki") is None
            again = await send("aki", "Aki", "do you remember me?")
            assert "This is Aki's first time here" in again and "Mochi" not in again

            def lookups(result: str) -> float:
                return stack.metrics.registry.get_sample_value(
                    "idolstream_fan_memory_lookups_total", {"tier": "fast", "result": result})

            assert (lookups("hit"), lookups("miss")) == (1, 3)  # Aki's second item; Aki new, Ben, Aki forgotten
        finally:
            await fans.stop()


# The first test to ask for the demo model trains it when var/ lacks it (minutes, once).
@pytest.mark.timeout(900)
async def test_the_demo_model_welcomes_back_the_fans_it_remembers_and_only_them(
    kafka_bootstrap, topic_prefix, demo_runner
):
    """What she says depends on her memory: a fan's second picture is welcomed back, a first one is not."""
    pool = [(sub, facts) for sub, facts in held_out_submissions(40, 41, room="memory") if facts.kind == "fan_image"]
    fans_count = 8
    firsts, seconds = pool[:fans_count], pool[fans_count:2 * fans_count]
    async with running_stack(kafka_bootstrap, topic_prefix, demo_runner, fan_memory=True) as stack:
        fans = await FansProcess(kafka_bootstrap, topic_prefix, topic_partitions=2).start()
        memory = stack.fast_worker.tier.fan_memory
        try:
            overlay = await stack.overlay("memory")
            said: dict[str, dict] = {}

            async def answer(submission) -> dict:
                await stack.client.submit(submission)
                while submission.item_id not in said:
                    reply = await next_reply(overlay)
                    said[reply["item_id"]] = reply
                return said[submission.item_id]

            first_replies, second_replies = [], []
            for n, ((first, _), (second, facts)) in enumerate(zip(firsts, seconds)):
                fan = UserRef(id=f"fan-{n}", display_name=first.user.display_name)
                first_replies.append(await answer(first.model_copy(update={"user": fan})))
                await until(lambda: (p := memory.lookup("memory", fan.id, utcnow())) and p.replies_received,
                            f"{fan.id}'s first answer remembered")
                second_replies.append((await answer(second.model_copy(update={"user": fan})), facts))
        finally:
            await fans.stop()

    welcomed_first = [r["text"] for r in first_replies if welcomes_back(r["text"])]
    welcomed_second = [r["text"] for r, _ in second_replies if welcomes_back(r["text"])]
    print(f"welcomed back: {len(welcomed_second)}/{fans_count} regulars, {len(welcomed_first)}/{fans_count} first-timers")
    # 5 of 8 when measured (7 of 8 before drawing requests joined the tiny model's training data), against 0 of 8
    # first-timers: memory decides it.
    assert len(welcomed_second) >= fans_count // 2 + 1, [r["text"] for r, _ in second_replies]
    assert len(welcomed_first) <= 1, welcomed_first
    # Remembering the fan does not make her forget to look at the picture.
    assert sum(names_colour(r["text"], facts.colour) for r, facts in second_replies) >= fans_count - 2
