"""The overlay gateway against a real broker and real websocket clients: access, resume, pacing."""

import asyncio

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from producers.samples import sample_reply
from stream.contracts import Retraction, new_id, utcnow
from tests.stack import (
    WAIT_S,
    gateway_settings,
    next_frame,
    open_overlay,
    overlay_token,
    produce_replies,
    running_gateway,
    scrape,
    total,
)
from tests.test_retraction import produce_retractions

pytestmark = pytest.mark.kafka


async def metric(gateway, name: str, **labels) -> float:
    """A sample of the gateway's own /metrics page, as Prometheus would scrape it."""
    return total(await scrape(f"http://127.0.0.1:{gateway.port}/metrics"), name, **labels)


async def wait_for(condition, timeout: float = WAIT_S) -> None:
    """Poll an async condition until it holds."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.05)


async def received(gateway, n: int) -> bool:
    return await metric(gateway, "idolstream_ws_replies_received_total") >= n


async def refused_with(port: int, room: str, token: str | None) -> int:
    with pytest.raises(ConnectionClosedError) as closed:
        await open_overlay(port, room, token)
    return closed.value.rcvd.code


async def test_a_token_opens_only_its_own_room_and_refusals_are_counted(kafka_bootstrap, topic_prefix):
    settings = gateway_settings(kafka_bootstrap, topic_prefix)
    async with running_gateway(settings) as gateway:
        port = gateway.port
        assert await refused_with(port, "room-b", overlay_token("room-a")) == 4403
        assert await refused_with(port, "room-a", overlay_token("room-a", ttl_s=5, now=0)) == 4401
        assert await refused_with(port, "room-a", None) == 4401
        assert await refused_with(port, "room-a", "garbage") == 4401

        ws, hello = await open_overlay(port, "room-a", overlay_token("room-a"))
        assert hello["type"] == "hello" and hello["room"] == "room-a"
        [cursor] = await produce_replies(kafka_bootstrap, settings.topics.replies, [sample_reply("room-a", 1)])
        frame = await next_frame(ws)
        assert frame["cursor"] == cursor and frame["reply"]["room"] == "room-a"
        await ws.close()

        refused = {reason: await metric(gateway, "idolstream_ws_refused_total", reason=reason)
                   for reason in ("wrong_room", "expired_token", "missing_token", "malformed_token")}
        assert refused == {"wrong_room": 1, "expired_token": 1, "missing_token": 1, "malformed_token": 1}


async def test_an_origin_outside_the_allow_list_is_refused(kafka_bootstrap, topic_prefix):
    settings = gateway_settings(kafka_bootstrap, topic_prefix, allowed_origins="http://studio.example")
    async with running_gateway(settings) as gateway:
        url = f"ws://127.0.0.1:{gateway.port}/ws/room-a?token={overlay_token('room-a')}"
        with pytest.raises(InvalidStatus) as refused:
            await connect(url, origin="http://elsewhere.example")
        assert refused.value.response.status_code == 403
        async with connect(url, origin="http://studio.example") as ws:
            assert orjson.loads(await ws.recv())["type"] == "hello"
        assert await metric(gateway, "idolstream_ws_refused_total", reason="origin_not_allowed") == 1


async def test_a_resume_after_a_dropped_connection_delivers_exactly_the_missed_replies(kafka_bootstrap, topic_prefix):
    settings = gateway_settings(kafka_bootstrap, topic_prefix)
    topic = settings.topics.replies
    async with running_gateway(settings) as gateway:
        ws, _ = await open_overlay(gateway.port, "room-r", overlay_token("room-r"))
        seen = await produce_replies(kafka_bootstrap, topic, [sample_reply("room-r", n) for n in range(3)])
        assert [(await next_frame(ws))["cursor"] for _ in seen] == seen
        await ws.close()

        # Replies said while the overlay was away, with another room's in between.
        missed = await produce_replies(kafka_bootstrap, topic, [sample_reply("room-r", n) for n in range(3, 7)])
        await produce_replies(kafka_bootstrap, topic, [sample_reply("room-other", 0)])
        await wait_for(lambda: received(gateway, 8))

        ws, hello = await open_overlay(gateway.port, "room-r", overlay_token("room-r"), after=seen[-1])
        assert (hello["resumed"], hello["complete"]) == (4, True)
        assert [(await next_frame(ws))["cursor"] for _ in missed] == missed
        [live] = await produce_replies(kafka_bootstrap, topic, [sample_reply("room-r", 7)])
        assert (await next_frame(ws))["cursor"] == live, "nothing repeated before the next live reply"
        await ws.close()


async def test_a_restarted_gateway_and_a_second_instance_resume_from_history_rebuilt_from_kafka(
        kafka_bootstrap, topic_prefix):
    settings = gateway_settings(kafka_bootstrap, topic_prefix)
    topic = settings.topics.replies
    async with running_gateway(settings) as first:
        ws, _ = await open_overlay(first.port, "room-g", overlay_token("room-g"))
        seen = await produce_replies(kafka_bootstrap, topic, [sample_reply("room-g", n) for n in range(2)])
        assert [(await next_frame(ws))["cursor"] for _ in seen] == seen
    # The gateway is gone (and its overlay with it); the room goes on talking.
    missed = await produce_replies(kafka_bootstrap, topic, [sample_reply("room-g", n) for n in range(2, 5)])

    async with running_gateway(settings) as restarted, running_gateway(settings) as beside:
        for gateway in (restarted, beside):
            ws, hello = await open_overlay(gateway.port, "room-g", overlay_token("room-g"), after=seen[-1])
            assert (hello["resumed"], hello["complete"]) == (3, True)
            assert [(await next_frame(ws))["cursor"] for _ in missed] == missed
            await ws.close()
        assert await metric(restarted, "idolstream_ws_history_rebuilt_total") == 5


async def test_an_overlay_that_never_reads_or_acks_does_not_delay_the_others(kafka_bootstrap, topic_prefix):
    # Pacing waits a minute for an ack: were the stuck overlay holding its room back, the
    # attentive one would get one reply a minute.
    settings = gateway_settings(kafka_bootstrap, topic_prefix, client_queue=4, ack_timeout_s=60)
    async with running_gateway(settings) as gateway:
        stuck, _ = await open_overlay(gateway.port, "room-s", overlay_token("room-s"), max_queue=1)
        attentive, _ = await open_overlay(gateway.port, "room-s", overlay_token("room-s"))
        sent = []
        for n in range(12):  # one at a time, as a room speaks
            sent += await produce_replies(kafka_bootstrap, settings.topics.replies, [sample_reply("room-s", n)])
            assert (await next_frame(attentive, timeout=30))["cursor"] == sent[-1]
        # The stuck overlay got the first reply and kept only the newest four: drop-oldest, counted.
        assert await metric(gateway, "idolstream_ws_client_queue_dropped_total") == 12 - 1 - 4
        first = await next_frame(stuck)  # reading and acking now releases the rest
        assert [first["cursor"]] + [(await next_frame(stuck))["cursor"] for _ in range(4)] == [sent[0]] + sent[-4:]


async def test_an_idle_overlay_gets_heartbeats_and_a_vanished_one_is_let_go(kafka_bootstrap, topic_prefix):
    settings = gateway_settings(kafka_bootstrap, topic_prefix, heartbeat_s=0.3)
    async with running_gateway(settings) as gateway:
        ws, hello = await open_overlay(gateway.port, "room-h", overlay_token("room-h"))
        assert hello["heartbeat_s"] == 0.3
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "heartbeat"}
        assert await metric(gateway, "idolstream_ws_clients") == 1
        ws.transport.abort()  # no close frame: the peer just vanishes
        await wait_for(lambda: clients_are(gateway, 0), timeout=15)


async def clients_are(gateway, n: int) -> bool:
    return await metric(gateway, "idolstream_ws_clients") == n


async def test_heartbeats_go_on_while_a_bubble_waits_for_its_ack(kafka_bootstrap, topic_prefix):
    settings = gateway_settings(kafka_bootstrap, topic_prefix, heartbeat_s=0.3, ack_timeout_s=30)
    async with running_gateway(settings) as gateway:
        ws, _ = await open_overlay(gateway.port, "room-b", overlay_token("room-b"))
        await produce_replies(kafka_bootstrap, settings.topics.replies, [sample_reply("room-b", 0)])
        async with asyncio.timeout(WAIT_S):
            while orjson.loads(await ws.recv())["type"] != "reply":
                pass
        # Not acked: the overlay is still showing it. The gateway keeps saying it is alive.
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "heartbeat"}
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 5)) == {"type": "heartbeat"}
        await ws.close()


async def test_the_clients_gauge_follows_overlays_that_close_or_vanish_without_waiting_for_a_heartbeat(
        kafka_bootstrap, topic_prefix):
    # Heartbeats and pacing are slower than the wait below: the gauge must follow the closes themselves.
    settings = gateway_settings(kafka_bootstrap, topic_prefix, heartbeat_s=30, ack_timeout_s=60)
    async with running_gateway(settings) as gateway:
        rooms = ["room-c0", "room-c1", "room-c2"]
        overlays = [(await open_overlay(gateway.port, room, overlay_token(room)))[0] for room in rooms * 4]
        await wait_for(lambda: clients_are(gateway, 12))
        await produce_replies(kafka_bootstrap, settings.topics.replies, [sample_reply("room-c0", 0)])
        showing = overlays[0]  # gets the reply and closes without acking it: the gateway waits for its ack
        assert orjson.loads(await asyncio.wait_for(showing.recv(), WAIT_S))["type"] == "reply"

        for n, ws in enumerate(overlays):
            if n % 3 == 2:
                ws.transport.abort()  # a browser source killed: no close frame
            else:
                await ws.close()
        await wait_for(lambda: clients_are(gateway, 0), timeout=10)
        page = await scrape(f"http://127.0.0.1:{gateway.port}/metrics")
        assert total(page, "idolstream_ws_rooms") == 0
        assert not page.get("idolstream_ws_room_clients"), "no room keeps a series once its overlays are gone"


async def test_a_retraction_of_the_bubble_being_shown_goes_out_at_once_and_the_room_moves_on(
        kafka_bootstrap, topic_prefix):
    # Pacing waits a minute for an ack that never comes: only the retraction can release it.
    settings = gateway_settings(kafka_bootstrap, topic_prefix, heartbeat_s=0.3, ack_timeout_s=60)
    async with running_gateway(settings) as gateway:
        ws, _ = await open_overlay(gateway.port, "room-x", overlay_token("room-x"))
        shown, waiting = sample_reply("room-x", 0), sample_reply("room-x", 1)
        await produce_replies(kafka_bootstrap, settings.topics.replies, [shown, waiting])
        frames = []
        async with asyncio.timeout(WAIT_S):
            while not frames or frames[-1]["type"] != "reply":
                frames.append(orjson.loads(await ws.recv()))
        assert frames[-1]["reply"]["reply_id"] == shown.reply_id  # not acked: it stays on screen
        retraction = Retraction(retraction_id=new_id(), reply_id=shown.reply_id, room="room-x", reason="operator",
                                operator="Rin", at=utcnow())
        await produce_retractions(kafka_bootstrap, settings.topics.replies_retracted, [retraction])
        got = []
        async with asyncio.timeout(15):  # well within the minute the ack would have had
            while len(got) < 2:
                if (frame := orjson.loads(await ws.recv()))["type"] != "heartbeat":
                    got.append(frame)
        assert got[0] == {"type": "retract", "reply_id": shown.reply_id, "room": "room-x"}
        assert got[1]["type"] == "reply" and got[1]["reply"]["reply_id"] == waiting.reply_id
        assert await metric(gateway, "idolstream_ws_ack_timeouts_total") == 0
        assert await metric(gateway, "idolstream_gateway_retractions_total", reason="operator") == 1
        await ws.close()
