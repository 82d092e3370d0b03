"""Which answers an export writes, and why it leaves the others out: the join alone, without Kafka."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from PIL import Image

from producers.client import build_submission
from producers.dataset_export import write_export
from stream.contracts import (
    Cue, Feedback, ForgetRequest, ModerationRecord, Reply, Retraction, ReviewDecision, Submission, Timings, UserRef,
    new_id,
)
from stream.learning.dataset import read_dataset
from stream.learning.export import (
    Exclusion, ExportError, ExportJoin, ExportRules, parse_since, summary_lines,
)
from stream.persona import Persona, build_messages
from stream.reasons import ModerationAction, ModerationSide, ModerationStage, RouteReason

PERSONA = Persona.load(Path(__file__).resolve().parents[2] / "config" / "persona.json")
NOW = datetime(2025, 5, 1, 12, 0, tzinfo=UTC)


def png(colour: str, size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def item(room: str = "r1", user: str = "aki", colour: str = "red", text: str | None = "for you!",
         **fields) -> Submission:
    return build_submission(room=room, user_id=user, display_name=user.title(), image_bytes=png(colour),
                            mime="image/png", text=text, created_at=NOW - timedelta(minutes=30), **fields)


def answer(of: Submission, text: str = "A red one, how lovely!", at: datetime = NOW - timedelta(minutes=29),
           **fields) -> Reply:
    return Reply(
        reply_id=new_id(), item_id=of.item_id, room=of.room, tier=fields.pop("tier", "fast"),
        route_reason=RouteReason.SIMPLE, model_id="m", text=text, cue=Cue(emotion="excited", motion="jump"),
        timings=Timings(item_created_at=of.created_at, queue_ms=1, admission_ms=1, inference_ms=1, replied_at=at),
        in_reply_to=of.user, **fields,
    )


def feedback(kind: str, reply: Reply, feedback_id: str | None = None) -> Feedback:
    return Feedback(feedback_id=feedback_id or new_id(), kind=kind, reply_id=reply.reply_id, room=reply.room,
                    user=UserRef(id="fan-9", display_name="Ben"), at=NOW)


def decision(reply: Reply, verdict: str, after: str | None = None) -> ReviewDecision:
    return ReviewDecision(decision_id=new_id(), reply_id=reply.reply_id, item_id=reply.item_id, room=reply.room,
                          operator="op", decision=verdict, edited=after is not None and after != reply.text,
                          before=reply.text, after=after, held_at=NOW, at=NOW)


def block(of: Submission, side: ModerationSide, reply: Reply | None = None, action=ModerationAction.BLOCK):
    return ModerationRecord(record_id=new_id(), item_id=of.item_id, room=of.room, user=of.user, side=side,
                            stage=ModerationStage.WORD_FILTER, action=action,
                            reply_id=reply.reply_id if reply else None, at=NOW)


def joined(rules: ExportRules, pairs, extra=()) -> ExportJoin:
    """A join fed like the export feeds it: replies and the small topics first, then the items."""
    join = ExportJoin(rules)
    for _, reply in pairs:
        join.add_reply(reply)
    for record in extra:
        {Feedback: join.add_feedback, ReviewDecision: join.add_decision, Retraction: join.add_retraction,
         ModerationRecord: join.add_moderation, ForgetRequest: join.add_forget}[type(record)](record)
    for submission, _ in pairs:
        if submission is not None:
            join.add_item(submission)
    return join


def liked_pair(**item_fields):
    submission = item(**item_fields)
    reply = answer(submission)
    return (submission, reply), feedback("like", reply)


def test_a_liked_answer_is_exported_with_its_picture_and_text_and_an_unliked_one_is_not():
    (liked, like), plain = liked_pair(colour="red"), liked_pair(colour="blue")[0]
    result = joined(ExportRules(), [liked, plain], [like]).result()
    assert [(p.reply.reply_id, p.text, p.likes, p.approved) for p in result.pairs] == [
        (liked[1].reply_id, "A red one, how lovely!", 1, False)]
    assert result.pairs[0].image == png("red") and result.pairs[0].image_suffix == ".png"
    assert result.pairs[0].target == "[excited] A red one, how lovely!"  # the model's own output format
    assert result.answers == 2 and result.excluded == {Exclusion.NOT_LIKED: 1}


def test_the_same_feedback_id_counts_once_toward_min_likes():
    (pair, like) = liked_pair()
    once = joined(ExportRules(min_likes=2), [pair], [like, like]).result()
    assert once.pairs == [] and once.excluded == {Exclusion.NOT_LIKED: 1}
    twice = joined(ExportRules(min_likes=2), [pair], [like, feedback("like", pair[1])]).result()
    assert [p.likes for p in twice.pairs] == [2]


def test_one_report_keeps_a_liked_answer_out_however_many_likes_it_has():
    (pair, like) = liked_pair()
    likes = [like] + [feedback("like", pair[1]) for _ in range(5)]
    result = joined(ExportRules(), [pair], [*likes, feedback("report", pair[1])]).result()
    assert result.pairs == [] and result.excluded == {Exclusion.REPORTED: 1}


def test_retracted_rejected_and_blocked_answers_are_left_out_each_under_its_reason():
    pairs, extra = [], []
    for _ in range(5):
        pair, like = liked_pair()
        pairs.append(pair)
        extra.append(like)
    (i0, r0), (i1, r1), (i2, r2), (i3, r3), (i4, r4) = pairs
    extra += [
        Retraction(retraction_id=new_id(), reply_id=r0.reply_id, room=r0.room, reason="reports", reports=3, at=NOW),
        decision(r1, "reject"),
        block(i2, ModerationSide.FAN),  # what the fan sent was blocked: no answer to it is exported
        block(i3, ModerationSide.REPLY, reply=r3),  # this very answer was blocked
        block(i4, ModerationSide.REPLY, action=ModerationAction.REVIEW),  # held for review is not a block
    ]
    result = joined(ExportRules(), pairs, extra).result()
    assert [p.reply.reply_id for p in result.pairs] == [r4.reply_id]
    assert result.excluded == {Exclusion.RETRACTED: 1, Exclusion.REJECTED: 1, Exclusion.BLOCKED: 2}


def test_a_block_on_another_reply_of_the_same_item_leaves_this_answer_alone():
    (submission, reply), like = liked_pair()
    other = answer(submission, text="An earlier try")
    other_blocked = block(submission, ModerationSide.REPLY, other)
    result = joined(ExportRules(), [(submission, reply)], [like, other_blocked]).result()
    assert [p.reply.reply_id for p in result.pairs] == [reply.reply_id]


def test_a_forgotten_fan_is_never_exported_in_that_room_but_is_elsewhere():
    (here, like_here), (there, like_there) = liked_pair(room="r1", user="aki"), liked_pair(room="r2", user="aki")
    forget = ForgetRequest(request_id=new_id(), room="r1", user_id="aki", requested_by="aki's bot", at=NOW)
    result = joined(ExportRules(), [here, there], [like_here, like_there, forget]).result()
    assert [p.item.room for p in result.pairs] == ["r2"]
    assert result.excluded == {Exclusion.FORGOTTEN: 1}


def test_an_answer_approved_in_review_is_exported_without_likes_in_the_words_approved():
    submission = item()
    reply = answer(submission, text="A red one!! so red")
    result = joined(ExportRules(), [(submission, reply)], [decision(reply, "approve", after="A red one, so bright!")])
    [pair] = result.result().pairs
    assert (pair.text, pair.approved, pair.likes) == ("A red one, so bright!", True, 0)
    assert pair.target == "[excited] A red one, so bright!"


def test_min_likes_zero_exports_every_clean_answer_but_never_a_reported_one():
    (clean, _), (reported, _) = liked_pair(), liked_pair()
    result = joined(ExportRules(min_likes=0), [clean, reported], [feedback("report", reported[1])]).result()
    assert [p.reply.reply_id for p in result.pairs] == [clean[1].reply_id]


def test_holding_lines_digests_and_persona_lines_are_not_answers_to_learn_from():
    submission = item()
    holding = answer(submission, text="Let me look closely...", role="holding")
    persona_line = answer(submission, text="Thank you so much!", tier="fallback")
    extra = [feedback("like", holding), feedback("like", persona_line)]
    result = joined(ExportRules(), [(submission, holding), (submission, persona_line)], extra).result()
    assert result.pairs == [] and result.answers == 1
    assert result.excluded == {Exclusion.PERSONA_LINE: 1}


def test_since_and_room_choose_answers_by_when_and_where_they_were_given():
    old_item, new_item, other_item = item(), item(), item(room="r2")
    old, new, other = (answer(old_item, at=NOW - timedelta(hours=3)), answer(new_item, at=NOW - timedelta(hours=1)),
                       answer(other_item, at=NOW - timedelta(hours=1)))
    pairs = [(old_item, old), (new_item, new), (other_item, other)]
    likes = [feedback("like", r) for _, r in pairs]
    rules = ExportRules(since=NOW - timedelta(hours=2), room="r1")
    result = joined(rules, pairs, likes).result()
    assert [p.reply.reply_id for p in result.pairs] == [new.reply_id] and result.answers == 1


def test_a_liked_answer_whose_picture_aged_out_is_counted_not_exported():
    (submission, reply), like = liked_pair()
    elsewhere = item(room="r2", item_id=submission.item_id)  # the same item id in another room is another item
    join = joined(ExportRules(), [(None, reply)], [like])
    join.add_item(elsewhere)
    result = join.result()
    assert result.pairs == [] and result.excluded == {Exclusion.IMAGE_GONE: 1}


def test_only_the_pictures_of_pairs_that_pass_are_kept():
    (kept, like), (reported, _) = liked_pair(), liked_pair()
    join = joined(ExportRules(), [(None, kept[1]), (None, reported[1])], [like, feedback("report", reported[1])])
    assert join.wants(kept[0].room, kept[0].item_id)
    assert not join.wants(reported[0].room, reported[0].item_id)
    assert not join.wants("r1", "never-answered")
    join.add_item(kept[0])
    assert not join.wants(kept[0].room, kept[0].item_id)  # the first record of an item is the one kept


def test_a_picture_that_cannot_be_decoded_is_counted_not_exported():
    submission = build_submission(room="r1", user_id="aki", display_name="Aki", image_bytes=b"\x89PNG\r\n\x1a\nbroken",
                                  mime="image/png")
    reply = answer(submission)
    result = joined(ExportRules(), [(submission, reply)], [feedback("like", reply)]).result()
    assert result.pairs == [] and result.excluded == {Exclusion.IMAGE_UNREADABLE: 1}


def test_a_jpeg_sent_as_png_is_saved_under_its_real_format():
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), "green").save(buf, format="JPEG")
    submission = build_submission(room="r1", user_id="aki", display_name="Aki", image_bytes=buf.getvalue(),
                                  mime="image/png")
    reply = answer(submission)
    [pair] = joined(ExportRules(), [(submission, reply)], [feedback("like", reply)]).result().pairs
    assert pair.image_suffix == ".jpg" and pair.image == buf.getvalue()


def test_an_answer_with_several_faults_is_counted_once_under_the_first():
    (pair, like) = liked_pair()
    forget = ForgetRequest(request_id=new_id(), room="r1", user_id="aki", requested_by="op", at=NOW)
    extra = [like, forget, feedback("report", pair[1]), decision(pair[1], "reject")]
    result = joined(ExportRules(), [pair], extra).result()
    assert result.excluded == {Exclusion.FORGOTTEN: 1} and result.answers == 1


@pytest.mark.parametrize("text, expected", [
    ("6h", NOW - timedelta(hours=6)),
    ("2d", NOW - timedelta(days=2)),
    ("90m", NOW - timedelta(minutes=90)),
    ("1w", NOW - timedelta(weeks=1)),
    ("2025-04-30T18:00:00+09:00", datetime(2025, 4, 30, 9, 0, tzinfo=UTC)),
    ("2025-04-30T09:00:00Z", datetime(2025, 4, 30, 9, 0, tzinfo=UTC)),
    ("2025-04-30", datetime(2025, 4, 30, tzinfo=UTC)),  # no offset: UTC
])
def test_since_is_an_iso_time_or_a_span_back_from_now(text, expected):
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "6 hours", "-2d", "", "2025-13-01"])
def test_a_since_that_is_neither_says_what_to_write(text):
    with pytest.raises(ExportError, match="ISO-8601 time .* span back from now"):
        parse_since(text, NOW)


def test_the_summary_counts_pairs_and_every_reason_and_says_why_pictures_are_missing():
    (liked, like), (plain, _), (gone, like_gone) = liked_pair(), liked_pair(), liked_pair()
    join = joined(ExportRules(), [liked, plain, (None, gone[1])], [like, like_gone])
    lines = summary_lines(join.result(), "out/data.jsonl", 1, {"t.feedback": 2, "t.replies": 0}, 6)
    assert lines[0] == "wrote 1 pair to out/data.jsonl (1 liked, 0 approved in review) out of 3 answers in scope"
    assert lines[1] == "left out 2: not_liked 1, image_gone 1"
    assert any("fewer than 1 like and not approved" in line for line in lines)
    assert any(line.startswith("image_gone: 1 liked pair was not exported") and "6 h" in line for line in lines)
    assert lines[-1] == "skipped 2 undecodable records (t.feedback 2)"


def test_the_written_dataset_asks_what_the_fast_tier_asks_and_keeps_the_fans_pictures(tmp_path):
    first_item, second_item = item(colour="red", text="My drawing!"), item(user="momo", colour="blue", text=None)
    first = (first_item, answer(first_item, at=NOW - timedelta(minutes=20)))
    second = (second_item, answer(second_item, text="Blue like the sea!", at=NOW - timedelta(minutes=10)))
    result = joined(ExportRules(), [second, first], [feedback("like", first[1]), feedback("like", second[1])]).result()
    out = tmp_path / "export"
    write_export(result, out, PERSONA)

    examples = read_dataset(out / "data.jsonl")  # what `idolstream models finetune` reads
    assert len(examples) == 2
    for example, (submission, reply) in zip(examples, [first, second]):
        assert example.messages == [*build_messages(PERSONA, submission),
                                    {"role": "assistant", "content": f"[excited] {reply.text}"}]
        [image] = example.images
        assert image.read_bytes() == submission.image.raw_bytes()
    provenance = [orjson.loads(line) for line in (out / "pairs.jsonl").read_bytes().splitlines()]
    assert [p["reply_id"] for p in provenance] == [first[1].reply_id, second[1].reply_id]
    assert not list(tmp_path.glob(".export*"))  # nothing staged is left behind


def test_an_export_never_writes_into_a_directory_that_holds_something(tmp_path):
    (pair, like) = liked_pair()
    result = joined(ExportRules(), [pair], [like]).result()
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="not empty"):
        write_export(result, tmp_path / "export", PERSONA)
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["notes.txt"]


def test_rules_refuse_negative_likes_and_a_since_without_its_offset():
    with pytest.raises(ExportError, match="min-likes"):
        ExportRules(min_likes=-1)
    with pytest.raises(ExportError, match="UTC offset"):
        ExportRules(since=datetime(2025, 1, 1))
