"""A reply checked against the persona: each reason a reply may not go out, and the lines that pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.persona import Persona, ReplyMiss, check_reply, detect_language, retry_hint

PERSONA = Persona.load(Path(__file__).resolve().parents[2] / "config" / "persona.json")


@pytest.mark.parametrize(
    ("text", "fan", "miss"),
    [
        ("x" * 241, "en", ReplyMiss.TOO_LONG),
        ("!", None, ReplyMiss.TOO_SHORT),
        ("Merci beaucoup pour ce joli dessin, je l'adore !", "fr", ReplyMiss.LANGUAGE_NOT_SPOKEN),
        ("Danke für das schöne Bild, ich liebe es!", None, ReplyMiss.LANGUAGE_NOT_SPOKEN),
        ("그림 고마워요! 정말 예뻐요!", "ko", ReplyMiss.LANGUAGE_NOT_SPOKEN),
        ("Thank you for the lovely drawing!", "zh", ReplyMiss.NOT_FAN_LANGUAGE),
        ("谢谢你的画，好可爱！", "ja", ReplyMiss.NOT_FAN_LANGUAGE),
        ("谢谢你的画，好可爱！", "fr", ReplyMiss.NOT_FAN_LANGUAGE),  # not hers: answer in her default, English
        ("Who will win the Election, do you think?", "en", ReplyMiss.FORBIDDEN_TOPIC),
        ("你觉得这次选举谁会赢？", "zh", ReplyMiss.FORBIDDEN_TOPIC),
        ("Ｂｉｔｃｏｉｎ is going up, buy now!", "en", ReplyMiss.FORBIDDEN_TOPIC),  # full width folds
        ("Thanks! ＜|im_end|＞", "en", ReplyMiss.CONTROL_TOKENS),
        ("Thanks <|endoftext|>", "en", ReplyMiss.CONTROL_TOKENS),
        ("So cute ＜think＞ hmm", "en", ReplyMiss.CONTROL_TOKENS),
        ("**So cute!** I love it", "en", ReplyMiss.MARKUP),
        ("<b>So cute!</b>", "en", ReplyMiss.MARKUP),
        ("Look at https://example.com for more!", "en", ReplyMiss.MARKUP),
        ("The user wants me to praise the drawing.", "en", ReplyMiss.REASONING),
        ("As an AI, I cannot see colours.", "en", ReplyMiss.REASONING),
        ("用户发了一张画，我应该夸奖。", "zh", ReplyMiss.REASONING),
    ],
)
def test_a_reply_that_must_not_go_out_says_why(text, fan, miss):
    assert miss in check_reply(text, PERSONA, fan)


@pytest.mark.parametrize(
    ("text", "fan"),
    [
        ("So blue! I see hearts, Momo! Mirai-mode, on!", "en"),
        ("So blue! I see hearts, Momo!", None),  # no text from the fan: any language she speaks
        ("哇,绿色的画!还有星星,谢谢Sora! Kiraboshi!", "zh"),  # a Latin name in Chinese is still Chinese
        ("わあ、ピンクの絵!丸とハートもある、Yukiさん!", "ja"),
        ("Wow, a comment wall! Thanks for the love!", "ko"),  # Korean is not hers: English, her default
        ("I'm presidential material, ehehe!", "en"),  # "president" inside another word is not the topic
        ("Haru yellow!", "en"),
        ("Mochi says hi! 🐱✨", "en"),
    ],
)
def test_ordinary_replies_pass(text, fan):
    assert check_reply(text, PERSONA, fan) == []


def test_every_line_she_says_without_a_model_passes():
    for lang, lines in PERSONA.lines.items():
        for line in (*lines.holding, *lines.fallback):
            assert check_reply(line, PERSONA, lang) == [], (lang, line)


def test_a_persona_that_answers_only_in_its_default_language_wants_it_whatever_the_fan_writes():
    english_only = PERSONA.model_copy(update={"answer_in_fan_language": False})
    assert ReplyMiss.NOT_FAN_LANGUAGE in check_reply("谢谢你的画！", english_only, "zh")
    assert check_reply("Thank you for the drawing!", english_only, "zh") == []


def test_the_retry_hint_asks_for_what_was_missed():
    hint = retry_hint([ReplyMiss.NOT_FAN_LANGUAGE, ReplyMiss.TOO_LONG], PERSONA, "zh")
    assert "Chinese" in hint and "240" in hint
    assert "in character" in retry_hint([ReplyMiss.FORBIDDEN_TOPIC], PERSONA, "en")


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("谢谢你的画", "zh"), ("ありがとう！", "ja"), ("赤い花だね、Sora!", "ja"), ("고마워요", "ko"),
        ("Спасибо за рисунок", "ru"), ("Thank you for the picture, it is lovely", "en"),
        ("Gracias por el dibujo, me encanta", "es"), ("🎉🎉", None), ("12 + 30 = 42", None),
        ("Kiraboshi!", "en"),  # unsure: taken to be her Latin language
    ],
)
def test_the_language_of_a_short_line(text, language):
    assert detect_language(text, prefer=("en",)) == language
