"""Moderation verdicts turned into what happens, without a broker: fans' items and her replies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from producers.client import build_submission
from stream.contracts import Cue, Timings, utcnow
from stream.errors import ConfigError
from stream.moderation.gate import ReplyScreen, guard_record, judge_fan
from stream.moderation.guard import GuardPolicy, parse_guard_output
from stream.moderation.text_filter import TextFilter
from stream.persona import Persona
from stream.reasons import ModerationAction, ModerationSide, RouteReason
from stream.replies import build_reply

ROOT = Path(__file__).resolve().parents[2]
PERSONA = Persona.load(ROOT / "config" / "persona.json")
WORDS = {
    "categories": {
        "insult": {"action": "block", "terms": ["idiot", "笨蛋"]},
        "self_harm": {"action": "review", "terms": ["不想活了", "want to die"]},
    },
    "allow": [],
}


@pytest.fixture(scope="module")
def text_filter(tmp_path_factory) -> TextFilter:
    path = tmp_path_factory.mktemp("words") / "words.json"
    path.write_text(json.dumps(WORDS, ensure_ascii=False), encoding="utf-8")
    return TextFilter.from_file(path)


def fan(text: str | None = None, name: str = "Aki"):
    return build_submission(room="r1", user_id="u1", display_name=name, image_bytes=b"x", mime="image/png",
                            text=text)


def reply_to(submission, text: str):
    now = utcnow()
    return build_reply(submission, tier="fast", route_reason=RouteReason.SIMPLE, model_id="m", text=text,
                       cue=Cue(emotion="shy", motion="hide_face"),
                       timings=Timings(item_created_at=now, queue_ms=0, admission_ms=0, preprocess_ms=0,
                                       inference_ms=0, replied_at=now))


def test_a_fan_whose_name_or_text_is_listed_is_blocked_and_told_why(text_filter):
    judged = judge_fan(text_filter, fan("what an i.d.i.o.t", name="Ｂｅｎ"), utcnow())
    assert judged.action == ModerationAction.BLOCK
    [record] = judged.records
    assert (record.side, record.stage, record.categories) == ("fan", "word_filter", ["insult"])
    assert "text" in record.detail and "i.d.i.o.t" in record.detail
    by_name = judge_fan(text_filter, fan("hello!", name="笨 蛋"), utcnow())
    assert by_name.action == ModerationAction.BLOCK and "display name" in by_name.records[0].detail


def test_a_fan_text_to_review_is_held_and_a_clean_one_passes(text_filter):
    assert judge_fan(text_filter, fan("我真的不想活了"), utcnow()).action == ModerationAction.REVIEW
    assert judge_fan(text_filter, fan("I drew you a cat!"), utcnow()).action == ModerationAction.ALLOW
    assert judge_fan(text_filter, fan(None), utcnow()).records == ()


def test_a_blocked_reply_is_replaced_by_her_fallback_line_in_its_language(text_filter):
    screen = ReplyScreen(text_filter, PERSONA)
    submission = fan("画得怎么样？")
    screened = screen.screen(reply_to(submission, "你这个笨 蛋！"), utcnow())
    assert screened.held is None
    sent = screened.send
    assert sent.text in PERSONA.lines["zh"].fallback and "笨" not in sent.text
    assert (sent.tier, sent.degraded) == ("fallback", "moderation_blocked")
    [record] = screened.records
    assert (record.side, record.action, record.reply_id) == (ModerationSide.REPLY, "block", sent.reply_id)


def test_a_reply_to_review_goes_to_the_held_topic_with_why(text_filter):
    screen = ReplyScreen(text_filter, PERSONA)
    screened = screen.screen(reply_to(fan("hi"), "Sometimes I want to die of cuteness!"), utcnow(),
                             fan_text="hi")
    assert screened.send is None
    assert screened.held.reply.text.startswith("Sometimes") and screened.held.fan_text == "hi"
    assert [r.stage for r in screened.held.why] == ["word_filter"]


def test_any_reply_to_an_item_held_for_review_is_held_too(text_filter):
    screen = ReplyScreen(text_filter, PERSONA)
    submission = fan("我不想活了")
    held_by = judge_fan(text_filter, submission, utcnow()).records
    screened = screen.screen(reply_to(submission, "Mochi and I are here for you!"), utcnow(), held_by=held_by)
    assert screened.send is None and screened.held.why == list(held_by) and screened.records == []
    clean = screen.screen(reply_to(submission, "Mochi and I are here for you!"), utcnow())
    assert clean.send is not None and clean.held is None


def test_a_persona_whose_own_lines_the_list_stops_is_refused(tmp_path):
    words = {"categories": {"odd": {"action": "block", "terms": ["sparkle"]}}, "allow": []}
    path = tmp_path / "words.json"
    path.write_text(json.dumps(words), encoding="utf-8")
    with pytest.raises(ConfigError, match="sparkle"):
        ReplyScreen(TextFilter.from_file(path), PERSONA)


@pytest.mark.parametrize(
    ("output", "action"),
    [
        ("Safety: Safe\nCategories: None", None),
        ("Safety: Unsafe\nCategories: Violent", "block"),
        ("Safety: Controversial\nCategories: Politically Sensitive Topics", "review"),
        ("I think it is fine", "review"),  # unparseable: held, never let through
    ],
)
def test_each_guard_verdict_becomes_its_action_with_its_stage(output, action):
    verdict = parse_guard_output(output, "prompt", "image_guard")
    record = guard_record(fan("hi"), verdict, GuardPolicy(), ModerationSide.FAN, utcnow())
    if action is None:
        assert record is None
    else:
        assert (record.action, record.stage, record.side) == (action, "image_guard", "fan")
        assert verdict.safety in record.categories
