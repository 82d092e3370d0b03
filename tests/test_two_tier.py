"""The two-tier flow on the real broker: escalation, the deep tier's budgets and deadlines,
degradation when the deep tier is down, live load-shedding and model switching."""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

import httpx
import pytest

from consumers.model_slot import ModelSlot
from stream.contracts import utcnow
from stream.metrics import WorkerMetrics
from stream.persona import Persona
from stream.models.backends import load_runner
from stream.switching import ModelSwitchGate
from tests.conftest import PROJECT_ROOT
from tests.stack import WAIT_S, RecordingRunner, answers, frames_until, read_topic, running_stack

pytestmark = pytest.mark.kafka
MATHS = "Can you solve this one from my homework? 12 + 30 x 2 = ?"


class RamblingRunner:
    """The real tiny Thinking model, made to never close its thought: `</think>` is never produced."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.spec = runner.spec
        self.thought_calls = 0

    def generate(self, requests, options=None):
        from dataclasses import replace

        if options is not None and "</think>" in options.stop:
            self.thought_calls += 1
            results = self.runner.generate(requests, replace(options, stop=()))
            return [replace(r, text=r.text.replace("</think>", ""), finish_reason="length") for r in results]
        return self.runner.generate(requests, options)

    def close(self) -> None:
        pass


class PoisonRunner(RecordingRunner):
    """The real fast model, failing any batch that holds an item whose text says POISON."""

    def generate(self, requests, options=None):
        if any("POISON" in str(r.messages) for r in requests):
            self.batch_sizes.append(len(requests))
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return super().generate(requests, options)


async def test_one_poisoned_item_gets_a_persona_line_and_a_dead_letter_and_spares_its_batch(
    kafka_bootstrap, topic_prefix, fast_runner
):
    poison = PoisonRunner(fast_runner)
    async with running_stack(kafka_bootstrap, topic_prefix, poison, batch_max_wait_ms=1000) as stack:
        overlay = await stack.overlay("room-p")
        good_before = await stack.submit("room-p", seed=1, text="nice!")
        bad = await stack.submit("room-p", seed=2, text="POISON")
        good_after = await stack.submit("room-p", seed=3, text="hello")
        got = {a["item_id"]: a for a in answers(await frames_until(overlay, lambda r: len(answers(r)) >= 3))}
        assert set(got) == {good_before.item_id, bad.item_id, good_after.item_id}
        assert (got[bad.item_id]["tier"], got[bad.item_id]["degraded"]) == ("fallback", "model_error")
        assert got[bad.item_id]["text"] in Persona.load(PROJECT_ROOT / "config" / "persona.json").spoken_lines()
        assert {got[i]["tier"] for i in (good_before.item_id, good_after.item_id)} <= {"fast", "fallback"}
        assert all(got[i]["degraded"] in (None, "empty_answer") for i in (good_before.item_id, good_after.item_id))
        [letter] = await read_topic(kafka_bootstrap, stack.fast.topics.dlq, lambda r: len(r) >= 1)
        assert (letter["item_id"], letter["reason"]) == (bad.item_id, "model_error")
        assert "illegal memory access" in letter["detail"]
        assert stack.metrics.dead_letters.labels("model_error")._value.get() == 1
        assert max(poison.batch_sizes) > 1, "the items were batched together, so the batch was retried item by item"


async def test_an_escalating_item_gets_a_holding_line_then_a_deep_answer_without_reasoning(
    kafka_bootstrap, topic_prefix, fast_runner, deep_runner
):
    async with running_stack(
        kafka_bootstrap, topic_prefix, fast_runner, deep_runner, {"keep_reasoning": True}, deep_deadline_ms=60_000
    ) as stack:
        overlay = await stack.overlay("room-m")
        item = await stack.submit("room-m", seed=1, text=MATHS)
        replies = await frames_until(overlay, lambda r: answers(r))
        holding, answer = replies
        assert (holding["role"], holding["tier"], holding["route_reason"]) == ("holding", "fast", "maths")
        assert holding["text"] in _persona_holding_lines()
        assert (answer["tier"], answer["route_reason"], answer["degraded"]) == ("deep", "maths", None)
        assert answer["model_id"] == "tiny-qwen3vl-thinking" and answer["item_id"] == item.item_id
        [trace] = await read_topic(kafka_bootstrap, stack.fast.topics.reasoning, lambda r: len(r) >= 1)
        assert trace["item_id"] == item.item_id and trace["reply_id"] == answer["reply_id"]
        for reply in replies:
            assert "<think>" not in reply["text"] and "</think>" not in reply["text"]
            raw = reply["_raw"] if isinstance(reply["_raw"], str) else reply["_raw"].decode()
            assert "think>" not in raw
            if len(trace["text"]) >= 8:  # a shorter thought could match by chance
                assert trace["text"] not in raw
        escalations = await read_topic(kafka_bootstrap, stack.fast.topics.items_deep, lambda r: len(r) >= 1)
        assert escalations[0]["reason"] == "maths" and escalations[0]["draft"]["model_id"] == "tiny-qwen3vl-moe"


def _persona_holding_lines() -> list[str]:
    persona = Persona.load(PROJECT_ROOT / "config" / "persona.json")
    return [line for lines in persona.lines.values() for line in lines.holding]


async def test_with_the_deep_tier_down_escalations_get_their_draft_by_the_deadline_then_stop(
    kafka_bootstrap, topic_prefix, fast_runner
):
    deadline_s = 1.5
    async with running_stack(
        kafka_bootstrap, topic_prefix, fast_runner, escalate=True, deep_deadline_ms=int(deadline_s * 1000),
        breaker_failures=2, breaker_open_s=600,
    ) as stack:
        overlay = await stack.overlay("room-d")
        for seed in (1, 2):
            await stack.submit("room-d", seed=seed, text=MATHS)
            # The answer is due by the deadline; allow a little for the fast model and the hops.
            replies = await frames_until(overlay, lambda r: answers(r), timeout=deadline_s + 5)
            [answer] = answers(replies)
            assert answer["tier"] in ("fast", "fallback") and answer["degraded"] == "deep_deadline"
            assert answer["route_reason"] == "maths"
        # Two missed deadlines opened the circuit: the next escalating item is answered at once, no holding line.
        await stack.submit("room-d", seed=3, text=MATHS)
        [answer] = await frames_until(overlay, lambda r: answers(r))
        assert answer["role"] == "answer" and answer["degraded"] == "deep_unavailable"
        assert stack.metrics.breaker_open._value.get() == 1
        assert stack.metrics.degraded.labels("deep_deadline")._value.get() == 2


async def test_a_thought_that_never_closes_is_closed_by_the_budget_and_answered(
    kafka_bootstrap, topic_prefix, fast_runner, deep_runner
):
    rambling = RamblingRunner(deep_runner)
    budget = 12
    async with running_stack(
        kafka_bootstrap, topic_prefix, fast_runner, rambling,
        {"keep_reasoning": True, "thinking_budget_tokens": budget}, deep_deadline_ms=60_000,
    ) as stack:
        overlay = await stack.overlay("room-t")
        item = await stack.submit("room-t", seed=4, text=MATHS)
        [answer] = answers(await frames_until(overlay, lambda r: answers(r)))
        assert answer["tier"] == "deep" and "</think>" not in answer["text"]
        [trace] = await read_topic(kafka_bootstrap, stack.fast.topics.reasoning, lambda r: len(r) >= 1)
        assert trace["item_id"] == item.item_id
        assert trace["closed_by_model"] is False and 0 < trace["thought_tokens"] <= budget
        assert rambling.thought_calls == 1


async def test_stale_items_are_not_answered_and_are_counted(kafka_bootstrap, topic_prefix, fast_runner):
    async with running_stack(kafka_bootstrap, topic_prefix, fast_runner, max_age_s=30) as stack:
        overlay = await stack.overlay("room-s")
        stale = await stack.submit("room-s", seed=5, created_at=utcnow() - timedelta(minutes=2))
        fresh = await stack.submit("room-s", seed=6)
        [answer] = answers(await frames_until(overlay, lambda r: answers(r)))
        assert answer["item_id"] == fresh.item_id
        [shed] = await read_topic(kafka_bootstrap, stack.fast.topics.shed, lambda r: len(r) >= 1)
        assert (shed["item_id"], shed["reason"]) == (stale.item_id, "stale") and shed["age_ms"] >= 120_000
        assert stack.metrics.shed.labels("stale")._value.get() == 1


async def test_a_flooding_fan_is_rate_limited_while_another_fan_is_answered(kafka_bootstrap, topic_prefix, fast_runner):
    async with running_stack(kafka_bootstrap, topic_prefix, fast_runner, user_max_items=2, user_window_s=600) as stack:
        overlay = await stack.overlay("room-f")
        flood = [await stack.submit("room-f", seed=i, user_id="flooder", display_name="Flooder") for i in range(6)]
        calm = await stack.submit("room-f", seed=9, user_id="calm", display_name="Calm")
        got = answers(await frames_until(overlay, lambda r: any(a["item_id"] == calm.item_id for a in answers(r))))
        shed = await read_topic(kafka_bootstrap, stack.fast.topics.shed, lambda r: len(r) >= 4)
        assert {s["item_id"] for s in shed} == {s.item_id for s in flood[2:]}
        assert {s["reason"] for s in shed} == {"user_rate_limited"}
        answered = {a["item_id"] for a in got}
        assert {flood[0].item_id, flood[1].item_id, calm.item_id} <= answered
        assert not answered & {s.item_id for s in flood[2:]}


async def test_a_model_switch_under_load_loses_no_item(kafka_bootstrap, topic_prefix, registry, tiny_checkpoints):
    metrics = WorkerMetrics("fast")
    first = load_runner(registry.get("tiny-qwen3vl-moe"), PROJECT_ROOT)
    slot = ModelSlot(first, lambda model_id: load_runner(registry.get(model_id), PROJECT_ROOT), registry.ids,
                     ModelSwitchGate(min_interval_s=600), metrics)
    try:
        async with running_stack(kafka_bootstrap, topic_prefix, first, fast_slot=slot, admin_port=0) as stack:
            overlay = await stack.overlay("room-w")
            admin = f"http://127.0.0.1:{stack.fast_worker.admin_port}"
            sent = []
            async with httpx.AsyncClient(base_url=admin, timeout=10) as http:
                for i in range(12):
                    sent.append((await stack.submit("room-w", seed=20 + i)).item_id)
                    if i == 4:
                        cli = await asyncio.create_subprocess_exec(
                            sys.executable, "-m", "stream.cli", "switch-model", "tiny-qwen3vl-dense", "--admin", admin,
                            cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
                        )
                        said = (await asyncio.wait_for(cli.communicate(), WAIT_S))[0].decode()
                        assert cli.returncode == 0 and "switching_to" in said, said
                        again = await http.post("/switch_model", json={"model_id": "tiny-qwen3vl-moe"})
                        assert again.status_code in (409, 429), again.text
                        unknown = await http.post("/switch_model", json={"model_id": "no-such-model"})
                        assert unknown.status_code == 404
                got = answers(await frames_until(overlay, lambda r: len(answers(r)) >= len(sent)))
                assert sorted(a["item_id"] for a in got) == sorted(sent)
                async with asyncio.timeout(WAIT_S):
                    while (await http.get("/model")).json()["model"] != "tiny-qwen3vl-dense" or slot.runner is None:
                        await asyncio.sleep(0.05)  # polling a condition, bounded by the timeout
                late = await stack.submit("room-w", seed=40)
                [after] = answers(await frames_until(overlay, lambda r: answers(r)))
                assert after["item_id"] == late.item_id and after["model_id"] == "tiny-qwen3vl-dense"
                assert (await http.get("/readyz")).status_code == 200
                assert b"idolstream_model_loaded" in (await http.get("/metrics")).content
        models = {a["model_id"] for a in got}
        assert models <= {"tiny-qwen3vl-moe", "tiny-qwen3vl-dense", "persona"}
    finally:
        slot.close()
