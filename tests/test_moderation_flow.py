"""Moderation on both sides, through the real services: broker, fast tier, gateway, websocket.

The word list is the shipped one (config/moderation/words.json). A fan whose text or name
is listed, however disguised, is never answered and their verdict is on the moderation
topic; a reply that would say a listed word never reaches a websocket; what is held for
review goes to `replies.held`; a fan's thumbnail reaches the overlay only when an image
guard passed the picture. The image guard here is one whose verdicts the test fixes: it
calls red pictures unsafe.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from PIL import Image

from consumers.moderation import FanModeration
from producers.samples import sample_item
from stream.metrics import WorkerMetrics
from stream.models.runtime import GenerationResult
from stream.moderation.guard import GuardPolicy, ImageGuard
from stream.moderation.text_filter import TextFilter
from stream.persona import Persona
from tests.conftest import PROJECT_ROOT
from tests.stack import RecordingRunner, answers, frames_until, read_topic, running_stack

pytestmark = pytest.mark.kafka

PERSONA = Persona.load(PROJECT_ROOT / "config" / "persona.json")
WORDS = PROJECT_ROOT / "config" / "moderation" / "words.json"

# Each disguises a listed term the way fans do.
EVASIONS = [
    "you are an ｉｄｉｏｔ",  # full width
    "what an i\u200bd\u200bi\u200bo\u200bt",  # zero-width spaces inside
    "i.d.i.o.t streamer",  # symbols inside
    "idiooooot",  # repeated letters
    "你这个笨 蛋",  # a space inside
    "你这个笨😂蛋",  # an emoji inside
    "bendan!",  # pinyin
    "滾出去",  # traditional characters
    "加❤微❤信 看更多",  # spam, hearts inside
]


async def _blocked_then_clean(stack, room: str, texts: list[str], names: list[str] | None = None):
    overlay = await stack.overlay(room)
    blocked = []
    for i, text in enumerate(texts):
        name = (names or [])[i] if names else "Fan"
        blocked.append(await stack.submit(room, seed=i, text=text, display_name=name, user_id=f"u{i}"))
    clean = await stack.submit(room, seed=99, text="I drew you a cat!", user_id="clean")
    # One room, one partition, in order: once the clean item is answered, the others were judged.
    got = answers(await frames_until(overlay, lambda r: any(a["item_id"] == clean.item_id for a in answers(r))))
    return blocked, clean, got


async def test_listed_words_in_fan_text_are_caught_however_disguised_and_never_answered(
    kafka_bootstrap, topic_prefix, fast_runner
):
    async with running_stack(kafka_bootstrap, topic_prefix, fast_runner) as stack:
        blocked, clean, shown = await _blocked_then_clean(stack, "room-m", EVASIONS + ["dumbbell day!"])
        allowed = blocked.pop()  # "dumbbell" holds "dumb": the allow-list lets it through
        records = await read_topic(kafka_bootstrap, stack.fast.topics.moderation, lambda r: len(r) >= len(blocked))
        replies = await read_topic(kafka_bootstrap, stack.fast.topics.replies,
                                   lambda r: clean.item_id in {x["item_id"] for x in r})
        verdicts = stack.metrics.moderation_verdicts.labels("fan", "word_filter", "block")._value.get()

    assert {r["item_id"] for r in records} == {s.item_id for s in blocked}
    assert {(r["side"], r["stage"], r["action"]) for r in records} == {("fan", "word_filter", "block")}
    assert verdicts == len(blocked)
    answered = {r["item_id"] for r in replies}
    assert not answered & {s.item_id for s in blocked}
    assert {clean.item_id, allowed.item_id} <= answered
    assert {a["item_id"] for a in shown} == {clean.item_id, allowed.item_id}


async def test_a_listed_display_name_is_never_answered_nor_shown(kafka_bootstrap, topic_prefix, fast_runner):
    async with running_stack(kafka_bootstrap, topic_prefix, fast_runner) as stack:
        blocked, clean, shown = await _blocked_then_clean(stack, "room-n", ["hi!", "hello"], ["Ｍｏｒｏｎ", "笨蛋123"])
        records = await read_topic(kafka_bootstrap, stack.fast.topics.moderation, lambda r: len(r) >= 2)
    assert {a["item_id"] for a in shown} == {clean.item_id}
    assert all("display name" in r["detail"] for r in records)


class SayingRunner(RecordingRunner):
    """The real fast model, whose answers to fans named NAME are replaced by TEXT."""

    def __init__(self, runner, said: dict[str, str]) -> None:
        super().__init__(runner)
        self.said = said

    def generate(self, requests, options=None):
        results = super().generate(requests, options)
        out = []
        for request, result in zip(requests, results):
            asked = request.messages[1]["content"][1]["text"]
            name = next((n for n in self.said if asked.startswith(f"{n} sent")), None)
            out.append(replace(result, text=self.said[name]) if name else result)
        return out


async def test_a_reply_that_would_say_a_listed_word_never_reaches_a_websocket(
    kafka_bootstrap, topic_prefix, fast_runner
):
    runner = SayingRunner(fast_runner, {"Rude": "[happy] What a drawing, you ｉｄｉｏｔ!",
                                        "Sad": "[sad] Me too, sometimes I want to die..."})
    async with running_stack(kafka_bootstrap, topic_prefix, runner) as stack:
        overlay = await stack.overlay("room-r")
        rude = await stack.submit("room-r", seed=1, display_name="Rude", user_id="rude", text="look!")
        sad = await stack.submit("room-r", seed=2, display_name="Sad", user_id="sad", text="look!")
        last = await stack.submit("room-r", seed=3, display_name="Plain", user_id="plain", text="look!")
        frames = await frames_until(overlay, lambda r: any(a["item_id"] == last.item_id for a in answers(r)))
        replies = await read_topic(kafka_bootstrap, stack.fast.topics.replies,
                                   lambda r: last.item_id in {x["item_id"] for x in r})
        [held] = await read_topic(kafka_bootstrap, stack.fast.topics.replies_held, lambda r: len(r) >= 1)
        records = await read_topic(kafka_bootstrap, stack.fast.topics.moderation, lambda r: len(r) >= 2)

    assert not any("idiot" in f["_raw"].lower() or "ｉｄｉｏｔ" in f["_raw"] for f in frames)
    assert not any("idiot" in r["text"].lower() or "ｉｄｉｏｔ" in r["text"] for r in replies)
    [instead] = [f for f in frames if f["item_id"] == rude.item_id]
    assert instead["text"] in PERSONA.lines["en"].fallback
    assert (instead["tier"], instead["degraded"]) == ("fallback", "moderation_blocked")
    assert sad.item_id not in {f["item_id"] for f in frames}  # to review: held, not shown
    assert held["reply"]["item_id"] == sad.item_id and held["fan_text"] == "look!"
    assert held["why"][0]["categories"] == ["self_harm"] and held["picture"].startswith("data:image/jpeg")
    assert {(r["item_id"], r["side"], r["action"]) for r in records} == {
        (rude.item_id, "reply", "block"), (sad.item_id, "reply", "review")
    }


async def test_a_fan_text_to_review_is_answered_but_held_for_an_operator(kafka_bootstrap, topic_prefix, fast_runner):
    async with running_stack(kafka_bootstrap, topic_prefix, fast_runner) as stack:
        overlay = await stack.overlay("room-h")
        worried = await stack.submit("room-h", seed=1, text="我真的不想活了", user_id="w")
        last = await stack.submit("room-h", seed=2, text="hi", user_id="plain")
        frames = await frames_until(overlay, lambda r: any(a["item_id"] == last.item_id for a in answers(r)))
        [held] = await read_topic(kafka_bootstrap, stack.fast.topics.replies_held, lambda r: len(r) >= 1)
    assert worried.item_id not in {f["item_id"] for f in frames}
    assert held["reply"]["item_id"] == worried.item_id
    assert [(w["side"], w["stage"], w["action"]) for w in held["why"]] == [("fan", "word_filter", "review")]


class RedIsUnsafe:
    """An image guard whose verdicts the test fixes: pictures mostly red are unsafe, the rest safe."""

    def __init__(self, spec) -> None:
        self.spec = spec

    def generate(self, requests, options=None):
        out = []
        for request in requests:
            r, g, b = request.images[0].convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
            red = r > 150 and g < 100 and b < 100
            text = "Safety: Unsafe\nCategories: Violent" if red else "Safety: Safe\nCategories: None"
            out.append(GenerationResult(text, 10, 6, "stop"))
        return out

    def close(self) -> None:
        pass


def _picture(colour) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (128, 128), colour).save(buf, format="PNG")
    return buf.getvalue()


async def test_thumbnails_reach_the_overlay_only_for_pictures_an_image_guard_passed(
    kafka_bootstrap, topic_prefix, fast_runner, registry, tiny_checkpoints
):
    async with running_stack(kafka_bootstrap, topic_prefix, fast_runner) as stack:  # no image guard
        overlay = await stack.overlay("room-t")
        item = await stack.submit("room-t", seed=1)
        [shown] = answers(await frames_until(overlay, lambda r: answers(r)))
        assert shown["item_id"] == item.item_id and shown["thumbnail"] is None

    guard = ImageGuard(RedIsUnsafe(registry.get("tiny-qwen3vl-imageguard")))
    moderation = FanModeration(TextFilter.from_file(WORDS), None, guard, GuardPolicy(), WorkerMetrics("fast"))
    async with running_stack(kafka_bootstrap, topic_prefix, fast_runner, fast_moderation=moderation,
                             max_age_s=600) as stack:
        overlay = await stack.overlay("room-u")
        red = await stack.submit("room-u", seed=1, image_bytes=_picture((220, 20, 20)), mime="image/png")
        blue = await stack.submit("room-u", seed=2, image_bytes=_picture((20, 40, 220)), mime="image/png")
        [shown] = answers(await frames_until(overlay, lambda r: answers(r)))
        [record] = await read_topic(kafka_bootstrap, stack.fast.topics.moderation, lambda r: len(r) >= 1)
        replies = await read_topic(kafka_bootstrap, stack.fast.topics.replies,
                                   lambda r: blue.item_id in {x["item_id"] for x in r})

    assert shown["item_id"] == blue.item_id and shown["thumbnail"].startswith("data:image/jpeg")
    assert red.item_id not in {r["item_id"] for r in replies}  # never answered, never shown
    assert (record["item_id"], record["stage"], record["action"]) == (red.item_id, "image_guard", "block")
    assert "Violent" in record["categories"]
    assert moderation.metrics.moderation_verdicts.labels("fan", "image_guard", "block")._value.get() == 1


def test_the_shipped_samples_pass_the_shipped_word_list():
    text_filter = TextFilter.from_file(WORDS)
    for seed in range(40):
        sample = sample_item(seed)
        for text in (sample.text, sample.display_name):
            if text:
                assert text_filter.check(text).action == "allow", text


class JudgesHerWords:
    """A text guard whose verdicts the test fixes: a fan's text is unsafe when it asks for a weapon;
    her answer is unsafe when it tells a secret and controversial when it says "maybe"."""

    def __init__(self, spec) -> None:
        self.spec = spec

    def generate(self, requests, options=None):
        out = []
        for request in requests:
            answer = next((m["content"] for m in request.messages if m["role"] == "assistant"), None)
            if answer is None:
                asked = request.messages[0]["content"]
                text = "Safety: Unsafe\nCategories: Violent" if "weapon" in asked else "Safety: Safe\nCategories: None"
            elif "secret" in answer:
                text = "Safety: Unsafe\nCategories: Violent\nRefusal: No"
            elif "maybe" in answer:
                text = "Safety: Controversial\nCategories: Unethical Acts\nRefusal: No"
            else:
                text = "Safety: Safe\nCategories: None\nRefusal: No"
            out.append(GenerationResult(text, 10, 8, "stop"))
        return out

    def close(self) -> None:
        pass


async def test_a_text_guard_on_her_answers_blocks_one_and_holds_another(
    kafka_bootstrap, topic_prefix, fast_runner, registry, tiny_checkpoints
):
    from stream.moderation.guard import TextGuard

    guard = TextGuard(JudgesHerWords(registry.get("tiny-qwen3guard")))
    moderation = FanModeration(TextFilter.from_file(WORDS), guard, None, GuardPolicy(), WorkerMetrics("fast"))
    runner = SayingRunner(fast_runner, {"Curious": "[happy] Here is a secret recipe for trouble!",
                                        "Unsure": "[shy] Hmm, maybe you should skip school for it!"})
    async with running_stack(kafka_bootstrap, topic_prefix, runner, fast_moderation=moderation) as stack:
        overlay = await stack.overlay("room-g")
        curious = await stack.submit("room-g", seed=1, display_name="Curious", user_id="c", text="tell me!")
        unsure = await stack.submit("room-g", seed=2, display_name="Unsure", user_id="u", text="should I?")
        armed = await stack.submit("room-g", seed=4, display_name="Armed", user_id="a", text="draw me a weapon")
        last = await stack.submit("room-g", seed=3, display_name="Plain", user_id="p", text="hi!")
        frames = await frames_until(overlay, lambda r: any(a["item_id"] == last.item_id for a in answers(r)))
        [held] = await read_topic(kafka_bootstrap, stack.fast.topics.replies_held, lambda r: len(r) >= 1)
        records = await read_topic(kafka_bootstrap, stack.fast.topics.moderation, lambda r: len(r) >= 3)
        replies = await read_topic(kafka_bootstrap, stack.fast.topics.replies,
                                   lambda r: last.item_id in {x["item_id"] for x in r})

    assert armed.item_id not in {r["item_id"] for r in replies}  # the fan's text judged unsafe: never answered
    [instead] = [f for f in frames if f["item_id"] == curious.item_id]
    assert "secret" not in instead["_raw"] and instead["text"] in PERSONA.lines["en"].fallback
    assert instead["degraded"] == "moderation_blocked"
    assert unsure.item_id not in {f["item_id"] for f in frames}
    assert held["reply"]["item_id"] == unsure.item_id and "maybe" in held["reply"]["text"]
    assert {(r["item_id"], r["side"], r["stage"], r["action"]) for r in records} == {
        (curious.item_id, "reply", "text_guard", "block"), (unsure.item_id, "reply", "text_guard", "review"),
        (armed.item_id, "fan", "text_guard", "block"),
    }
    assert moderation.metrics.moderation_verdicts.labels("reply", "text_guard", "block")._value.get() == 1
