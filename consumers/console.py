"""The operator console: the review queue, a playground, and the tiers' models. A small aiohttp service.

Its page (``GET /``, ``consumers/static/console.html``; nothing fetched from elsewhere) is
public and does nothing without an operator token (``idolstream operator-token --operator
NAME``, signed with ``IDOLSTREAM_CONSOLE_SECRET``; a room token is refused). The API, all
behind ``Authorization: Bearer <operator token>``:

- ``GET /api/queue``: held replies waiting, oldest first (`stream.moderation.review`);
- ``POST /api/review/{reply_id}`` ``{"decision": "approve"|"reject", "text": ...}``: an
  approved reply (edited when ``text`` differs) goes to `replies`, then the decision (who,
  when, before and after) to `review.decisions`; 404 unknown, 409 decided already;
- ``POST /api/playground`` (multipart: ``image``, ``text``, ``name``, ``model_id``): what
  a fan's item would get, stage by stage (word filter, guards, the model, the persona
  checks, the reply's word filter), without Kafka;
- ``GET /api/models``, ``POST /api/switch`` ``{"tier", "model_id"}``: the tiers' loaded
  models and a switch, through their admin APIs (``IDOLSTREAM_TIER_ADMINS``);
- ``GET /api/replies``: the last replies that went out, newest first, and which were
  retracted (`RecentReplies`); ``POST /api/retract/{reply_id}`` ``{"room": ..., "item_id":
  ...}``: a Retraction (reason "operator", the token's operator) to `replies.retracted`,
  keyed by room; the gateways take the bubble down and never replay it. 409 when the
  console knows it retracted already, 400 when it knows the reply went to another room.

``/healthz``, ``/readyz`` (once the queue has been read back) and ``/metrics`` are open.
The queue is rebuilt from `replies.held` and `review.decisions` read from their start, so
any number of consoles, restarted at any time, agree; the recent replies are read from
`replies` and `replies.retracted` from `RECENT_WINDOW_S` ago on.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from importlib import resources

import httpx
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from PIL import Image
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from consumers.moderation import FanModeration
from stream.contracts import HeldReply, Reply, Retraction, ReviewDecision, Timings, new_id, utcnow
from stream.errors import RejectedItem
from stream.models.errors import ModelLoadError
from stream.images import admit_image
from stream.kafka_io import UndecodableRange, partitions_of, read_skipping_undecodable
from stream.metrics import ConsoleMetrics
from stream.models.registry import ModelRegistry
from stream.models.runtime import GenerationRequest, ModelRunner
from stream.moderation.gate import ReplyScreen
from stream.moderation.review import ReviewError, ReviewQueue
from stream.persona import Persona, build_messages, check_reply, fan_language, read_reply
from stream.reasons import RouteReason
from stream.replies import build_reply
from stream.settings import ConsoleSettings
from stream.tokens import check_operator_token

log = logging.getLogger("idolstream.console")
MAX_UPLOAD_BYTES = 8 * 1024 * 1024
OPERATOR = web.RequestKey("operator", str)  # who is asking, from their token
PIL_MIMES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "GIF": "image/gif"}
RECENT_REPLIES = 100  # replies listed for retraction, newest first
RECENT_WINDOW_S = 15 * 60  # how far back `replies` and `replies.retracted` are read at start


def console_page() -> bytes:
    return resources.files("consumers").joinpath("static/console.html").read_bytes()


def _json(body, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class Playground:
    """One model loaded at a time, by registry id, answering one uploaded item at a time."""

    def __init__(self, loader, default_id: str) -> None:
        self.loader = loader
        self.default_id = default_id
        self.runner: ModelRunner | None = None
        self.lock = asyncio.Lock()

    async def runner_for(self, model_id: str) -> ModelRunner:
        if self.runner is None or self.runner.spec.id != model_id:
            if self.runner is not None:
                await asyncio.to_thread(self.runner.close)
                self.runner = None
            self.runner = await asyncio.to_thread(self.loader, model_id)
        return self.runner

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()
            self.runner = None


class RecentReplies:
    """The last `capacity` replies that went out (their text, not their thumbnails), newest
    first, and the retraction of each that was taken back.

    Replies and retractions come on two topics and may race, so a retraction of a reply
    not listed is kept too (as many as replies), in case its reply is read after it.
    """

    def __init__(self, capacity: int = RECENT_REPLIES) -> None:
        self.capacity = capacity
        self._replies: OrderedDict[str, dict] = OrderedDict()  # oldest first
        self._retractions: OrderedDict[str, Retraction] = OrderedDict()

    def said(self, reply: Reply) -> None:
        self._replies[reply.reply_id] = {
            "reply_id": reply.reply_id, "item_id": reply.item_id, "room": reply.room, "role": reply.role,
            "tier": reply.tier, "fan": reply.in_reply_to.display_name, "text": reply.text,
            "at": reply.timings.replied_at.isoformat(),
        }
        self._replies.move_to_end(reply.reply_id)
        while len(self._replies) > self.capacity:
            self._replies.popitem(last=False)

    def retracted(self, retraction: Retraction) -> None:
        self._retractions.setdefault(retraction.reply_id, retraction)  # the first one took it down
        while len(self._retractions) > self.capacity:
            self._retractions.popitem(last=False)

    def get(self, reply_id: str) -> dict | None:
        return self._replies.get(reply_id)

    def retraction(self, reply_id: str) -> Retraction | None:
        return self._retractions.get(reply_id)

    def listing(self) -> list[dict]:
        """Newest first, each with `retracted`: None, or reason, operator and when."""
        out = []
        for reply in reversed(self._replies.values()):
            taken = self._retractions.get(reply["reply_id"])
            out.append({**reply, "retracted": None if taken is None else {
                "reason": taken.reason, "operator": taken.operator, "at": taken.at.isoformat()}})
        return out


class Console:
    def __init__(self, settings: ConsoleSettings, bootstrap: str, producer: AIOKafkaProducer,
                 reader: AIOKafkaConsumer, persona: Persona, screen: ReplyScreen, moderation: FanModeration,
                 playground: Playground, metrics: ConsoleMetrics) -> None:
        self.settings = settings
        self.bootstrap = bootstrap
        self.secret = settings.secret()
        self.producer = producer
        self.reader = reader
        self.persona = persona
        self.screen = screen
        self.moderation = moderation
        self.playground = playground
        self.metrics = metrics
        self.queue = ReviewQueue(settings.review_capacity)
        self.recent = RecentReplies()
        self.ready = asyncio.Event()
        self.reading: asyncio.Task | None = None  # read_queue, once started

    # -- Kafka: the queue -----------------------------------------------------------------

    async def read_queue(self) -> None:
        """Read `replies.held` and `review.decisions` from their start, `replies` and
        `replies.retracted` from `RECENT_WINDOW_S` ago, then follow them all."""
        topics = self.settings.topics
        partitions = [
            TopicPartition(topic, p)
            for topic in (topics.replies_held, topics.review_decisions)
            for p in await partitions_of(self.bootstrap, topic)
        ]
        recent = [
            TopicPartition(topic, p)
            for topic in (topics.replies, topics.replies_retracted)
            for p in await partitions_of(self.bootstrap, topic)
        ]
        self.reader.assign(partitions + recent)
        await self.reader.seek_to_beginning(*partitions)
        since_ms = int((time.time() - RECENT_WINDOW_S) * 1000)
        # The ends first: a partition with nothing since `since_ms` is read from its end as it
        # was then, so a reply produced meanwhile is not skipped.
        recent_ends = await self.reader.end_offsets(recent)
        starts = await self.reader.offsets_for_times({tp: since_ms for tp in recent})
        for tp in recent:
            found = starts.get(tp)
            self.reader.seek(tp, recent_ends[tp] if found is None else found.offset)
        ends = await self.reader.end_offsets(partitions)  # ready once the queue is read back
        while True:
            batches = await read_skipping_undecodable(self.reader, timeout_ms=200, max_records=500)
            for records in batches.values():
                for record in records:
                    if isinstance(record, UndecodableRange):
                        log.warning("skipped undecodable records at %s: %s", record, record.error)
                        continue
                    self._apply(record.topic, record.value)
            if not self.ready.is_set() and await self._caught_up(ends):
                self.ready.set()
                log.info("review queue read back: %d waiting", len(self.queue))

    async def _caught_up(self, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await self.reader.position(tp) < end:
                return False
        return True

    def _apply(self, topic: str, raw: bytes | None) -> None:
        topics = self.settings.topics
        try:
            if topic == topics.replies_held:
                self.queue.held(HeldReply.model_validate_json(raw or b""))
            elif topic == topics.review_decisions:
                self.queue.settled(ReviewDecision.model_validate_json(raw or b""))
            elif topic == topics.replies:
                self.recent.said(Reply.model_validate_json(raw or b""))
            else:
                self.recent.retracted(Retraction.model_validate_json(raw or b""))
        except ValidationError as exc:
            log.warning("not a %s record, skipped: %s", topic, str(exc)[:200])

    def _gauges(self) -> None:
        """The queue's gauges, set when they are scraped (the queue itself is the state)."""
        self.metrics.review_pending.set(len(self.queue))
        self.metrics.review_oldest.set(self.queue.oldest_age_s(utcnow()))
        self.metrics.review_unlisted.set(self.queue.unlisted)

    # -- HTTP -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        @web.middleware
        async def operators_only(request: web.Request, handler):
            if not request.path.startswith("/api/"):
                return await handler(request)
            header = request.headers.get("Authorization", "")
            token = header[7:].strip() if header.lower().startswith("bearer ") else None
            operator, refusal = check_operator_token(self.secret, token)
            if refusal is not None:
                self.metrics.refused.labels(refusal.value).inc()
                return _json({"error": refusal.value}, 401)
            request[OPERATOR] = operator
            return await handler(request)

        app = web.Application(middlewares=[operators_only], client_max_size=MAX_UPLOAD_BYTES)
        app.add_routes([
            web.get("/", self.page),
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/metrics", self.metrics_page),
            web.get("/api/whoami", self.whoami),
            web.get("/api/queue", self.list_queue),
            web.post("/api/review/{reply_id}", self.review),
            web.post("/api/playground", self.try_item),
            web.get("/api/models", self.models),
            web.post("/api/switch", self.switch),
            web.get("/api/replies", self.list_replies),
            web.post("/api/retract/{reply_id}", self.retract),
        ])
        return app

    async def healthz(self, _: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def whoami(self, request: web.Request) -> web.Response:
        return _json({"operator": request[OPERATOR]})

    async def page(self, _: web.Request) -> web.Response:
        return web.Response(body=console_page(), content_type="text/html", charset="utf-8")

    async def readyz(self, _: web.Request) -> web.Response:
        if self.reading is not None and self.reading.done():
            return _json({"ready": False, "why": "the review queue reader stopped"}, 503)
        if not self.ready.is_set():
            return _json({"ready": False, "why": "reading the review queue back"}, 503)
        return _json({"ready": True, "waiting": len(self.queue)})

    async def metrics_page(self, _: web.Request) -> web.Response:
        self._gauges()
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def list_queue(self, _: web.Request) -> web.Response:
        now = utcnow()
        items = [{
            "reply_id": held.reply.reply_id, "item_id": held.reply.item_id, "room": held.reply.room,
            "fan": held.reply.in_reply_to.display_name, "fan_text": held.fan_text, "picture": held.picture,
            "drawn": held.reply.picture,  # the picture she drew, held with her words
            "text": held.reply.text, "role": held.reply.role, "tier": held.reply.tier,
            "why": [{"side": r.side, "stage": r.stage, "action": r.action, "categories": r.categories,
                     "detail": r.detail} for r in held.why],
            "waiting_s": round((now - held.held_at).total_seconds(), 1),
        } for held in self.queue.pending()]
        return _json({"waiting": items, "unlisted": self.queue.unlisted})

    async def review(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            decision, text = body["decision"], body.get("text")
            if not isinstance(decision, str) or (text is not None and not isinstance(text, str)):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _json({"error": "bad_request", "detail": 'send {"decision": "approve"|"reject", "text": ...}'}, 400)
        try:
            decided = self.queue.decide(request.match_info["reply_id"], request[OPERATOR], decision, utcnow(), text)
        except ReviewError as exc:
            return _json({"error": "refused", "detail": exc.detail}, exc.status)
        record = decided.decision
        room = record.room.encode()
        # The reply first, then the decision: a crash in between leaves it pending, and an
        # operator's second approval is dropped by the gateway (one answer per item id).
        if decided.reply is not None:
            await (await self.producer.send(self.settings.topics.replies, decided.reply.to_json(), key=room))
        await (await self.producer.send(self.settings.topics.review_decisions, record.to_json(), key=room))
        self.metrics.review_decisions.labels(record.decision).inc()
        log.info("%s %sd reply %s to %s%s", record.operator, record.decision, record.reply_id, record.item_id,
                 " (edited)" if record.edited else "")
        return _json(orjson.loads(record.to_json()))

    async def list_replies(self, _: web.Request) -> web.Response:
        return _json({"replies": self.recent.listing()})

    async def retract(self, request: web.Request) -> web.Response:
        reply_id = request.match_info["reply_id"]
        try:
            body = orjson.loads(await request.read())
            room, item_id = body["room"], body.get("item_id")
            if not isinstance(room, str) or (item_id is not None and not isinstance(item_id, str)):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _json({"error": "bad_request", "detail": 'send {"room": ..., "item_id": ... (optional)}'}, 400)
        known = self.recent.get(reply_id)
        if known is not None and known["room"] != room:
            return _json({"error": "wrong_room", "detail": f"reply {reply_id} went to room {known['room']}"}, 400)
        if (taken := self.recent.retraction(reply_id)) is not None:
            who = taken.operator if taken.reason == "operator" else f"{taken.reports} reports"
            return _json({"error": "retracted_already", "detail": f"retracted already ({who})"}, 409)
        try:
            retraction = Retraction(
                retraction_id=new_id(), reply_id=reply_id, room=room,
                item_id=item_id or (known["item_id"] if known else None),
                reason="operator", operator=request[OPERATOR], at=utcnow(),
            )
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
            return _json({"error": "bad_request", "detail": detail}, 400)
        try:
            await (await self.producer.send(self.settings.topics.replies_retracted, retraction.to_json(),
                                            key=room.encode()))
        except KafkaError as exc:
            return _json({"error": "kafka_unavailable", "detail": f"not retracted: {exc}"[:300]}, 503)
        self.recent.retracted(retraction)
        self.metrics.retractions.inc()
        log.info("%s retracted reply %s in room %s", retraction.operator, reply_id, room)
        return _json(orjson.loads(retraction.to_json()))

    async def try_item(self, request: web.Request) -> web.Response:
        form = await request.post()
        upload = form.get("image")
        if not isinstance(upload, web.FileField):
            return _json({"error": "bad_request", "detail": "send a picture as the form field 'image'"}, 400)
        text = str(form.get("text") or "").strip() or None
        name = str(form.get("name") or "").strip() or "Playground"
        model_id = str(form.get("model_id") or "") or self.playground.default_id
        data = upload.file.read()
        try:
            spec = ModelRegistry.load(self.settings.registry_path).get(model_id)
        except (ModelLoadError, KeyError) as exc:
            return _json({"error": "unknown_model", "detail": str(exc)}, 404)
        if spec.tier not in ("fast", "deep"):
            return _json({"error": "not_a_reply_model", "detail": f"{model_id} is a {spec.tier} model"}, 400)
        try:
            kind = Image.open(io.BytesIO(data)).format
            admitted = admit_image(data, self.settings.image_limits(spec.max_pixels))
        except RejectedItem as exc:
            return _json({"error": exc.reason.value, "detail": exc.detail}, 400)
        except Exception as exc:  # noqa: BLE001 - Pillow's errors for a file that is no picture
            return _json({"error": "invalid_image", "detail": str(exc)[:300]}, 400)
        from producers.client import build_submission

        submission = build_submission(room="playground", user_id="operator", display_name=name, image_bytes=data,
                                      mime=PIL_MIMES.get(kind or "", "image/png"), text=text)
        stages = []
        judged = self.moderation.words(submission)
        stages += [_stage(record) for record in judged.records] or [_allowed("fan", "word_filter")]
        guarded = (await self.moderation.guards([(submission, admitted.image)]))[0]
        stages += [_stage(record) for record in guarded.judgement.records]
        if judged.action == "block" or guarded.judgement.action == "block":
            return _json({"model_id": model_id, "stages": stages, "reply": None, "blocked": True})
        async with self.playground.lock:
            try:
                runner = await self.playground.runner_for(model_id)
            except ModelLoadError as exc:
                return _json({"error": "model_not_loaded", "detail": str(exc)[:500]}, 503)
            started = time.perf_counter()
            request_ = GenerationRequest(messages=build_messages(self.persona, submission), images=[admitted.image])
            [result] = await asyncio.to_thread(runner.generate, [request_])
            elapsed = time.perf_counter() - started
        language = fan_language(submission.text, None, self.persona.languages)
        read = read_reply(result.text, self.persona, submission.item_id, language)
        misses = [] if read.used_fallback else check_reply(read.text, self.persona, language)
        now = utcnow()
        reply = build_reply(submission, tier="fast", route_reason=RouteReason.SIMPLE, model_id=model_id,
                            text=read.text, cue=read.cue,
                            timings=Timings(item_created_at=now, queue_ms=0, admission_ms=0, preprocess_ms=0,
                                            inference_ms=elapsed * 1000, replied_at=now))
        screened = self.screen.screen(reply, now)
        stages += [_stage(record) for record in screened.records] or [_allowed("reply", "word_filter")]
        shown = screened.send or (screened.held.reply if screened.held else reply)
        return _json({
            "model_id": model_id, "stages": stages, "blocked": False, "raw": result.text,
            "reply": {"text": shown.text, "emotion": read.cue.emotion, "wants_deep": read.wants_deep,
                      "held": screened.held is not None, "persona_misses": [str(m) for m in misses],
                      "seconds": round(elapsed, 3)},
        })

    async def models(self, _: web.Request) -> web.Response:
        registry = ModelRegistry.load(self.settings.registry_path)
        tiers = {}
        async with httpx.AsyncClient(timeout=5) as http:
            for tier, url in self.settings.admins().items():
                try:
                    tiers[tier] = {"admin": url, **(await http.get(f"{url}/model")).json()}
                except (httpx.HTTPError, ValueError) as exc:
                    tiers[tier] = {"admin": url, "error": f"{type(exc).__name__}: {exc}"[:300]}
        return _json({
            "tiers": tiers,
            "registry": [{"id": spec.id, "tier": spec.tier, "mode": spec.mode} for spec in registry],
            "playground": self.playground.runner.spec.id if self.playground.runner else self.playground.default_id,
        })

    async def switch(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            tier, model_id = body["tier"], body["model_id"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _json({"error": "bad_request", "detail": 'send {"tier": ..., "model_id": ...}'}, 400)
        url = self.settings.admins().get(tier)
        if url is None:
            return _json({"error": "unknown_tier", "detail": f"no admin URL for tier {tier!r}"}, 404)
        async with httpx.AsyncClient(timeout=10) as http:
            try:
                answer = await http.post(f"{url}/switch_model", json={"model_id": model_id})
            except httpx.HTTPError as exc:
                return _json({"error": "tier_unreachable", "detail": str(exc)[:300]}, 502)
        log.info("%s asked tier %s to switch to %s: %d", request[OPERATOR], tier, model_id, answer.status_code)
        return web.Response(body=answer.content, status=answer.status_code, content_type="application/json")


def _stage(record) -> dict:
    return {"side": record.side, "stage": record.stage, "action": record.action,
            "categories": record.categories, "detail": record.detail}


def _allowed(side: str, stage: str) -> dict:
    return {"side": side, "stage": stage, "action": "allow", "categories": [], "detail": ""}


@contextlib.asynccontextmanager
async def console_service(settings: ConsoleSettings, bootstrap: str,
                          metrics: ConsoleMetrics | None = None) -> AsyncIterator[tuple[Console, int]]:
    """A started console (port bound, queue being read back); leaving the block stops it."""
    from consumers.admin import admin_server
    from consumers.services import RegistryLoader, load_fan_moderation, prepare_topics
    from stream.kafka_io import make_consumer, make_producer
    from stream.moderation.text_filter import TextFilter

    metrics = metrics or ConsoleMetrics()
    settings.secret()  # refuse to start without one
    await prepare_topics(settings, bootstrap)
    persona = Persona.load(settings.persona_path)
    text_filter = TextFilter.from_file(settings.moderation_words_path)
    screen = ReplyScreen(text_filter, persona)
    from stream.metrics import WorkerMetrics

    moderation = await asyncio.to_thread(load_fan_moderation, settings, WorkerMetrics("console"), text_filter)
    playground = Playground(RegistryLoader(settings.registry_path),
                            settings.playground_model_id or settings.model_id)
    producer = make_producer(bootstrap, "idolstream-console")
    reader = make_consumer(bootstrap, None, "idolstream-console")
    await producer.start()
    await reader.start()
    console = Console(settings, bootstrap, producer, reader, persona, screen, moderation, playground, metrics)
    reading = console.reading = asyncio.create_task(console.read_queue(), name="review-queue")
    try:
        async with admin_server(console.app(), settings.console_host, settings.console_port) as port:
            log.info("console on http://%s:%d/", settings.console_host, port)
            yield console, port
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await reader.stop()
        await producer.stop()
        await asyncio.to_thread(playground.close)
        moderation.close()
