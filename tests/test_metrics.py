"""What an operator scrapes from a running stack: names, labels and values that move."""

import asyncio

import pytest

from tests.stack import WAIT_S, next_reply, running_stack, scrape, total

pytestmark = pytest.mark.kafka


async def test_a_running_stack_reports_stages_lag_and_pushes(kafka_bootstrap, topic_prefix, fast_runner):
    async with running_stack(kafka_bootstrap, topic_prefix, fast_runner, admin_port=0) as stack:
        overlay = await stack.overlay("room-m")
        for seed in range(3):
            await stack.submit("room-m", seed=seed)
        tiers = [(await next_reply(overlay))["tier"] for _ in range(3)]
        fast = f"http://127.0.0.1:{stack.fast_worker.admin_port}/metrics"
        gateway = f"http://127.0.0.1:{stack.gateway_port}/metrics"

        worker = await scrape(fast)
        assert total(worker, "idolstream_items_consumed_total") == 3
        assert total(worker, "idolstream_replies_total", role="answer") == 3
        for stage in ("queue", "admission", "preprocess", "inference"):
            assert total(worker, "idolstream_stage_seconds_count", stage=stage) == 3, stage
        assert total(worker, "idolstream_item_to_reply_seconds_count") == 3

        # Lag: one series per assigned partition of both item topics, back to zero once all is read.
        async with asyncio.timeout(WAIT_S):
            while True:
                lag = (await scrape(fast)).get("idolstream_consumer_lag", [])
                if len(lag) == 4 and all(value == 0 for _, value in lag):
                    break
                await asyncio.sleep(0.2)
        assert {labels["topic"] for labels, _ in lag} == set(stack.fast.topics.submissions)

        pushed = await scrape(gateway)
        assert total(pushed, "idolstream_ws_clients") == 1
        assert total(pushed, "idolstream_ws_rooms") == 1
        assert sum(total(pushed, "idolstream_item_to_push_seconds_count", tier=t) for t in set(tiers)) == 3
        assert total(pushed, "idolstream_ws_replies_pushed_total") == 3
        assert total(pushed, "idolstream_ws_room_clients", room="room-m") == 1
        assert total(pushed, "idolstream_ws_room_replies_pushed_total", room="room-m") == 3
        # A dead-letter ratio is 0, not missing, before the first bad item.
        assert {labels["reason"] for labels, _ in worker["idolstream_dead_letters_total"]} >= {"image_corrupt"}

        # The room's own series go with its last overlay, so rooms that come and go stay bounded.
        second = await stack.overlay("room-m")
        await overlay.close()
        async with asyncio.timeout(WAIT_S):
            while total(now := await scrape(gateway), "idolstream_ws_clients") != 1:
                await asyncio.sleep(0.1)
        assert total(now, "idolstream_ws_room_clients", room="room-m") == 1, "one overlay still watches the room"
        assert total(now, "idolstream_ws_room_replies_pushed_total", room="room-m") == 3
        await second.close()
        async with asyncio.timeout(WAIT_S):
            while "room-m" in {labels.get("room") for labels, _ in (await scrape(gateway)).get(
                    "idolstream_ws_room_clients", [])}:
                await asyncio.sleep(0.1)
        after = await scrape(gateway)
        assert total(after, "idolstream_ws_clients") == 0
        assert total(after, "idolstream_ws_rooms_held") == 1, "its history stays for overlays that come back"
        assert not after.get("idolstream_ws_room_replies_pushed_total")
