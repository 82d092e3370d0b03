"""The persona file: validated whole, every problem named by its field, versioned; `idolstream persona check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream.cli import main
from stream.errors import ConfigError
from stream.persona import Persona, PersonaError

SAMPLE = Path(__file__).resolve().parents[2] / "config" / "persona.json"


def sample() -> dict:
    return json.loads(SAMPLE.read_text(encoding="utf-8"))


def problems_of(data: dict) -> list[str]:
    with pytest.raises(PersonaError) as caught:
        Persona.parse(json.dumps(data).encode(), "test.json")
    return caught.value.problems


def test_the_sample_persona_is_complete_in_chinese_and_english():
    persona = Persona.load(SAMPLE)
    assert {"en", "zh"} <= set(persona.languages)
    assert persona.version and persona.identity and persona.lore and persona.dislikes
    assert {topic.topic for topic in persona.forbidden_topics} >= {"politics", "real_identity"}
    for lang in persona.languages:
        assert persona.lines[lang].holding and persona.lines[lang].fallback


def test_every_missing_or_wrong_field_is_named():
    data = sample()
    del data["identity"]
    data["max_reply_chars"] = 5
    data["lines"]["zh"]["fallback"] = []
    data["forbidden_topics"][0]["topic"] = "Politics!"
    found = problems_of(data)
    assert any(p.startswith("identity:") for p in found), found
    assert any(p.startswith("max_reply_chars:") for p in found), found
    assert any(p.startswith("lines.zh.fallback:") for p in found), found
    assert any(p.startswith("forbidden_topics.0.topic:") for p in found), found


def test_languages_lines_and_default_must_agree():
    data = sample()
    data["default_language"] = "fr"
    del data["lines"]["ja"]
    data["language_register"]["ko"] = "polite"
    [problem] = problems_of(data)
    assert "default_language: 'fr' is not one of languages" in problem
    assert "lines: no holding and fallback lines for ja" in problem
    assert "language_register.ko" in problem


def test_her_own_lines_must_pass_the_reply_checks():
    data = sample()
    data["lines"]["zh"]["fallback"][1] = "Thank you so much!"  # English in the Chinese lines
    data["lines"]["en"]["holding"][0] = "Let me think about the election..."  # a forbidden topic
    data["lines"]["en"]["fallback"][2] = "x" * 300
    found = problems_of(data)
    assert any(p.startswith("lines.zh.fallback.1:") and "not_fan_language" in p for p in found), found
    assert any(p.startswith("lines.en.holding.0:") and "forbidden_topic" in p for p in found), found
    assert any(p.startswith("lines.en.fallback.2:") and "too_long" in p for p in found), found


def test_an_old_persona_file_is_refused_with_the_version_it_needs(tmp_path):
    old = {"name": "X", "personality": "p", "speaking_style": "s", "catchphrases": ["hi"],
           "fallback_lines": ["thanks!"], "holding_lines": ["wait!"]}
    path = tmp_path / "persona.json"
    path.write_text(json.dumps(old), encoding="utf-8")
    with pytest.raises(ConfigError, match="schema_version 2"):
        Persona.load(path)


def test_the_fallback_line_follows_the_fans_language_and_is_stable():
    persona = Persona.load(SAMPLE)
    assert persona.fallback_line("item-1", "zh") in persona.lines["zh"].fallback
    assert persona.fallback_line("item-1", "zh") == persona.fallback_line("item-1", "zh")
    assert persona.holding_line("item-1", "ja") in persona.lines["ja"].holding
    assert persona.fallback_line("item-1", "ko") in persona.lines["en"].fallback  # not hers: her default
    assert persona.reply_language("ko") == "en" and persona.reply_language("zh") == "zh"
    assert persona.reply_language(None) is None


def test_her_drawing_lines_follow_the_fans_language_and_fall_back_when_a_persona_has_none():
    persona = Persona.load(SAMPLE)
    for kind in ("drawing", "drawn", "draw_sorry"):
        assert persona.draw_line(kind, "req-1", "ja") in getattr(persona.lines["ja"], kind)
        assert persona.draw_line(kind, "req-1", "ja") == persona.draw_line(kind, "req-1", "ja")
        assert persona.draw_line(kind, "req-1", "ko") in getattr(persona.lines["en"], kind)
    data = sample()
    for lines in data["lines"].values():
        for kind in ("drawing", "drawn", "draw_sorry"):
            lines.pop(kind, None)
    data["lines"]["en"]["drawn"] = ["Here, I drew it for you!"]
    bare = Persona.parse(json.dumps(data).encode())
    assert bare.draw_line("drawn", "req-1", "zh") == "Here, I drew it for you!"  # her default language's
    assert bare.draw_line("drawing", "req-1", "zh") == bare.holding_line("req-1", "zh")
    assert bare.draw_line("draw_sorry", "req-1", "zh") == bare.fallback_line("req-1", "zh")


def test_her_drawing_lines_pass_the_reply_checks_too():
    data = sample()
    data["lines"]["zh"]["drawn"][0] = "Here you go!"  # English in the Chinese lines
    found = problems_of(data)
    assert any(p.startswith("lines.zh.drawn.0:") and "not_fan_language" in p for p in found), found


def test_persona_check_says_ok_with_the_version(capsys):
    assert main(["persona", "check", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "mirai-2.1.0" in out and "en, zh, ja" in out


def test_persona_check_names_each_bad_field_and_fails(tmp_path, capsys):
    data = sample()
    data["lines"]["en"]["fallback"] = []
    data["version"] = ""
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert main(["persona", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "lines.en.fallback:" in err and "version:" in err and str(path) in err


def test_persona_check_of_a_missing_file_fails_clearly(tmp_path, capsys):
    assert main(["persona", "check", str(tmp_path / "nope.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
