"""Scaling the fast tier: workers join, stop and die under load, and no fan is forgotten.

The design scales a tier by adding workers to its consumer group (KEDA does it on lag).
Here real worker processes take turns on one group while a producer keeps sending items
to five rooms: a second worker joins, the first is stopped with SIGTERM, then the second
is killed with SIGKILL while a third joins. Every item must be answered and shown once on
its room's overlay, in the order the room's items were sent. Several answers for one item
on the replies topic are allowed (at-least-once) and counted; so is the time to rebalance:
from each membership change (the joiner's join request, the SIGTERM, the SIGKILL) to the new
owner being given the partitions that changed hands, and to the first answer produced on
each of them after that. `pytest -s` prints the figures; they are also in the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.partitioner import DefaultPartitioner

from consumers.services import prepare_topics
from producers.client import SubmissionClient
from producers.samples import sample_item
from stream.kafka_io import make_consumer, partitions_of
from stream.metrics import GatewayMetrics
from stream.settings import FastTierSettings
from tests.stack import gateway_settings, next_frame, open_overlay, overlay_token, running_gateway
from tests.workers import WorkerProcess

pytestmark = pytest.mark.kafka

PARTITIONS = 6
ROOMS = 5
ITEMS_PER_S = 3.0
SAMPLES = 12  # distinct pictures, drawn once; each submission gets its own item id
MAX_ITEMS = 400  # only a bound should a step hang: the steps, not this, end the load
ITEMS_AFTER_LAST_STEP = 10
STARTUP_S = 120  # imports and model load of a worker process on a busy 2-core machine
STEP_S = 60  # one membership change, from the event to replies flowing again
DRAIN_S = 90  # after the load stops, until every item is answered and shown
WORKER_SETTINGS = dict(
    topic_partitions=PARTITIONS,
    session_timeout_ms=6000,
    escalate="false",  # no deep tier here
    user_max_items=0,  # shedding off: every item must be answered
    room_max_replies=0,
    max_age_s=600,  # nothing is stale within this test
)


def rooms_on_distinct_partitions(count: int, partitions: int) -> list[str]:
    """Room ids whose keys land on `count` different partitions, so the group has work to split."""
    everything = list(range(partitions))
    rooms: dict[int, str] = {}
    for n in itertools.count():
        room = f"room-{n}"
        rooms.setdefault(DefaultPartitioner()(room.encode(), everything, everything), room)
        if len(rooms) == count:
            return list(rooms.values())


@dataclass(frozen=True)
class Sent:
    item_id: str
    room: str
    partition: int
    at: float


class Load:
    """Items at a fixed rate, rooms in turn, each acknowledged by the broker before the next."""

    def __init__(self, client: SubmissionClient, rooms: list[str]) -> None:
        self.client = client
        self.rooms = rooms
        self.samples = [sample_item(seed) for seed in range(SAMPLES)]
        self.sent: list[Sent] = []
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        due = time.monotonic()
        for n in range(MAX_ITEMS):
            if self.stopping.is_set():
                return
            room = self.rooms[n % len(self.rooms)]
            # One topic: a room's order is kept per partition, and fan images and screenshots are two topics.
            submission = self.samples[n % SAMPLES].to_submission(room, kind="fan_image")
            partition, _ = await self.client.submit(submission)
            self.sent.append(Sent(submission.item_id, room, partition, time.time()))
            due += 1 / ITEMS_PER_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))  # the load's rate, not a readiness guess


@dataclass
class RepliesLog:
    """Every answer on the replies topic, read from the beginning: (item id, time it was produced)."""

    answers: list[tuple[str, float]] = field(default_factory=list)

    async def run(self, bootstrap: str, topic: str) -> None:
        consumer = make_consumer(bootstrap, None, "test-scaling-replies")
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in await partitions_of(bootstrap, topic)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for record in records:
                        reply = orjson.loads(record.value)
                        if reply.get("role") == "answer":
                            self.answers.append((reply["item_id"], record.timestamp / 1000))
        finally:
            await consumer.stop()


async def collect_overlay(ws, shown: list[dict]) -> None:
    """Reply frames of one overlay, in the order it received them (acked at once)."""
    while True:
        shown.append((await next_frame(ws, timeout=3600))["reply"])


async def until(condition, timeout: float, what: str) -> None:
    """Check `condition` every 50 ms until it holds; fail after `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.05)  # poll interval of a condition wait
    except TimeoutError:
        raise AssertionError(f"no {what} within {timeout:.0f} s") from None


def first_difference(seen: list, wanted: list) -> int:
    return next(i for i, (a, b) in enumerate(itertools.zip_longest(seen, wanted)) if a != b)


@dataclass
class Step:
    """One membership change: when it happened, the partitions that changed hands, and how fast they answered again."""

    name: str
    event_at: float
    moved: set[int]
    assigned_at: float | None = None  # the new owner was given the moved partitions
    next_reply_at: dict[int, float] = field(default_factory=dict)  # per moved partition that carries a room

    def describe(self) -> str:
        assigned = f"{self.assigned_at - self.event_at:5.2f} s" if self.assigned_at else "never"
        waits = ", ".join(f"p{p}: {at - self.event_at:.2f} s" for p, at in sorted(self.next_reply_at.items()))
        worst = max((at - self.event_at for at in self.next_reply_at.values()), default=float("nan"))
        return (f"{self.name}: partitions {sorted(self.moved)} reassigned after {assigned}; "
                f"next reply per partition {waits or 'none'} (worst {worst:.2f} s)")


def extra_answers_by_step(answers: list[tuple[str, float]], steps: list[Step]) -> Counter:
    """Each answer after an item's first, counted against the last membership change before it."""
    answered: set[str] = set()
    extra: Counter = Counter()
    for item_id, at in sorted(answers, key=lambda answer: answer[1]):
        if item_id in answered:
            extra[next((step.name for step in reversed(steps) if step.event_at <= at), "before any change")] += 1
        answered.add(item_id)
    return extra


async def test_workers_joining_stopping_and_dying_under_load_answer_every_item_once_in_room_order(
    kafka_bootstrap, topic_prefix, tiny_checkpoints, record_property, request
):
    settings = FastTierSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, topic_partitions=PARTITIONS)
    await prepare_topics(settings, kafka_bootstrap)  # 6 partitions, before the gateway would create 2
    topic = settings.topics.fan_images
    rooms = rooms_on_distinct_partitions(ROOMS, PARTITIONS)
    workers: list[WorkerProcess] = []
    tasks: list[asyncio.Task] = []
    overlays = []
    steps: list[Step] = []
    replies = RepliesLog()
    shown: dict[str, list[dict]] = {room: [] for room in rooms}
    gateway_metrics = GatewayMetrics()

    began = time.time()

    def progress(what: str) -> None:
        print(f"[{time.time() - began:6.1f} s] {what}; sent {len(load.sent)}, answers {len(replies.answers)}")

    def worker(name: str) -> WorkerProcess:
        workers.append(WorkerProcess(name, kafka_bootstrap, topic_prefix, **WORKER_SETTINGS))
        return workers[-1]

    def fan_partitions(assignment) -> set[int]:
        return {p for t, p in assignment.partitions if t == topic}

    async def new_owner_answers(step: Step, owner: WorkerProcess, all_partitions: bool) -> None:
        """Wait until `owner` holds the moved partitions and each moved room's partition is answered again."""
        def assigned():
            found = owner.assigned_since(step.event_at)
            return found if found and step.moved <= fan_partitions(found) and (
                not all_partitions or len(fan_partitions(found)) == PARTITIONS) else None

        await owner.wait_for(lambda: assigned() is not None, STEP_S, f"assignment after '{step.name}'")
        step.assigned_at = assigned().at
        room_partitions = {s.partition for s in load.sent} & step.moved

        def answered_again() -> bool:
            partition_of = {s.item_id: s.partition for s in load.sent}
            for item_id, at in replies.answers:
                p = partition_of.get(item_id)
                if p in room_partitions and at >= step.assigned_at and p not in step.next_reply_at:
                    step.next_reply_at[p] = at
            return set(step.next_reply_at) == room_partitions

        await until(answered_again, STEP_S, f"reply on every moved partition after '{step.name}'")

    async with contextlib.AsyncExitStack() as stack:
        gateway = await stack.enter_async_context(
            running_gateway(gateway_settings(kafka_bootstrap, topic_prefix), gateway_metrics)
        )
        client = await stack.enter_async_context(SubmissionClient(kafka_bootstrap, settings.topics))
        load = Load(client, rooms)
        try:
            for room in rooms:
                ws, hello = await open_overlay(gateway.port, room, overlay_token(room))
                assert hello["type"] == "hello"
                overlays.append(ws)
                tasks.append(asyncio.create_task(collect_overlay(ws, shown[room])))
            tasks.append(asyncio.create_task(replies.run(kafka_bootstrap, settings.topics.replies)))

            first = await worker("worker-1").start()
            await first.wait_for(lambda: len(first.owned(topic)) == PARTITIONS, STARTUP_S, "assignment")
            tasks.append(producing := asyncio.create_task(load.run()))
            progress("worker-1 holds every partition")
            await until(lambda: len(replies.answers) >= 2 * ROOMS, STEP_S, "steady answers from one worker")

            # 1. a second worker joins the group: the group splits the partitions
            second = await worker("worker-2").start()
            progress("worker-2 starting")
            joining_at = await second.wait_line(r"\(Re-\)joining group", STARTUP_S)
            await second.wait_for(lambda: second.owned(topic), STEP_S, "assignment")
            await first.wait_for(lambda: first.assigned_since(joining_at), STEP_S, "assignment after the join")
            steps.append(step := Step("second worker joins", joining_at, set(second.owned(topic))))
            progress("worker-2 joined")
            await new_owner_answers(step, second, all_partitions=False)

            # 2. the first worker is stopped (SIGTERM): it must hand its partitions back and exit cleanly
            progress("worker-2 answers")
            steps.append(step := Step("first worker stopped (SIGTERM)", 0.0, first.owned(topic)))
            step.event_at = stopped_at = first.signal(signal.SIGTERM)
            await new_owner_answers(step, second, all_partitions=True)
            first_rc = await first.wait_exit(STEP_S)
            progress("worker-1 exited")

            # 3. the second worker is killed (SIGKILL) while a third joins
            third = await worker("worker-3").start()
            progress("worker-3 starting")
            await third.wait_line(r"\(Re-\)joining group", STARTUP_S)
            steps.append(step := Step("second worker killed (SIGKILL) while a third joins", 0.0, second.owned(topic)))
            step.event_at = second.signal(signal.SIGKILL)
            progress("worker-2 killed")
            await new_owner_answers(step, third, all_partitions=True)

            sent_before = len(load.sent)
            progress("worker-3 answers")
            await until(lambda: len(load.sent) >= sent_before + ITEMS_AFTER_LAST_STEP or producing.done(),
                        STEP_S, "load after the last step")
            load.stopping.set()
            await producing
            wanted = {room: [s.item_id for s in load.sent if s.room == room] for room in rooms}
            progress("load stopped")
            with contextlib.suppress(AssertionError):  # what is missing is reported below
                await until(
                    lambda: {i for i, _ in replies.answers} >= {s.item_id for s in load.sent}
                    and all({r["item_id"] for r in shown[room]} >= set(wanted[room]) for room in rooms),
                    DRAIN_S, "answer for every item on the topic and the overlays",
                )
            third_stopped_at = third.signal(signal.SIGTERM)
            third_rc = await third.wait_exit(STEP_S)
        except BaseException:
            for running in workers:  # what each worker said, to tell a slow step from a stuck one
                request.node.add_report_section("call", f"{running.name} log", running.tail(200))
            request.node.add_report_section("call", "progress", "\n".join(
                [f"sent {len(load.sent)}, answers {len(replies.answers)}",
                 *(f"{step.name}: event {step.event_at:.2f} assigned {step.assigned_at} next {step.next_reply_at}"
                   for step in steps)]))
            raise
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for ws in overlays:
                await ws.close()
            for running in workers:
                await running.close()

    # -- figures ----------------------------------------------------------------------
    per_item = Counter(item_id for item_id, _ in replies.answers)
    sent_ids = [s.item_id for s in load.sent]
    lost = [i for i in sent_ids if per_item[i] == 0]
    duplicated = {i: n for i, n in per_item.items() if n > 1}
    extra_answers = sum(n - 1 for n in duplicated.values())
    extra_by_step = extra_answers_by_step(replies.answers, steps)
    dropped_by_gateway = gateway_metrics.registry.get_sample_value("idolstream_ws_duplicates_dropped_total")
    report = "\n".join([
        f"fast tier scaled under load: {len(sent_ids)} items to {ROOMS} rooms at {ITEMS_PER_S:g}/s, "
        f"{PARTITIONS} partitions",
        *(f"  {step.describe()}" for step in steps),
        f"  answers on the replies topic: {sum(per_item.values())}; items answered more than once: "
        f"{len(duplicated)} ({extra_answers} extra answers); dropped as duplicates by the gateway: "
        f"{dropped_by_gateway:g}",
        *(f"    extra answers after '{name}': {count}" for name, count in extra_by_step.items()),
        f"  items without an answer: {len(lost)}",
        f"  SIGTERM: worker-1 exited with {first_rc} after {first.exited_at - stopped_at:.2f} s; "
        f"worker-3 exited with {third_rc} after {third.exited_at - third_stopped_at:.2f} s",
    ])
    print("\n" + report)
    request.node.add_report_section("call", "scaling figures", report)
    record_property("duplicates", extra_answers)
    record_property("items_duplicated", len(duplicated))
    for step in steps:
        record_property(f"rebalance: {step.name}", step.describe())

    # -- what a user would notice -----------------------------------------------------
    assert not lost, f"{len(lost)} of {len(sent_ids)} items never answered: {lost[:10]}"
    for room in rooms:
        on_screen = [r["item_id"] for r in shown[room] if r["role"] == "answer"]
        repeated = [i for i, n in Counter(on_screen).items() if n > 1]
        assert not repeated, f"{room}: items shown more than once on the overlay: {repeated}"
        assert on_screen == wanted[room], (
            f"{room}: the overlay showed {len(on_screen)} answers for {len(wanted[room])} items, not in the order "
            f"they were sent (first difference at position {first_difference(on_screen, wanted[room])})"
        )
    assert first_rc == 0, f"worker-1 did not stop cleanly on SIGTERM\n{first.tail()}"
    assert third_rc == 0, f"worker-3 did not stop cleanly on SIGTERM\n{third.tail()}"
