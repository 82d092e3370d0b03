"""The overlay gateway: replies from Kafka to each room's overlays over websockets.

One port serves the overlay page (``GET /?room=R&token=T``), ``/healthz``, ``/readyz``,
``/metrics`` and the websocket (``/ws/<room>?token=T[&after=<cursor>]``). Every gateway
instance reads every partition of the replies topic without a consumer group, so any
instance serves any room and gives each reply the same cursor (its partition and offset).
At start it opens the port (``/readyz`` 503 and ``/ws`` refused meanwhile) and reads back
the last `history_max_age_s` of replies to rebuild the room histories that reconnecting
overlays resume from; live, a room nobody watches is forgotten after `history_max_age_s`
of quiet, so rooms that come and go do not pile up.

It reads the retractions topic the same way (every partition, no group, the same window
at start, so a restarted gateway never replays a reply taken back): a retracted reply
leaves its room's history and every overlay of the room is told to take its bubble down;
one that comes after its retraction is never shown. A record there that is not a
Retraction v1 is skipped and counted.

Protocol (JSON text frames). Server to overlay: ``hello`` (with what a resume replayed and
whether that was complete), ``reply`` frames in room order with their cursor, and a
``heartbeat`` when nothing else was sent for `heartbeat_s`, and ``retract`` (reply id, room)
when a reply it may be showing was taken back. Overlay to server: ``ack``
(cursor or reply id) when a bubble has finished; the next reply waits for it, or for
`ack_timeout_s`. A refused token closes the socket with 4401 (missing, malformed,
expired, bad signature) or 4403 (another room); a refused Origin gets HTTP 403.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import time
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from stream.contracts import Reply, decode_retraction
from stream.errors import InvalidEnvelope
from stream.kafka_io import UndecodableRange, read_skipping_undecodable
from stream.metrics import GatewayMetrics
from stream.overlay import Cursor, OverlayQueue, RoomHub
from stream.settings import GatewaySettings
from stream.tokens import CLOSE_CODES, Refusal, check_token, origin_allowed

log = logging.getLogger("idolstream.gateway")
ROOM_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@-")
HEARTBEAT = orjson.dumps({"type": "heartbeat"}).decode()
CLOSE_BAD_REQUEST = 4400
REBUILD_TIMEOUT_S = 60.0


def overlay_page() -> bytes:
    return resources.files("consumers").joinpath("static/overlay.html").read_bytes()


def room_from_path(path: str) -> str | None:
    parts = urlsplit(path).path.split("/")
    if len(parts) == 3 and parts[1] == "ws" and parts[2] and len(parts[2]) <= 128 and set(parts[2]) <= ROOM_CHARS:
        return parts[2]
    return None


def query_param(path: str, name: str) -> str | None:
    values = parse_qs(urlsplit(path).query).get(name)
    return values[0] if values else None


def bearer_token(request: Request) -> str | None:
    """The token from `?token=` (browsers cannot set headers) or `Authorization: Bearer`."""
    token = query_param(request.path, "token")
    header = request.headers.get("Authorization", "")
    if token is None and header.lower().startswith("bearer "):
        token = header[7:].strip()
    return token


class Gateway:
    def __init__(self, settings: GatewaySettings, consumer: AIOKafkaConsumer, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.consumer = consumer
        self.metrics = metrics
        self.secret = settings.secret()
        self.origins = settings.origins()
        self.hub = RoomHub(settings.client_queue, settings.recent_item_ids, settings.history_per_room,
                           settings.max_rooms, settings.history_max_mib * 2**20,
                           quiet_room_s=settings.history_max_age_s, recent_retractions=settings.recent_item_ids)
        self.ready = False
        self._server: Server | None = None

    async def start(self, partitions: list[int], retraction_partitions: list[int]) -> None:
        """Open the port (ready once rebuilt), then rebuild the room histories from the replies
        and retractions topics."""
        self._server = await serve(
            self._handle,
            self.settings.host,
            self.settings.port,
            process_request=self._process_request,
            ping_interval=self.settings.heartbeat_s,
            ping_timeout=2 * self.settings.heartbeat_s,
            max_size=64 * 1024,
        )
        topics = self.settings.topics
        assigned = [TopicPartition(topics.replies, p) for p in partitions]
        assigned += [TopicPartition(topics.replies_retracted, p) for p in retraction_partitions]
        self.consumer.assign(assigned)
        ends = await self.consumer.end_offsets(assigned)
        since_ms = int((time.time() - self.settings.history_max_age_s) * 1000)
        starts = await self.consumer.offsets_for_times({tp: since_ms for tp in assigned})
        for tp in assigned:
            found = starts.get(tp)
            offset = ends[tp] if found is None else found.offset
            self.consumer.seek(tp, offset)
            if tp.topic == topics.replies:
                self.hub.start_at(tp.partition, offset)
        rebuilt = await self._read_until(ends)
        self.metrics.history_rebuilt.inc(rebuilt)
        log.info("room histories rebuilt from %d replies (retractions of the same window applied)", rebuilt)
        self.ready = True

    async def _read_until(self, ends: dict[TopicPartition, int]) -> int:
        """Read up to `ends`; past REBUILD_TIMEOUT_S, go live and let `run` read the rest."""
        read = 0
        behind = {tp for tp, end in ends.items() if await self.consumer.position(tp) < end}
        try:
            async with asyncio.timeout(REBUILD_TIMEOUT_S):
                while behind:
                    read += self._publish_all(
                        await read_skipping_undecodable(self.consumer, *behind, timeout_ms=200, max_records=500)
                    )
                    behind = {tp for tp in behind if await self.consumer.position(tp) < ends[tp]}
        except TimeoutError:
            log.warning("rebuilding room histories took over %.0f s; the rest is read live", REBUILD_TIMEOUT_S)
        return read

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def run(self) -> None:
        """Read replies until cancelled and fan them out (after `start`)."""
        try:
            while True:
                self._publish_all(await read_skipping_undecodable(self.consumer, timeout_ms=200, max_records=500))
                if self.hub.forget_quiet_rooms():
                    self.metrics.history_bytes.set(self.hub.history_bytes())
                    self.metrics.rooms_held.set(self.hub.rooms_held())
        finally:
            self.ready = False
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

    def _publish_all(self, batches: dict) -> int:
        """Publish every reply and retraction of a getmany result; how many replies there were."""
        count = 0
        replies = self.settings.topics.replies
        for tp, records in batches.items():
            for record in records:
                if isinstance(record, UndecodableRange):  # skipped, never retried forever
                    if tp.topic == replies:
                        self.hub.advance(Cursor(record.partition.partition, record.last))
                        self.metrics.invalid.inc(len(record.offsets()))
                    else:
                        self.metrics.invalid_retractions.inc(len(record.offsets()))
                    log.warning("skipped records at offsets %d..%d of %s partition %d that cannot be decoded: %s",
                                record.first, record.last, tp.topic, tp.partition, record.error)
                    continue
                if tp.topic == replies:
                    self._publish(record.partition, record.offset, record.value)
                    count += 1
                else:
                    self._retract(record.value)
        return count

    def _retract(self, raw: bytes | None) -> None:
        try:
            retraction = decode_retraction(raw or b"")
        except InvalidEnvelope as exc:
            self.metrics.invalid_retractions.inc()
            log.warning("ignored a record on the retractions topic that is not a Retraction v1: %s", exc)
            return
        done = self.hub.retract(retraction.room, retraction.reply_id)
        if done is None:
            return  # retracted already (reports and an operator, or a record read twice)
        self.metrics.retractions.labels(retraction.reason).inc()
        self.metrics.history_bytes.set(self.hub.history_bytes())
        self.metrics.rooms_held.set(self.hub.rooms_held())
        log.info("reply %s of room %s retracted (%s): %s, %d overlays told, %d dropped it unseen",
                 retraction.reply_id, retraction.room, retraction.reason,
                 "out of the history" if done.from_history else "not in the history", done.notified, done.unqueued)

    def _publish(self, partition: int, offset: int, raw: bytes | None) -> None:
        cursor = Cursor(partition, offset)
        self.hub.advance(cursor)
        try:
            reply = Reply.model_validate_json(raw or b"")
        except ValidationError:
            self.metrics.invalid.inc()
            log.warning("ignored a record on the replies topic that is not a Reply v1")
            return
        self.metrics.received.inc()
        outcome = self.hub.publish(cursor, reply.model_dump(mode="json"))
        if outcome is None:
            self.metrics.duplicates.inc()
        elif outcome.retracted:
            log.info("reply %s of room %s came after its retraction: not shown", reply.reply_id, reply.room)
        else:
            self.metrics.dropped.inc(outcome.dropped)
        self.metrics.history_bytes.set(self.hub.history_bytes())
        self.metrics.rooms_held.set(self.hub.rooms_held())

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path in ("/", "/overlay.html"):
            return _response(http.HTTPStatus.OK, overlay_page(), "text/html; charset=utf-8")
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            ready = self.ready
            return connection.respond(http.HTTPStatus.OK if ready else http.HTTPStatus.SERVICE_UNAVAILABLE,
                                      "ready\n" if ready else "starting\n")
        if path == "/metrics":
            return _response(http.HTTPStatus.OK, generate_latest(self.metrics.registry), CONTENT_TYPE_LATEST)
        if room_from_path(request.path) is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "use /ws/<room> for the websocket, / for the page\n")
        if not self.ready:  # histories not rebuilt yet: a resume now could miss replies
            return connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "starting\n")
        if not origin_allowed(request.headers.get("Origin"), self.origins):
            self.metrics.refused.labels(Refusal.ORIGIN.value).inc()
            return connection.respond(http.HTTPStatus.FORBIDDEN, "origin not allowed\n")
        return None

    async def _handle(self, websocket: ServerConnection) -> None:
        request = websocket.request
        room = room_from_path(request.path)
        refusal = check_token(self.secret, bearer_token(request), room)
        if refusal is not None:
            self.metrics.refused.labels(refusal.value).inc()
            await websocket.close(CLOSE_CODES[refusal], refusal.value)
            return
        after = query_param(request.path, "after")
        try:
            cursor = Cursor.parse(after) if after else None
        except ValueError:
            self.metrics.refused.labels("bad_cursor").inc()
            await websocket.close(CLOSE_BAD_REQUEST, "after= is not a reply cursor")
            return
        queue, resume = self.hub.subscribe(room, cursor)
        if cursor is not None:
            self.metrics.resumes.labels(str(resume.complete).lower()).inc()
            self.metrics.replayed.inc(resume.replayed)
        self._count_clients(room)
        hello = {"type": "hello", "room": room, "resumed": resume.replayed, "complete": resume.complete,
                 "heartbeat_s": self.settings.heartbeat_s, "ack_timeout_s": self.settings.ack_timeout_s}
        # The overlay is gone when either side ends: the reader at a close frame or a dropped
        # connection, the pusher at a failed send. Waiting for the pusher alone kept a closed
        # overlay counted (and its queue subscribed) until its next heartbeat or ack timeout.
        reader = asyncio.create_task(self._read_frames(websocket, queue))
        pusher = asyncio.create_task(self._push(websocket, queue, hello))
        try:
            await asyncio.wait((reader, pusher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            reader.cancel()
            pusher.cancel()
            self.hub.unsubscribe(queue)
            self._count_clients(room)
            await asyncio.gather(reader, pusher, return_exceptions=True)
        for task in (pusher, reader):
            if not task.cancelled() and (error := task.exception()) is not None:
                raise error  # a fault of ours, for websockets to log

    async def _push(self, websocket: ServerConnection, queue: OverlayQueue, hello: dict) -> None:
        """Say hello, then send the queue's replies one by one, each after the previous one's ack;
        heartbeat when idle. Returns when the overlay is gone."""
        try:
            await websocket.send(orjson.dumps(hello).decode())
            await self._push_replies(websocket, queue)
        except ConnectionClosed:
            pass

    async def _push_replies(self, websocket: ServerConnection, queue: OverlayQueue) -> None:
        pacing = self.settings.ack_timeout_s > 0
        while True:
            try:
                entry = await asyncio.wait_for(queue.next_out(), self.settings.heartbeat_s)
            except TimeoutError:
                await websocket.send(HEARTBEAT)  # raises once the overlay is gone
                continue
            if isinstance(entry, bytes):  # a notice: no pacing, no ack
                await websocket.send(entry.decode())
                continue
            if pacing:
                queue.sent(entry)
            await websocket.send(entry.frame.decode())
            self.metrics.pushed.inc()
            self.metrics.room_pushed.labels(queue.room).inc()
            self.metrics.push_seconds.observe(time.monotonic() - entry.at)
            if entry.item_created is not None:
                self.metrics.item_to_push_seconds.labels(entry.tier).observe(max(0.0, time.time() - entry.item_created))
            if pacing and not await self._wait_ack(websocket, queue):
                self.metrics.ack_timeouts.inc()

    async def _wait_ack(self, websocket: ServerConnection, queue: OverlayQueue) -> bool:
        """Wait up to ack_timeout_s for the overlay's ack, with notices and heartbeats meanwhile."""
        deadline = time.monotonic() + self.settings.ack_timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if await queue.wait_ack(min(left, self.settings.heartbeat_s)):
                return True
            if notices := queue.take_notices():
                for notice in notices:
                    await websocket.send(notice.decode())
            elif deadline - time.monotonic() > 0:
                await websocket.send(HEARTBEAT)
        queue.give_up()
        return False

    async def _read_frames(self, websocket: ServerConnection, queue: OverlayQueue) -> None:
        try:
            async for message in websocket:
                try:
                    frame = orjson.loads(message)
                except orjson.JSONDecodeError:
                    await websocket.close(1003, "frames must be JSON")
                    return
                if not isinstance(frame, dict) or frame.get("type") not in ("ack", "heartbeat"):
                    await websocket.close(1008, "unknown frame type")
                    return
                if frame["type"] == "ack":
                    queue.ack(frame.get("cursor"), frame.get("reply_id"))
        except ConnectionClosed:
            pass
        finally:
            queue.release()  # a pusher waiting for this overlay's ack stops waiting

    def _count_clients(self, room: str) -> None:
        self.metrics.clients.set(self.hub.clients())
        self.metrics.rooms.set(self.hub.rooms())
        self.metrics.rooms_held.set(self.hub.rooms_held())
        if connected := self.hub.clients(room):
            self.metrics.room_clients.labels(room).set(connected)
            self.metrics.room_pushed.labels(room)  # from 0, so rate() sees the room's first reply
        else:  # per-room series live only while the room is watched, so they stay bounded
            for metric in (self.metrics.room_clients, self.metrics.room_pushed):
                with contextlib.suppress(KeyError):
                    metric.remove(room)


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers({"Content-Type": content_type, "Content-Length": str(len(body)), "Cache-Control": "no-cache"})
    return Response(status, status.phrase, headers, body)
