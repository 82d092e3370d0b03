"""The synthetic training set: deterministic, true to its pictures, and shaped as the fast tier asks."""

import base64
import hashlib
import io
import random
import re
from pathlib import Path

import orjson
import pytest
from PIL import Image

from producers.client import build_submission
from producers.training_data import (
    DRAW_TEXTS, FAN_TEXTS, PALETTE, dominant_colour, held_out_draw_requests, held_out_submissions, read_facts,
    write_training_data,
)
from stream.draw import draw_request
from stream.images import ImageLimits, admit_image, text_coverage
from stream.learning.dataset import dataset_digest, read_dataset
from stream.learning.replies import (
    COLOUR_NAMES, COLOURS, MAX_BODY_CHARS, SHAPE_NAMES, SHAPES, PictureFacts, colours_named, compose_reply,
    expected_emotion, names_colour, names_comment_wall, needs_thought,
)
from stream.persona import Persona, build_messages, read_reply
from stream.routing import RoutingPolicy

PERSONA = Persona.load(Path(__file__).resolve().parents[2] / "config" / "persona.json")
SEED = 7
COUNT = 60
BUDGET = ImageLimits()  # the fast tier's image budget: 256x256 pixels


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    write_training_data(out, COUNT, SEED, PERSONA)
    return out


@pytest.fixture(scope="module")
def holdout_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("holdout")
    write_training_data(out, 30, SEED, PERSONA, holdout=True)
    return out


def _records(out: Path) -> list[dict]:
    return [orjson.loads(line) for line in (out / "data.jsonl").read_bytes().splitlines()]


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_the_same_seed_writes_the_same_bytes_and_another_seed_does_not(train_dir, tmp_path):
    write_training_data(tmp_path / "again", COUNT, SEED, PERSONA)
    assert _files(tmp_path / "again") == _files(train_dir)
    write_training_data(tmp_path / "other", COUNT, SEED + 1, PERSONA)
    assert (tmp_path / "other" / "data.jsonl").read_bytes() != (train_dir / "data.jsonl").read_bytes()


def test_a_smaller_count_is_a_prefix_of_a_larger_one(train_dir, tmp_path):
    write_training_data(tmp_path / "small", 10, SEED, PERSONA)
    assert _records(tmp_path / "small") == _records(train_dir)[:10]
    assert read_facts(tmp_path / "small") == read_facts(train_dir)[:10]


def test_the_generated_dataset_reads_back_with_one_fact_line_per_record(train_dir):
    examples = read_dataset(train_dir / "data.jsonl")
    facts = read_facts(train_dir)
    assert len(examples) == len(facts) == COUNT
    assert [e.images[0].name for e in examples] == [f"{i:06d}.png" for i in range(COUNT)]
    assert len(dataset_digest(train_dir / "data.jsonl")) == 64


def test_the_set_covers_every_colour_language_and_situation(train_dir):
    facts = read_facts(train_dir)
    assert {f.colour for f in facts} == set(COLOURS)
    assert {f.lang for f in facts} == {"en", "zh", "ja"}
    assert {s for f in facts for s in f.shapes} == set(SHAPES)
    assert any(f.question for f in facts)
    assert any(f.text is None for f in facts)
    walls = [f for f in facts if f.kind == "danmaku_screenshot"]
    assert any(f.dense for f in walls) and any(not f.dense for f in walls)
    assert any(f.draw for f in facts)  # fans asking her to draw


def test_fans_who_ask_her_to_draw_are_recognised_and_the_others_are_not():
    for lang, texts in DRAW_TEXTS.items():
        for text in texts:
            assert draw_request(text) is not None, text
    for texts in FAN_TEXTS.values():
        for text in texts:
            assert draw_request(text) is None, text


def test_a_drawing_request_is_answered_with_the_draw_tag_and_her_idea_in_the_fans_colour(train_dir):
    pairs = [(r, f) for r, f in zip(_records(train_dir), read_facts(train_dir), strict=True) if f.draw]
    assert pairs
    for record, facts in pairs:
        target = record["conversations"][-1]["value"]
        read = read_reply(target, PERSONA, "item")
        assert read.wants_draw and not read.wants_deep, target
        assert draw_request(facts.text) is not None
        assert names_colour(read.text, facts.colour), target
    plain = [f for f in read_facts(train_dir) if not f.draw]
    for record, facts in zip(_records(train_dir), read_facts(train_dir)):
        if not facts.draw:
            assert not read_reply(record["conversations"][-1]["value"], PERSONA, "item").wants_draw
    assert plain


def test_held_out_drawing_requests_are_fans_asking_and_never_in_the_other_held_out_sets():
    asks = held_out_draw_requests(6, SEED)
    assert len(asks) == 6 and all(f.draw and draw_request(s.text) for s, f in asks)
    others = {s.item_id for s, _ in held_out_submissions(30, SEED)}
    assert not others & {s.item_id for s, _ in asks}
    assert not any(f.draw for _, f in held_out_submissions(30, SEED))


def test_a_record_renders_exactly_as_the_fast_tier_builds_its_request(train_dir):
    """Without its target, an example's messages are build_messages() of the same submission."""
    for example, facts in zip(read_dataset(train_dir / "data.jsonl"), read_facts(train_dir), strict=True):
        submission = build_submission(
            room="r", user_id="u", display_name=facts.name, image_bytes=example.images[0].read_bytes(),
            mime="image/png", kind=facts.kind, text=facts.text,
        )
        assert example.messages[:-1] == build_messages(PERSONA, submission, "fast", None, facts.memory)
        assert example.messages[-1]["role"] == "assistant"


def test_the_recorded_colour_dominates_each_picture_as_the_tier_sees_it(train_dir):
    for i, facts in enumerate(read_facts(train_dir)):
        seen = admit_image((train_dir / "images" / f"{i:06d}.png").read_bytes(), BUDGET).image
        assert seen.width * seen.height <= BUDGET.max_pixels
        colour, share = dominant_colour(seen)
        assert colour == facts.colour, f"item {i}"
        assert share >= 0.5, f"item {i}: {facts.colour} covers only {share:.0%}"


def test_held_out_submissions_downscaled_by_the_tier_keep_their_colour(holdout_dir):
    for submission, facts in held_out_submissions(30, SEED):
        seen = admit_image(base64.b64decode(submission.image.data), BUDGET).image
        assert dominant_colour(seen)[0] == facts.colour


def test_drawings_carry_shapes_in_another_colour_and_walls_are_as_dense_as_recorded():
    policy = RoutingPolicy()
    for submission, facts in held_out_submissions(40, SEED + 1):
        full = Image.open(io.BytesIO(base64.b64decode(submission.image.data)))
        coverage = text_coverage(full)
        if facts.kind == "fan_image":
            colour, share = dominant_colour(full)
            assert 0.02 < 1 - share < 0.5, f"shapes cover {1 - share:.0%}"
            assert coverage < policy.dense_text_coverage
        else:
            # The routing policy's own measure agrees with the recorded density.
            assert (coverage >= policy.dense_text_coverage) == facts.dense, f"{facts} coverage {coverage:.2f}"


def test_every_target_parses_into_the_right_cue_and_verdict_and_says_what_is_true(train_dir):
    for record, facts in zip(_records(train_dir), read_facts(train_dir), strict=True):
        target = record["conversations"][-1]["value"]
        read = read_reply(target, PERSONA, "item")
        assert not read.used_fallback
        assert read.cue.emotion == expected_emotion(facts), target
        assert read.wants_deep == needs_thought(facts) == bool(facts.question or facts.dense), target
        # The overlay shows the target as written: tags off, nothing else changed.
        assert target.endswith(read.text)
        assert len(read.text) <= MAX_BODY_CHARS[facts.lang], target
        assert names_colour(read.text, facts.colour), target
        assert COLOUR_NAMES[facts.colour][facts.lang][0] in read.text, target
        assert facts.name in read.text, target
        assert names_comment_wall(read.text) == (facts.kind == "danmaku_screenshot"), target
        for shape in facts.shapes if not facts.question else ():  # a sum's answer is about the sum
            assert SHAPE_NAMES[shape][facts.lang] in read.text, target
        body = read.text
        for phrase in PERSONA.catchphrases:
            body = body.replace(phrase, "")
        if facts.lang == "en":
            assert body.isascii(), target
        elif facts.lang == "zh":
            assert re.search(r"[\u4e00-\u9fff]", body) and not re.search(r"[\u3040-\u30ff]", body), target
        else:
            assert re.search(r"[\u3040-\u30ff]", body), target


def test_catchphrases_appear_in_plain_answers_only(train_dir):
    pairs = list(zip(_records(train_dir), read_facts(train_dir), strict=True))
    said = [any(c in r["conversations"][-1]["value"] for c in PERSONA.catchphrases) for r, _ in pairs]
    assert any(said)
    assert not any(s for s, (_, f) in zip(said, pairs) if needs_thought(f) or f.draw)


def test_held_out_items_never_appear_in_the_training_set(train_dir, holdout_dir):
    def digests(out: Path) -> set[str]:
        return {hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "images").iterdir()}

    assert len(digests(holdout_dir)) == 30
    assert not digests(holdout_dir) & digests(train_dir)
    assert read_dataset(holdout_dir / "data.jsonl")  # a valid dataset in its own right


def test_held_out_submissions_are_the_held_out_set_before_downscaling(holdout_dir):
    items = held_out_submissions(30, SEED, room="oracle")
    assert [facts for _, facts in items] == read_facts(holdout_dir)
    for i, (submission, _) in enumerate(items):
        assert submission.room == "oracle" and submission.image.mime == "image/png"
        seen = admit_image(base64.b64decode(submission.image.data), BUDGET).image
        saved = admit_image((holdout_dir / "images" / f"{i:06d}.png").read_bytes(), BUDGET).image
        assert seen.tobytes() == saved.tobytes()
    assert len({s.item_id for s, _ in items}) == 30


@pytest.mark.parametrize(
    "text,colour,expected",
    [
        ("[happy] Aki, a red picture with stars!", "red", True),
        ("Aki,这幅红色的画里有星星!", "red", True),
        ("Akiさん、赤の絵にハート!", "red", True),
        ("What a RED one", "red", True),
        ("I was bored, Aki", "red", False),  # "red" inside a word is not the colour
        ("A red and blue picture", "red", False),  # naming two colours is not seeing one
        ("A blue picture", "red", False),
        ("オレンジの絵", "orange", True),
        ("橙色的画", "orange", True),
        ("黄色の絵", "yellow", True),
        ("粉色的画", "pink", True),
        ("Aki, no colour here", "black", False),
    ],
)
def test_names_colour_in_any_language(text, colour, expected):
    assert names_colour(text, colour) is expected


def test_every_colour_name_is_recognised_as_itself_and_nothing_else():
    for colour, by_lang in COLOUR_NAMES.items():
        for spellings in by_lang.values():
            for spelling in spellings:
                assert colours_named(f"Aki! {spelling} !") == {colour}, spelling
    with pytest.raises(ValueError, match="unknown colour"):
        names_colour("red", "teal")
    assert set(PALETTE) == set(COLOURS)


def test_long_or_colourful_catchphrases_are_left_out_rather_than_overflow_or_mislead():
    persona = PERSONA.model_copy(update={"catchphrases": ["Blue skies forever!", "x" * 70]})
    facts = PictureFacts("fan_image", "red", ("star",), False, "en", "Aki")
    for n in range(30):
        reply = read_reply(compose_reply(facts, persona, random.Random(n)), persona, "i").text
        assert len(reply) <= MAX_BODY_CHARS["en"] and names_colour(reply, "red"), reply
