"""A small client for chat bots: validate a submission, then produce it keyed by room.

    async with SubmissionClient(bootstrap) as client:
        await client.submit(build_submission(room="r1", user_id="u1", display_name="Aki",
                                             image_bytes=png, mime="image/png"))
"""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

from stream.contracts import ImagePayload, Submission, UserRef, new_id, utcnow
from stream.kafka_io import make_producer
from stream.topics import TopicNames

MIME_BY_SUFFIX = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp", ".gif": "image/gif"}


def build_submission(
    *,
    room: str,
    user_id: str,
    display_name: str,
    image_bytes: bytes,
    mime: str,
    kind: str = "fan_image",
    text: str | None = None,
    item_id: str | None = None,
    lang: str | None = None,
    created_at: datetime | None = None,
) -> Submission:
    """A validated Submission; raises pydantic's ValidationError naming the bad field."""
    return Submission(
        item_id=item_id or new_id(),
        kind=kind,
        room=room,
        user=UserRef(id=user_id, display_name=display_name),
        text=text,
        image=ImagePayload(mime=mime, data=base64.b64encode(image_bytes).decode("ascii")),
        created_at=created_at or utcnow(),
        lang=lang,
    )


def submission_from_file(path: Path, **fields) -> Submission:
    mime = MIME_BY_SUFFIX.get(path.suffix.lower())
    if mime is None:
        raise ValueError(f"{path}: unsupported image type (use {', '.join(sorted(MIME_BY_SUFFIX))})")
    return build_submission(image_bytes=path.read_bytes(), mime=mime, **fields)


class SubmissionClient:
    def __init__(self, bootstrap: str, topics: TopicNames | None = None, client_id: str = "idolstream-submit") -> None:
        self.topics = topics or TopicNames()
        self.producer: AIOKafkaProducer = make_producer(bootstrap, client_id)

    async def __aenter__(self) -> SubmissionClient:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.producer.stop()

    async def submit(self, submission: Submission) -> tuple[int, int]:
        """Produce and wait for the broker's ack; returns (partition, offset)."""
        return await self.submit_raw(submission.kind, submission.room, submission.to_json())

    async def submit_raw(self, kind: str, room: str, value: bytes) -> tuple[int, int]:
        """Produce bytes as they are (for tests and replays of dead letters)."""
        meta = await self.producer.send_and_wait(self.topics.for_kind(kind), value, key=room.encode())
        return meta.partition, meta.offset
