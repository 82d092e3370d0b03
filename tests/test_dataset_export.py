"""`idolstream dataset export` against a real broker: what fans liked, and nothing they should not see again.

Fans' items (real pictures, on both items topics), her answers, likes and reports, review
decisions, a retraction, moderation blocks and a forget request are produced as the services
and bots produce them. The command, run as an operator runs it, must write exactly the
liked and approved pairs, with the fans' pictures byte for byte, and `idolstream models
finetune` must train on what it wrote.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import orjson
import pytest

from consumers.services import prepare_topics
from producers.samples import sample_item
from stream.contracts import (
    Cue, Feedback, ForgetRequest, ModerationRecord, Reply, Retraction, ReviewDecision, Submission, Timings, UserRef,
    new_id, utcnow,
)
from stream.kafka_io import make_producer
from stream.learning.dataset import dataset_digest, read_dataset
from stream.local_kafka import find_free_port
from stream.models.registry import ModelRegistry
from stream.persona import Persona, build_messages
from stream.reasons import ModerationAction, ModerationSide, ModerationStage, RouteReason
from stream.settings import CommonSettings
from tests.conftest import PROJECT_ROOT
from tests.processes import registry_copy

pytestmark = pytest.mark.kafka

PERSONA_PATH = PROJECT_ROOT / "config" / "persona.json"
PERSONA = Persona.load(PERSONA_PATH)
COMMAND_S = 300
BASE_ID = "tiny-qwen3vl-dense"
EMOTIONS = ["happy", "excited", "shy", "surprised", "thinking", "sad", "neutral"]

# name: (sample seed, room, fan id) -- what happens to each answer is set up in `produce_story`.
PAIRS = {
    "liked": (0, "room-a", "aki"),
    "screen": (1, "room-b", "momo"),  # a comment-wall screenshot; the fan forgotten in room-a, not here
    "approved": (5, "room-a", "ren"),
    "reported": (2, "room-a", "sora"),
    "retracted": (6, "room-a", "yuki"),
    "blocked_item": (7, "room-a", "haru"),
    "blocked_reply": (10, "room-a", "kaito"),
    "rejected": (9, "room-a", "nana"),
    "forgotten": (11, "room-a", "momo"),
    "liked_once": (3, "room-a", "lumi"),  # one like, sent twice with the same feedback id
    "aged_out": (4, "room-a", "taro"),  # liked, but its item is no longer on the items topic
    "old": (8, "room-a", "mika"),  # liked, answered before --since
}
EXPORTED = ["liked", "screen", "approved"]
APPROVED_TEXT = "Thank you for the sweet picture, Ren! It made my day."


@dataclass
class Story:
    items: dict[str, Submission] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)

    def name_of(self, reply_id: str) -> str:
        return next(name for name, reply in self.replies.items() if reply.reply_id == reply_id)


def answer(name: str, submission: Submission, n: int, text: str | None = None, ago_s: float = 0) -> Reply:
    emotion = EMOTIONS[n % len(EMOTIONS)]
    at = utcnow() - timedelta(seconds=ago_s)
    return Reply(
        reply_id=new_id(), item_id=submission.item_id, room=submission.room, tier="fast",
        route_reason=RouteReason.SIMPLE, model_id=BASE_ID, persona_version=PERSONA.version,
        text=text or f"What a picture, {submission.user.display_name}! I love it ({name}).",
        cue=Cue(emotion=emotion, motion="bounce"),
        timings=Timings(item_created_at=submission.created_at, queue_ms=3, admission_ms=2, inference_ms=40,
                        replied_at=at),
        in_reply_to=submission.user,
    )


def feedback(kind: str, reply: Reply, feedback_id: str | None = None) -> Feedback:
    return Feedback(feedback_id=feedback_id or new_id(), kind=kind, reply_id=reply.reply_id, room=reply.room,
                    user=UserRef(id=f"fan-{new_id()[:6]}", display_name="A fan"), at=utcnow())


def moderation(submission: Submission, side: ModerationSide, reply: Reply | None = None) -> ModerationRecord:
    return ModerationRecord(record_id=new_id(), item_id=submission.item_id, room=submission.room,
                            user=submission.user, side=side, stage=ModerationStage.IMAGE_GUARD,
                            action=ModerationAction.BLOCK, categories=["Violent"],
                            reply_id=reply.reply_id if reply else None, at=utcnow())


def decision(reply: Reply, verdict: str, before: str, after: str | None) -> ReviewDecision:
    return ReviewDecision(decision_id=new_id(), reply_id=reply.reply_id, item_id=reply.item_id, room=reply.room,
                          operator="mod-1", decision=verdict, edited=after is not None and after != before,
                          before=before, after=after, held_at=utcnow(), at=utcnow())


async def produce_story(bootstrap: str, prefix: str) -> Story:
    settings = CommonSettings(kafka_bootstrap=bootstrap, topic_prefix=prefix, topic_partitions=2)
    await prepare_topics(settings, bootstrap)
    topics = settings.topics
    story = Story()
    for n, (name, (seed, room, fan)) in enumerate(PAIRS.items()):
        submission = sample_item(seed).to_submission(room, user_id=fan, display_name=fan.title())
        story.items[name] = submission
        text = APPROVED_TEXT if name == "approved" else None  # an approved reply goes out as approved
        story.replies[name] = answer(name, submission, n, text, ago_s=3 * 3600 if name == "old" else 0)
    r = story.replies
    records: list[tuple[str, str, bytes]] = [
        (topics.for_kind(s.kind), s.room, s.to_json()) for name, s in story.items.items() if name != "aged_out"
    ]
    records += [(topics.replies, reply.room, reply.to_json()) for reply in r.values()]
    likes = [feedback("like", r[name]) for name in PAIRS for _ in range(2) if name not in ("approved", "liked_once")]
    once = feedback("like", r["liked_once"])
    likes += [once, once, feedback("like", r["reported"]), feedback("report", r["reported"])]
    records += [(topics.feedback, f.room, f.to_json()) for f in likes]
    records += [
        (topics.review_decisions, "room-a",
         decision(r["approved"], "approve", "thx for the pic lol", APPROVED_TEXT).to_json()),
        (topics.review_decisions, "room-a", decision(r["rejected"], "reject", r["rejected"].text, None).to_json()),
        (topics.replies_retracted, "room-a", Retraction(
            retraction_id=new_id(), reply_id=r["retracted"].reply_id, room="room-a", item_id=r["retracted"].item_id,
            reason="operator", operator="mod-1", at=utcnow()).to_json()),
        (topics.moderation, "room-a", moderation(story.items["blocked_item"], ModerationSide.FAN).to_json()),
        (topics.moderation, "room-a",
         moderation(story.items["blocked_reply"], ModerationSide.REPLY, r["blocked_reply"]).to_json()),
        (topics.fans_forget, "room-a", ForgetRequest(
            request_id=new_id(), room="room-a", user_id="momo", requested_by="momo's bot", at=utcnow()).to_json()),
        # Records no contract reads: skipped and counted, never the end of the export.
        (topics.replies, "room-a", b'{"schema_version": 1, "reply_id": "half"}'),
        (topics.feedback, "room-a", b"{not json"),
        (topics.fan_images, "room-a", b"\x00\x01 not an item"),
    ]
    producer = make_producer(bootstrap, "test-dataset-export")
    await producer.start()
    try:
        for topic, room, value in records:
            await producer.send_and_wait(topic, value, key=room.encode())
    finally:
        await producer.stop()
    return story


async def run_cli(*args: str, cwd: Path = PROJECT_ROOT, **env: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream.cli", *args, cwd=cwd, env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), COMMAND_S)
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def export(bootstrap: str, prefix: str, out: Path, *args: str) -> str:
    code, said, err = await run_cli(
        "dataset", "export", "--since", "2h", "--min-likes", "2", "--out", str(out), *args,
        KAFKA_BOOTSTRAP=bootstrap, IDOLSTREAM_TOPIC_PREFIX=prefix, IDOLSTREAM_PERSONA_PATH=str(PERSONA_PATH),
    )
    assert code == 0, said + err
    return said


def exported(story: Story, out: Path) -> dict[str, tuple[dict, dict]]:
    """name -> (its record in data.jsonl, where it came from), in file order."""
    records = [orjson.loads(line) for line in (out / "data.jsonl").read_bytes().splitlines()]
    provenance = [orjson.loads(line) for line in (out / "pairs.jsonl").read_bytes().splitlines()]
    assert len(records) == len(provenance)
    return {story.name_of(p["reply_id"]): (record, p) for record, p in zip(records, provenance)}


async def test_an_export_holds_exactly_the_liked_and_approved_pairs_with_the_fans_pictures(
    kafka_bootstrap, topic_prefix, tmp_path
):
    story = await produce_story(kafka_bootstrap, topic_prefix)
    out = tmp_path / "liked"

    said = await export(kafka_bootstrap, topic_prefix, out)

    pairs = exported(story, out)
    assert sorted(pairs) == sorted(EXPORTED), said
    assert {story.items[name].kind for name in pairs} == {"fan_image", "danmaku_screenshot"}
    examples = {name: example for name, example in zip(pairs, read_dataset(out / "data.jsonl"))}
    for name, (record, provenance) in pairs.items():
        submission, reply = story.items[name], story.replies[name]
        text = APPROVED_TEXT if name == "approved" else reply.text
        assert record["conversations"][1] == {"from": "gpt", "value": f"[{reply.cue.emotion}] {text}"}
        # The human turn is the fast tier's own prompt for that item, word for word.
        assert examples[name].messages == [*build_messages(PERSONA, submission),
                                           {"role": "assistant", "content": f"[{reply.cue.emotion}] {text}"}]
        assert (out / record["image"]).read_bytes() == submission.image.raw_bytes()
        assert (provenance["approved"], provenance["likes"]) == ((True, 0) if name == "approved" else (False, 2))
    data = (out / "data.jsonl").read_text(encoding="utf-8")
    for name in set(PAIRS) - set(EXPORTED):
        assert story.replies[name].text not in data, name

    lines = said.splitlines()
    assert lines[0] == (f"wrote 3 pairs to {out / 'data.jsonl'} (2 liked, 1 approved in review) "
                        "out of 11 answers in scope")
    assert lines[1] == ("left out 8: forgotten 1, blocked 2, rejected 1, retracted 1, reported 1, not_liked 1, "
                        "image_gone 1")
    assert any(line.startswith("image_gone: 1 liked pair was not exported") for line in lines), said
    assert lines[-1] == (f"skipped 3 undecodable records ({topic_prefix}replies 1, {topic_prefix}feedback 1, "
                         f"{topic_prefix}fan.images 1)")

    room_b = tmp_path / "room-b"
    said = await export(kafka_bootstrap, topic_prefix, room_b, "--room", "room-b")
    assert list(exported(story, room_b)) == ["screen"], said
    assert said.splitlines()[1] == "left out 0"


@pytest.mark.timeout(600)
async def test_what_the_export_wrote_trains_in_models_finetune(kafka_bootstrap, topic_prefix, tiny_checkpoints,
                                                               tmp_path):
    await produce_story(kafka_bootstrap, topic_prefix)
    project = tmp_path / "project"
    registry_path = registry_copy(project)  # the project's config/models.json is never touched
    data = tmp_path / "liked" / "data.jsonl"
    await export(kafka_bootstrap, topic_prefix, data.parent)

    code, said, err = await run_cli(
        "models", "finetune", "--base", BASE_ID, "--data", str(data), "--out", str(project / "var" / "models" / "ft"),
        "--steps", "2", cwd=project, IDOLSTREAM_REGISTRY_PATH=str(registry_path),
    )

    assert code == 0, said + err
    [new] = [spec for spec in ModelRegistry.load(registry_path) if spec.lineage is not None]
    assert (new.lineage.base, new.lineage.data_digest, new.lineage.steps) == (BASE_ID, dataset_digest(data), 2)
    assert (project / "var" / "models" / "ft" / "config.json").is_file()


def test_a_bad_since_or_a_broker_out_of_reach_fails_clearly_and_writes_nothing(tmp_path):
    out = tmp_path / "liked"
    env = {**os.environ, "KAFKA_BOOTSTRAP": f"127.0.0.1:{find_free_port()}"}
    cli = [sys.executable, "-m", "stream.cli", "dataset", "export", "--out", str(out)]

    bad_since = subprocess.run([*cli, "--since", "last tuesday"], cwd=PROJECT_ROOT, env=env, capture_output=True,
                               text=True, timeout=COMMAND_S)
    assert bad_since.returncode == 2 and bad_since.stdout == ""
    assert "idolstream: --since 'last tuesday' is neither an ISO-8601 time" in bad_since.stderr

    no_broker = subprocess.run([*cli, "--since", "6h"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                               timeout=COMMAND_S)
    assert no_broker.returncode == 2 and no_broker.stdout == ""
    assert f"idolstream: cannot read the topics from the broker at {env['KAFKA_BOOTSTRAP']}" in no_broker.stderr
    assert not out.exists()
