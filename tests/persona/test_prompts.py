"""The prompts each tier sends are built from the persona knowledge base."""

from __future__ import annotations

from pathlib import Path

from producers.client import build_submission
from stream.persona import Persona, build_messages, system_prompt

PERSONA = Persona.load(Path(__file__).resolve().parents[2] / "config" / "persona.json")


def test_the_fast_prompt_carries_her_languages_bubble_and_forbidden_topics_and_stays_short():
    prompt = system_prompt(PERSONA, "fast")
    assert "English, Chinese and Japanese" in prompt and "240 characters" in prompt
    assert "politics" in prompt and "real identity" in prompt
    assert PERSONA.lore[0] not in prompt  # the small fast model gets no lore


def test_the_deep_prompt_adds_who_she_is_her_lore_dislikes_and_register():
    prompt = system_prompt(PERSONA, "deep")
    assert PERSONA.identity in prompt and all(fact in prompt for fact in PERSONA.lore)
    assert PERSONA.dislikes[0] in prompt and PERSONA.language_register["zh"] in prompt
    assert len(prompt) > len(system_prompt(PERSONA, "fast"))


def test_a_regenerated_answer_is_asked_with_the_hint_after_the_fans_words():
    sub = build_submission(room="r", user_id="u", display_name="Aki", image_bytes=b"x", mime="image/png",
                           text="好可爱")
    messages = build_messages(PERSONA, sub, "fast", "(Answer again: answer in Chinese.)")
    text = messages[1]["content"][1]["text"]
    assert text.index("好可爱") < text.index("(Answer again: answer in Chinese.)")
