"""The overlay gateway: replies from Kafka to each room's overlays over websockets.

One port serves the overlay page (``GET /?room=R``) and the websocket (``/ws/<room>``).
Every gateway instance reads every partition of the replies topic without a consumer group
(each instance serves any room) from the end, so an overlay sees what is said from the
moment it connects. Protocol, server to overlay: ``hello``, then ``reply`` frames in room
order; overlay to server: ``ack`` frames (accepted now, used for pacing later). websockets'
own ping/pong detects dead peers.
"""

from __future__ import annotations

import asyncio
import http
import logging
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from stream.contracts import Reply
from stream.metrics import GatewayMetrics
from stream.overlay import RoomHub
from stream.settings import GatewaySettings

log = logging.getLogger("idolstream.gateway")
ROOM_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:@-")


def overlay_page() -> bytes:
    return resources.files("consumers").joinpath("static/overlay.html").read_bytes()


def room_from_path(path: str) -> str | None:
    parts = urlsplit(path).path.split("/")
    if len(parts) == 3 and parts[1] == "ws" and parts[2] and set(parts[2]) <= ROOM_CHARS:
        return parts[2]
    return None


class Gateway:
    def __init__(self, settings: GatewaySettings, consumer: AIOKafkaConsumer, metrics: GatewayMetrics) -> None:
        self.settings = settings
        self.consumer = consumer
        self.metrics = metrics
        self.hub = RoomHub(settings.client_queue, settings.recent_item_ids)
        self._server: Server | None = None

    async def start(self, partitions: list[int]) -> None:
        """Position the replies reader at the end of `partitions`, then open the port."""
        topic = self.settings.topics.replies
        assigned = [TopicPartition(topic, p) for p in partitions]
        self.consumer.assign(assigned)
        await self.consumer.seek_to_end(*assigned)
        for tp in assigned:
            await self.consumer.position(tp)  # resolve now: nothing said after start() is missed
        self._server = await serve(
            self._handle,
            self.settings.host,
            self.settings.port,
            process_request=self._process_request,
            ping_interval=10,
            ping_timeout=10,
            max_size=64 * 1024,
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def run(self) -> None:
        """Read replies until cancelled and fan them out (after `start`)."""
        try:
            while True:
                batches = await self.consumer.getmany(timeout_ms=200, max_records=200)
                for records in batches.values():
                    for record in records:
                        self._publish(record.value)
        finally:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

    def _publish(self, raw: bytes | None) -> None:
        try:
            reply = Reply.model_validate_json(raw or b"")
        except ValidationError:
            self.metrics.invalid.inc()
            log.warning("ignored a record on the replies topic that is not a Reply v1")
            return
        outcome = self.hub.publish(reply.model_dump(mode="json"))
        if outcome is None:
            self.metrics.duplicates.inc()
            return
        _, dropped = outcome
        self.metrics.dropped.inc(dropped)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path in ("/", "/overlay.html"):
            body = overlay_page()
            headers = Headers(
                {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(body)), "Cache-Control": "no-cache"}
            )
            return Response(http.HTTPStatus.OK, "OK", headers, body)
        if path == "/healthz":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if room_from_path(request.path) is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, "use /ws/<room> for the websocket, / for the page\n")
        return None

    async def _handle(self, websocket: ServerConnection) -> None:
        room = room_from_path(websocket.request.path)
        queue = self.hub.subscribe(room)
        self.metrics.clients.set(self.hub.clients())
        try:
            await websocket.send(orjson.dumps({"type": "hello", "room": room}).decode())
            reader = asyncio.create_task(self._read_acks(websocket))
            try:
                while True:
                    frame = asyncio.ensure_future(queue.next_frame())
                    await asyncio.wait({frame, reader}, return_when=asyncio.FIRST_COMPLETED)
                    if not frame.done():  # the overlay went away or broke the protocol
                        frame.cancel()
                        break
                    await websocket.send(frame.result().decode())
                    self.metrics.pushed.inc()
            finally:
                reader.cancel()
        except ConnectionClosed:
            pass
        finally:
            self.hub.unsubscribe(queue)
            self.metrics.clients.set(self.hub.clients())

    async def _read_acks(self, websocket: ServerConnection) -> None:
        async for message in websocket:
            try:
                frame = orjson.loads(message)
            except orjson.JSONDecodeError:
                await websocket.close(1003, "frames must be JSON")
                return
            if not isinstance(frame, dict) or frame.get("type") not in ("ack", "hello"):
                await websocket.close(1008, "unknown frame type")
                return
