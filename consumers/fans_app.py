"""The fans app (`idolstream serve fans`): a faust-streaming worker holding what fans liked and who they are.

It reads the items, replies, shed items, moderation records, feedback and forget requests
(all keyed by room, all with the same partition count) and keeps five tables:

    reply-tallies    per reply: likes, reports, its model, persona version and tier, retracted or not
    model-tallies    per model id and persona version (one entry per partition, summed when read):
                     answers, likes, reports, like rate
    room-windows     per room, tumbling windows of `room_window_s`: items, answered, shed, likes, reports
    fan-profiles     per fan and room: first and last seen, items sent, replies received, what they
                     last sent and what she said (`stream.fans.profiles`), published to `fans.profiles`
    digest-windows   per room: the shed fans waiting for a thank-you, and fans moderation blocked

Tables live in memory and are rebuilt from their changelog topics at start (faust's
`memory://` store), not kept in RocksDB: the worker then needs no disk that must survive it
(a Deployment, no volume), and every table is bounded by its retention, so the replay is
short. Kafka delivers at least once and a killed worker reads its last uncommitted
records again: every update is idempotent (feedback ids, item ids and reply ids already
counted are remembered), so the counts come back intact.

A table entry is written from the partition of the record that changed it, so each
room's entries live on its partition; windows due and expiry are handled on that same
partition, driven by a tick record the app sends to each partition of its own ticks topic.

Faust's own web server is off (its default routes show every table to anyone); this app
serves `/metrics`, `/healthz`, `/readyz` and, for operators with a console token,
`/tables/models`, `/tables/replies/{reply_id}`, `/tables/fans/{room}/{user}` and
`/tables/rooms/{room}`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta

import faust
import mode
import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from stream.contracts import (
    MAX_MESSAGE_BYTES, ForgetRequest, ModerationRecord, Reply, Retraction, ShedItem, Source, dead_letter_for,
    decode_feedback, decode_forget_request, new_id, utcnow,
)
from stream.errors import InvalidEnvelope, ReasonCode
from stream.fans.digests import DigestWindow, digest_line, digest_reply
from stream.fans.feedback import (
    ModelTally, ReplyTally, model_key, should_retract, tally_answer, tally_early_feedback, tally_feedback,
    tally_model_feedback, tally_reply,
)
from stream.fans.profiles import FanProfile, SentItem, profile_key, record_item, record_reply
from stream.kafka_io import bootstrap_for, ensure_topics
from stream.metrics import FansMetrics
from stream.moderation.text_filter import TextFilter
from stream.persona import Persona
from stream.reasons import ModerationAction
from stream.settings import FansSettings
from stream.tokens import check_operator_token
from stream.topics import TopicSpec, topic_plan

log = logging.getLogger("idolstream.fans")
STREAM_BUFFER = 256
SWEEP_EVERY_S = 60.0  # expiry of profiles and reply tallies, per partition
BLOCKED_KEPT_S = 3600.0  # a fan moderation blocked is left out of digests this long
ROOM_COUNTS = ("items", "answered", "shed", "likes", "reports")
TABLES = ("reply-tallies", "model-tallies", "fan-profiles", "digest-windows")  # and the windowed room-windows


def _raw_topic(app: faust.App, name: str, **options) -> faust.TopicT:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw", **options)


def _source(event) -> Source:
    message = event.message
    key = message.key.decode(errors="replace") if isinstance(message.key, bytes) else None
    return Source(topic=message.topic, partition=message.partition, offset=message.offset, key=key)


class FansApp:
    """The faust app and its tables, agents and HTTP; `serve_fans` runs it in a faust Worker."""

    def __init__(self, settings: FansSettings, bootstrap: str, persona: Persona, text_filter: TextFilter,
                 metrics: FansMetrics) -> None:
        self.settings = settings
        self.persona = persona
        self.text_filter = text_filter
        self.metrics = metrics
        names = settings.topics
        partitions = settings.topic_partitions
        self.app = faust.App(
            f"{names.prefix}{settings.fans_app_id}",
            broker=f"kafka://{bootstrap}",
            store="memory://",
            datadir=str(settings.home / "faust"),  # faust's own working files, not in the working directory
            web_enabled=False,
            autodiscover=False,
            topic_partitions=partitions,
            topic_replication_factor=settings.topic_replicas,
            broker_commit_interval=settings.commit_interval_s,
            consumer_max_fetch_size=MAX_MESSAGE_BYTES + 1024,
            # Items carry their pictures: buffer few records per stream, not faust's 4096 (memory stays bounded).
            stream_buffer_maxsize=STREAM_BUFFER,
            table_standby_replicas=0,
        )
        app = self.app
        self.items_topic = _raw_topic(app, names.fan_images)
        self.screens_topic = _raw_topic(app, names.danmaku_screens)
        self.replies_topic = _raw_topic(app, names.replies)
        self.shed_topic = _raw_topic(app, names.shed)
        self.feedback_topic = _raw_topic(app, names.feedback)
        self.moderation_topic = _raw_topic(app, names.moderation)
        self.forget_topic = _raw_topic(app, names.fans_forget)
        self.profiles_topic = _raw_topic(app, names.fans_profiles)
        self.retracted_topic = _raw_topic(app, names.replies_retracted)
        self.dlq_topic = _raw_topic(app, names.dlq)
        self.ticks_topic = _raw_topic(app, f"{app.conf.id}-ticks", partitions=partitions, internal=True,
                                      retention=timedelta(hours=1))

        self.replies_t = app.Table("reply-tallies", default=None, partitions=partitions)
        self.models_t = app.Table("model-tallies", default=None, partitions=partitions)
        self.fans_t = app.Table("fan-profiles", default=None, partitions=partitions)
        self.digests_t = app.Table("digest-windows", default=None, partitions=partitions)
        self.rooms_t = app.Table("room-windows", default=dict, partitions=partitions).tumbling(
            timedelta(seconds=settings.room_window_s), expires=timedelta(seconds=settings.room_windows_kept_s),
        ).relative_to_stream()

        for name, topic, handler in [
            ("items", self.items_topic, self._on_items), ("screens", self.screens_topic, self._on_items),
            ("replies", self.replies_topic, self._on_replies), ("shed", self.shed_topic, self._on_shed),
            ("feedback", self.feedback_topic, self._on_feedback),
            ("moderation", self.moderation_topic, self._on_moderation),
            ("forget", self.forget_topic, self._on_forget), ("ticks", self.ticks_topic, self._on_ticks),
        ]:
            app.agent(topic, name=name)(self._agent(name, handler))
        app.timer(settings.tick_s)(self._send_ticks)
        self._swept: dict[int, float] = {}
        self.web = FansWeb(self)
        app.add_dependency(self.web)

    # -- reading ------------------------------------------------------------------------

    def _read(self, event, contract):
        """The record as `contract`, or None when it is not one (skipped and counted: the tiers dead-letter items)."""
        try:
            return contract.model_validate_json(event.value or b"")
        except ValidationError as error:
            self._unreadable(event, str(error))
            return None

    def _unreadable(self, event, why: str) -> None:
        self.metrics.unreadable.labels(event.message.topic).inc()
        log.info("skipped %s[%d]@%d: %s", event.message.topic, event.message.partition, event.message.offset,
                 why[:200])

    def _agent(self, name: str, handler):
        """A faust agent running `handler` on each record; a failure skips that record, never the agent."""
        async def agent(stream) -> None:
            async for event in stream.events():
                try:
                    await handler(event)
                except Exception:
                    self._failed(event, name)

        agent.__name__ = agent.__qualname__ = name
        self.metrics.errors.labels(name)  # at 0 from the start, so a rate per agent exists
        return agent

    def _failed(self, event, agent: str) -> None:
        """A record this app failed on (a bug, not bad input): logged and counted, and the app goes on."""
        self.metrics.errors.labels(agent).inc()
        log.exception("the %s agent failed on %s[%d]@%d; skipped", agent, event.message.topic,
                      event.message.partition, event.message.offset)

    def _room_count(self, room: str, name: str, n: int = 1) -> None:
        counts = dict(self.rooms_t[room].current())
        counts[name] = counts.get(name, 0) + n
        self.rooms_t[room] = counts

    async def _on_items(self, event) -> None:
        item = self._read(event, SentItem)
        if item is None:
            return
        key = profile_key(item.room, item.user.id)
        stored = self.fans_t.get(key)
        profile, new = record_item(FanProfile.from_json(stored["profile"]) if stored else None, item)
        if new:
            await self._save_profile(key, profile, event.message.partition)
            self._room_count(item.room, "items")

    async def _save_profile(self, key: str, profile: FanProfile, partition: int) -> None:
        data = profile.to_json()
        self.fans_t[key] = {"profile": data, "partition": partition}
        await self.profiles_topic.send(key=key.encode(), value=orjson.dumps(data))
        self.metrics.profiles.set(len(self.fans_t))

    async def _on_replies(self, event) -> None:
        reply = self._read(event, Reply)
        if reply is None:
            return
        if reply.role != "answer":
            return
        before = self.replies_t.get(reply.reply_id)
        tally, first = tally_reply(ReplyTally.from_json(before) if before else None, reply)
        if not first:
            return
        partition = event.message.partition
        model = self._model(tally, partition)
        model = tally_answer(model, reply)
        if tally.likes or tally.reports:  # feedback on it was read before the reply itself
            model = tally_early_feedback(model, tally)
        self._set_model(tally, partition, model)
        self.metrics.answers.labels(reply.tier, reply.model_id, reply.persona_version or "-").inc()
        self._room_count(reply.room, "answered")
        key = profile_key(reply.room, reply.in_reply_to.id)
        stored = self.fans_t.get(key)
        if stored:
            profile = record_reply(FanProfile.from_json(stored["profile"]), reply)
            await self._save_profile(key, profile, partition)
        await self._save_tally(tally, partition)

    def _model(self, tally: ReplyTally, partition: int) -> ModelTally | None:
        stored = self.models_t.get(f"{model_key(tally.model_id, tally.persona_version)} #{partition}")
        return ModelTally.from_json(stored) if stored else None

    def _set_model(self, tally: ReplyTally, partition: int, model: ModelTally) -> None:
        self.models_t[f"{model_key(tally.model_id, tally.persona_version)} #{partition}"] = model.to_json()

    async def _save_tally(self, tally: ReplyTally, partition: int) -> None:
        if should_retract(tally, self.settings.threshold_for(tally.room)):
            retraction = Retraction(retraction_id=new_id(), reply_id=tally.reply_id, room=tally.room,
                                    item_id=tally.item_id, reason="reports", reports=tally.reports, at=utcnow())
            await self.retracted_topic.send(key=tally.room.encode(), value=retraction.to_json())
            self.metrics.retractions.labels("reports").inc()
            log.info("retracted reply %s in %s after %d reports", tally.reply_id, tally.room, tally.reports)
            tally = ReplyTally(**{**tally.__dict__, "retracted": True})
        self.replies_t[tally.reply_id] = {**tally.to_json(), "partition": partition, "seen_at": time.time()}

    async def _on_feedback(self, event) -> None:
        raw = event.value or b""
        try:
            feedback = decode_feedback(raw)
            if event.message.key != feedback.room.encode():
                raise InvalidEnvelope(ReasonCode.WRONG_KEY,
                                      f"feedback on room {feedback.room} must be keyed by the room, "
                                      f"not {event.message.key!r}")
        except InvalidEnvelope as error:
            letter = dead_letter_for(raw, error.reason, error.detail, _source(event), max_original_bytes=64 * 1024)
            await self.dlq_topic.send(key=event.message.key, value=letter.to_json())
            self.metrics.dead_letters.labels(error.reason).inc()
            log.info("feedback at %s[%d]@%d dead-lettered: %s", event.message.topic, event.message.partition,
                     event.message.offset, error.detail[:200])
            return
        before = self.replies_t.get(feedback.reply_id)
        tally, counted = tally_feedback(ReplyTally.from_json(before) if before else None, feedback)
        if not counted:
            return
        partition = event.message.partition
        if tally.seen_reply:
            self._set_model(tally, partition, tally_model_feedback(self._model(tally, partition), tally,
                                                                   feedback.kind))
        self.metrics.feedback.labels(feedback.kind, tally.tier or "unknown", tally.model_id or "unknown",
                                     tally.persona_version or "-").inc()
        self._room_count(feedback.room, "likes" if feedback.kind == "like" else "reports")
        await self._save_tally(tally, partition)

    async def _on_shed(self, event) -> None:
        shed = self._read(event, ShedItem)
        if shed is None:
            return
        entry = self._digest_entry(shed.room, event.message.partition)
        window = DigestWindow.from_json(entry["window"]) if entry["window"] else DigestWindow(
            shed.room, opened_ms=int(time.time() * 1000))
        if not window.first_time(shed.item_id):
            return  # read again after a restart
        self._room_count(shed.room, "shed")
        if shed.user.id not in entry["blocked"]:
            window.add(shed)
        entry["window"] = window.to_json()
        self.digests_t[shed.room] = entry

    def _digest_entry(self, room: str, partition: int) -> dict:
        return dict(self.digests_t.get(room) or {"room": room, "partition": partition, "window": None, "blocked": {}})

    async def _on_moderation(self, event) -> None:
        record = self._read(event, ModerationRecord)
        if record is None:
            return
        if record.side != "fan" or record.action != ModerationAction.BLOCK:
            return
        entry = self._digest_entry(record.room, event.message.partition)
        entry["blocked"] = {**entry["blocked"], record.user.id: time.time()}
        if entry["window"]:
            window = DigestWindow.from_json(entry["window"])
            window.drop(record.user.id)
            entry["window"] = window.to_json()
        self.digests_t[record.room] = entry

    async def _on_forget(self, event) -> None:
        try:
            request: ForgetRequest = decode_forget_request(event.value or b"")
        except InvalidEnvelope as error:
            self._unreadable(event, error.detail)
            return
        key = profile_key(request.room, request.user_id)
        if key in self.fans_t:
            del self.fans_t[key]
            self.metrics.forgotten.labels("request").inc()
        await self.profiles_topic.send(key=key.encode(), value=None)  # the tiers forget them too
        entry = self.digests_t.get(request.room)
        if entry and entry["window"]:
            window = DigestWindow.from_json(entry["window"])
            window.drop(request.user_id)
            self.digests_t[request.room] = {**entry, "window": window.to_json()}
        self.metrics.profiles.set(len(self.fans_t))
        log.info("forgot %s in %s (asked by %s)", request.user_id, request.room, request.requested_by)

    # -- time: windows due and expiry, on each partition ---------------------------------

    async def _send_ticks(self) -> None:
        for partition in range(self.settings.topic_partitions):
            await self.ticks_topic.send(value=b"", partition=partition)

    async def _on_ticks(self, event) -> None:
        partition = event.message.partition
        now = time.time()
        await self._close_digests(partition, now)
        if now - self._swept.get(partition, 0.0) >= SWEEP_EVERY_S:
            self._swept[partition] = now
            await self._expire(partition, now)

    async def _close_digests(self, partition: int, now: float) -> None:
        window_ms = self.settings.digest_window_s * 1000
        for room, entry in list(self.digests_t.items()):
            if entry["partition"] != partition:
                continue
            window = DigestWindow.from_json(entry["window"]) if entry["window"] else None
            blocked = {user: at for user, at in entry["blocked"].items() if now - at < BLOCKED_KEPT_S}
            if window is not None and window.opened_ms + window_ms <= now * 1000:
                await self._publish_digest(window, blocked)
                window = None
            if window is None and not blocked:
                del self.digests_t[room]
            elif window is None or len(blocked) != len(entry["blocked"]):
                self.digests_t[room] = {**entry, "window": window.to_json() if window else None, "blocked": blocked}

    async def _publish_digest(self, window: DigestWindow, blocked: dict) -> None:
        language = self.persona.default_language
        line = digest_line(window, language, self.settings.digest_max_names, blocked,
                           variant=window.opened_ms // 1000)
        if line is None:
            self.metrics.digests.labels("nobody").inc()
            return
        if self.text_filter.check(line).action != ModerationAction.ALLOW:
            self.metrics.digests.labels("filtered").inc()
            log.info("digest for %s stopped by the word filter", window.room)
            return
        reply = digest_reply(window, line, self.persona.motion_for("happy"), self.persona.version, utcnow())
        await self.replies_topic.send(key=window.room.encode(), value=reply.to_json())
        self.metrics.digests.labels("sent").inc()
        self.metrics.digest_names.inc(sum(1 for user in window.names if user not in blocked))
        log.info("digest for %s: %s", window.room, line)

    async def _expire(self, partition: int, now: float) -> None:
        oldest_fan = datetime.now(UTC) - timedelta(days=self.settings.fan_retention_days)
        for key, stored in list(self.fans_t.items()):
            if stored["partition"] == partition and datetime.fromisoformat(stored["profile"]["last_seen"]) < oldest_fan:
                del self.fans_t[key]
                await self.profiles_topic.send(key=key.encode(), value=None)
                self.metrics.forgotten.labels("retention").inc()
        oldest_reply = now - self.settings.reply_retention_days * 86400
        for reply_id, stored in list(self.replies_t.items()):
            if stored["partition"] == partition and stored["seen_at"] < oldest_reply:
                del self.replies_t[reply_id]
        self.metrics.profiles.set(len(self.fans_t))

    # -- views --------------------------------------------------------------------------

    def model_tallies(self) -> list[dict]:
        merged: dict[str, ModelTally] = {}
        for key, stored in list(self.models_t.items()):
            tally = ModelTally.from_json(stored)
            name = key.rsplit(" #", 1)[0]
            merged[name] = merged[name] + tally if name in merged else tally
        return [t.to_json() for t in sorted(merged.values(), key=lambda t: (t.model_id, t.persona_version or ""))]

    def room_windows(self, room: str) -> list[dict]:
        windows = []
        for key, counts in list(self.rooms_t.table.data.items()):
            name, (start, end) = key
            if name == room:
                windows.append({"start": datetime.fromtimestamp(start, UTC).isoformat(),
                                "end": datetime.fromtimestamp(end, UTC).isoformat(),
                                **{c: counts.get(c, 0) for c in ROOM_COUNTS}})
        return sorted(windows, key=lambda w: w["start"])

    def ready(self) -> bool:
        recovery = self.app.tables.recovery
        return recovery.completed.is_set() and not self.app.rebalancing

    async def update_lag(self) -> None:
        consumer = self.app.consumer
        lag: dict[str, int] = {}
        for tp in consumer.assignment():
            position = await consumer.position(tp)
            if position is not None:
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, consumer.highwater(tp) - position)
        for topic, value in lag.items():
            self.metrics.lag.labels(topic).set(value)


class FansWeb(mode.Service):
    """`/metrics`, `/healthz`, `/readyz` for everyone; `/tables/...` for operators with a console token."""

    def __init__(self, fans: FansApp, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fans = fans
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/tables/models", self._models)
        app.router.add_get("/tables/replies/{reply_id}", self._reply)
        app.router.add_get("/tables/fans/{room}/{user}", self._fan)
        app.router.add_get("/tables/rooms/{room}", self._room)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        settings = self.fans.settings
        site = web.TCPSite(self._runner, settings.fans_host, settings.fans_port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        log.info("fans app listening on http://%s:%d", settings.fans_host, self.port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        self.fans.metrics.ready.set(1 if self.fans.ready() else 0)
        try:
            await asyncio.wait_for(self.fans.update_lag(), 5)
        except Exception as error:  # a scrape still answers while the consumer rebalances
            log.debug("lag not measured: %s", error)
        return web.Response(body=generate_latest(self.fans.metrics.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def _readyz(self, request: web.Request) -> web.Response:
        ready = self.fans.ready()
        return web.json_response({"ready": ready}, status=200 if ready else 503)

    def _refused(self, request: web.Request) -> web.Response | None:
        settings = self.fans.settings
        if settings.console_secret is None:
            return web.json_response({"error": "views_off", "detail": "set IDOLSTREAM_CONSOLE_SECRET to open the "
                                      "table views to operators"}, status=503)
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else None
        if not token:
            return web.json_response({"error": "missing_token", "detail": "send Authorization: Bearer <operator "
                                      "token> (`idolstream operator-token`)"}, status=401)
        operator, why = check_operator_token(settings.secret(), token)
        if operator is None:
            return web.json_response({"error": str(why), "detail": "not a valid operator token"}, status=401)
        return None

    async def _models(self, request: web.Request) -> web.Response:
        return self._refused(request) or web.json_response({"models": self.fans.model_tallies()})

    async def _reply(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        stored = self.fans.replies_t.get(request.match_info["reply_id"])
        if stored is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.json_response({k: v for k, v in stored.items() if k not in ("partition", "recent_feedback")})

    async def _fan(self, request: web.Request) -> web.Response:
        if refused := self._refused(request):
            return refused
        stored = self.fans.fans_t.get(profile_key(request.match_info["room"], request.match_info["user"]))
        if stored is None:
            return web.json_response({"error": "not_found"}, status=404)
        profile = {k: v for k, v in stored["profile"].items() if k != "recent_items"}
        return web.json_response(profile)

    async def _room(self, request: web.Request) -> web.Response:
        return self._refused(request) or web.json_response(
            {"room": request.match_info["room"], "windows": self.fans.room_windows(request.match_info["room"])})


def app_topics(settings: FansSettings) -> list[TopicSpec]:
    """The app's own topics: its tables' changelogs and its ticks, with the source topics' partition count.

    They are created before the worker starts, so that they have leaders when it joins its
    group: faust checks a changelog's partition count against the group's metadata, and a
    topic created a moment before the join can show none and stop the table's updates.
    """
    app_id = f"{settings.topics.prefix}{settings.fans_app_id}"
    compact = {"cleanup.policy": "compact"}
    windows = {"cleanup.policy": "compact,delete", "retention.ms": str(int(settings.room_windows_kept_s * 1000))}
    return [
        *(TopicSpec(f"{app_id}-{table}-changelog", settings.topic_partitions, compact) for table in TABLES),
        TopicSpec(f"{app_id}-room-windows-changelog", settings.topic_partitions, windows),
        TopicSpec(f"{app_id}-ticks", settings.topic_partitions, {"retention.ms": str(3_600_000)}),
    ]


async def prepare(settings: FansSettings) -> str:
    """The broker's address, with the topics the app reads and its own topics created."""
    bootstrap = bootstrap_for(settings, start_local=False)
    await ensure_topics(bootstrap, [*topic_plan(settings.topics, settings.topic_partitions), *app_topics(settings)],
                        settings.topic_replicas)
    return bootstrap


def serve_fans(settings: FansSettings) -> None:
    """Run the fans app in a faust Worker until SIGTERM or SIGINT (a clean stop commits what was processed)."""
    persona = Persona.load(settings.persona_path)
    text_filter = TextFilter.from_file(settings.moderation_words_path)
    bootstrap = asyncio.run(prepare(settings))
    fans = FansApp(settings, bootstrap, persona, text_filter, FansMetrics())
    worker = faust.Worker(fans.app, loglevel="INFO", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()
