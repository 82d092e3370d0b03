"""Replies are checked against the persona before they leave the fast tier, through the real services.

The fast tier runs the demo model (it answers in character, in the fan's language, so its
replies pass the checks). A runner around it replaces the answers to chosen fans with ones
that must not go out: French, which she does not speak, or an answer too long for her
bubble. A miss is asked of the model once more, with a hint; a second miss, or no time for
a second try, sends the persona's fallback line in the fan's language.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from producers.training_data import held_out_submissions
from stream.learning.replies import names_colour, needs_thought
from stream.persona import Persona
from tests.conftest import PROJECT_ROOT
from tests.stack import RecordingRunner, read_topic, running_stack

pytestmark = pytest.mark.kafka

PERSONA = Persona.load(PROJECT_ROOT / "config" / "persona.json")
FRENCH = "[happy] Merci beaucoup pour ce joli dessin, je l'adore !"
RAMBLING = "[happy] " + "So pretty, so pretty! " * 15


def user_text(request) -> str:
    return request.messages[1]["content"][1]["text"]


class RewritingRunner(RecordingRunner):
    """The demo model, with its first `times` answers to fan NAME replaced by TEXT."""

    def __init__(self, runner, bad: dict[str, tuple[str, int]]) -> None:
        super().__init__(runner)
        self.bad = dict(bad)
        self.asked: list[str] = []  # every user turn the model was given

    def generate(self, requests, options=None):
        results = super().generate(requests, options)
        out = []
        for request, result in zip(requests, results):
            text = user_text(request)
            self.asked.append(text)
            for name, (bad_text, times) in self.bad.items():
                if text.startswith(f"{name} sent") and times > 0:
                    self.bad[name] = (bad_text, times - 1)
                    result = replace(result, text=bad_text)
            out.append(result)
        return out


def english_drawings(count: int, names: list[str]):
    """Held-out English drawings (never in training), each from a fan of its own name."""
    pool = [(s, f) for s, f in held_out_submissions(80, 31, room="checks")
            if f.kind == "fan_image" and f.lang == "en" and not needs_thought(f)]
    picked = []
    for (submission, facts), name in zip(pool[:count], names):
        user = submission.user.model_copy(update={"display_name": name})
        picked.append((submission.model_copy(update={"user": user}), facts))
    return picked


async def replies_to(stack, items) -> dict[str, dict]:
    wanted = {submission.item_id for submission, _ in items}
    for submission, _ in items:
        await stack.client.submit(submission)
    records = await read_topic(stack.bootstrap, stack.fast.topics.replies,
                               lambda got: wanted <= {r["item_id"] for r in got})
    return {r["item_id"]: r for r in records if r["item_id"] in wanted}


@pytest.mark.timeout(900)
async def test_a_reply_in_a_language_she_does_not_speak_is_regenerated_once_and_then_goes_out(
    kafka_bootstrap, topic_prefix, demo_runner
):
    (french, french_facts), (plain, plain_facts) = english_drawings(2, ["Frenchy", "Plain"])
    runner = RewritingRunner(demo_runner, {"Frenchy": (FRENCH, 1)})
    async with running_stack(kafka_bootstrap, topic_prefix, runner, regenerate_within_ms=60_000) as stack:
        got = await replies_to(stack, [(french, french_facts), (plain, plain_facts)])
        misses = stack.metrics.reply_check_misses
        assert misses.labels("fast", "language_not_spoken")._value.get() == 1
        assert stack.metrics.regenerations.labels("fast")._value.get() == 1

    again = got[french.item_id]
    assert (again["tier"], again["degraded"]) == ("fast", None), again
    assert names_colour(again["text"], french_facts.colour), again["text"]  # the model's second answer
    assert again["persona_version"] == PERSONA.version
    [retry] = [text for text in runner.asked if "(Answer again" in text]
    assert retry.startswith("Frenchy sent") and "answer in English" in retry
    assert got[plain.item_id]["tier"] == "fast" and "Merci" not in got[plain.item_id]["text"]


@pytest.mark.timeout(900)
async def test_a_reply_that_misses_twice_becomes_her_fallback_line_in_the_fans_language(
    kafka_bootstrap, topic_prefix, demo_runner
):
    [(rambler, facts)] = english_drawings(1, ["Rambler"])
    rambler = rambler.model_copy(update={"text": "画得好看吗？", "lang": "zh"})
    runner = RewritingRunner(demo_runner, {"Rambler": (RAMBLING, 2)})
    async with running_stack(kafka_bootstrap, topic_prefix, runner, regenerate_within_ms=60_000) as stack:
        got = await replies_to(stack, [(rambler, facts)])
        assert stack.metrics.reply_check_misses.labels("fast", "too_long")._value.get() == 2
        assert stack.metrics.degraded.labels("persona_check")._value.get() == 1

    reply = got[rambler.item_id]
    assert (reply["tier"], reply["degraded"]) == ("fallback", "persona_check"), reply
    assert reply["text"] in PERSONA.lines["zh"].fallback
    assert sum("(Answer again" in text for text in runner.asked) == 1  # one regeneration, not two


@pytest.mark.timeout(900)
async def test_without_time_for_a_second_try_the_fallback_line_goes_out_at_once(
    kafka_bootstrap, topic_prefix, demo_runner
):
    [(french, facts)] = english_drawings(1, ["Frenchy"])
    runner = RewritingRunner(demo_runner, {"Frenchy": (FRENCH, 1)})
    async with running_stack(kafka_bootstrap, topic_prefix, runner, regenerate_within_ms=0) as stack:
        got = await replies_to(stack, [(french, facts)])
        assert stack.metrics.regenerations.labels("fast")._value.get() == 0

    reply = got[french.item_id]
    assert (reply["tier"], reply["degraded"]) == ("fallback", "persona_check")
    assert reply["text"] in PERSONA.lines["en"].fallback
    assert not [text for text in runner.asked if "(Answer again" in text]
