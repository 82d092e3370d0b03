"""The idol's persona: her knowledge base, the prompts built from it, and the reading of her answers.

    card      the persona file (`Persona`), validated whole and versioned
    prompts   the system and user prompts, per tier
    reading   untrusted text made inert; a model's raw answer read into text, cue and verdict
    language  which language a text is in
    checks    a reply checked against the persona before it leaves
"""

from stream.persona.card import Persona, PersonaError
from stream.persona.checks import ReplyMiss, check_reply, retry_hint
from stream.persona.language import detect_language, fan_language
from stream.persona.prompts import build_messages, system_prompt, user_prompt
from stream.persona.reading import DEEP_TAG, DRAW_TAG, EMOTIONS, ReadReply, fit_bubble, neutralise_fan_text, read_reply

__all__ = [
    "DEEP_TAG", "DRAW_TAG", "EMOTIONS", "Persona", "PersonaError", "ReadReply", "ReplyMiss", "build_messages",
    "check_reply", "detect_language", "fan_language", "fit_bubble", "neutralise_fan_text", "read_reply", "retry_hint",
    "system_prompt", "user_prompt",
]
