"""The dashboards and alerts against a real Prometheus (Debian's package, installed by
`make setup`) scraping a running stack under sample load: every panel query and every
alert's measured parts return series, and Prometheus evaluates every rule without error.
The stack is the tiers (their fan memory on), the gateway, the console, the fans app
(`idolstream serve fans`, a process of its own), with fans liking and reporting answers, and
the draw tier (`idolstream serve draw-tier` on the project's tiny pipeline), drawing one picture."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import socket
import subprocess
from datetime import timedelta
from pathlib import Path

import httpx
import orjson
import pytest
import yaml

from producers.samples import sample_item
from consumers.console import console_service
from stream.contracts import DrawRequest, Feedback, ShedItem, Source, Timings, UserRef, new_id, utcnow
from stream.dashboards import alert_operands, expand, label_values, queries, variables
from stream.models.registry import ModelRegistry
from stream.reasons import RouteReason, ShedReason
from stream.settings import ConsoleSettings, DrawTierSettings
from stream.topics import TopicNames
from tests.fans_app import FansProcess, produce
from tests.stack import WAIT_S, Stack, next_reply, running_stack
from tests.workers import WorkerProcess

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "grafana" / "alerts" / "idolstream.rules.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
MATHS = "Can you solve this one from my homework? 12 + 30 x 2 = ?"
# Fans' texts the shipped word list (config/moderation/words.json) blocks, two spam and two insults,
# and one it holds for review.
BLOCKED = ["加微信 免费领取 free followers", "you are such an idiot", "加我微信，便宜刷粉", "loser streamer lol"]
RAID = 40  # blocked items in a burst: over the raid alert's 6 a minute, averaged over its 5 minutes
INVALID = 7  # items that are not JSON: 7 in 53, over the dead-letter alert's 10%
TO_REVIEW = "exams again tomorrow... I want to die"
REPORTED = 3  # answers reported, each past the fans app's threshold of 1: retracted, over the surge alert's 2
SHED_FANS = ("Mei", "Taro")  # thanked in one digest
# The variables' values each dashboard must find: the overview's tiers are those that answered.
MODEL_TIERS = {"tier": {"fast", "deep"}}
DRAW_ROOM = "room-draw"
EXPECTED = {"model.json": MODEL_TIERS, "safety.json": MODEL_TIERS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def running_prometheus(tmp_path: Path, targets: dict[str, int], starting: frozenset[str] = frozenset()):
    """Prometheus scraping each job's 127.0.0.1 port every second, with the alert rules loaded; the jobs
    in `starting` may come up later (the test waits for them itself)."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is missing: `make setup` installs it"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]} for job, port in targets.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as api:
            async with asyncio.timeout(WAIT_S):
                while True:
                    assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
                    with contextlib.suppress(httpx.TransportError):
                        if (await api.get("/-/ready")).status_code == 200:
                            break
                    await asyncio.sleep(0.2)
            ready = sorted(targets.keys() - starting)
            async with asyncio.timeout(WAIT_S):  # every target scraped once before the test's load
                while len(await query(api, f'up{{job=~"{"|".join(ready)}"}} == 1')) < len(ready):
                    await asyncio.sleep(0.2)
            yield api
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


async def query(api: httpx.AsyncClient, promql: str) -> list:
    """The instant vector; AssertionError with Prometheus's message when the query fails."""
    body = (await api.get("/api/v1/query", params={"query": promql})).json()
    assert body["status"] == "success", f"{promql}: {body.get('error')}"
    return body["data"]["result"]


async def until_series(api: httpx.AsyncClient, named: dict[str, str], timeout: float = WAIT_S) -> dict[str, str]:
    """Wait for every query to return series; those that never do (or fail), with the reason."""
    missing = dict(named)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while missing:
                for where, promql in list(missing.items()):
                    try:
                        if await query(api, promql):
                            del missing[where]
                    except AssertionError as failed:
                        raise AssertionError(f"{where}: {failed}") from None
                if missing:
                    await asyncio.sleep(0.5)
    return missing


async def test_every_panel_and_alert_query_returns_series_from_a_running_stack(
    kafka_bootstrap, topic_prefix, fast_runner, deep_runner, tiny_checkpoints, tmp_path
):
    names = TopicNames(topic_prefix)
    # The draw tier first: its process loads the pipeline while the rest of the stack starts and the
    # chat's load runs; it is asked to draw once it is up.
    draw_port = free_port()
    async with running_draw_tier(kafka_bootstrap, topic_prefix, draw_port) as draw, running_stack(
        kafka_bootstrap, topic_prefix, fast_runner, deep_runner, {"deep_admin_port": 0, "fan_memory": True},
        admin_port=0, deep_deadline_ms=60_000, fan_memory=True,
        # The persona checks on: random replies to fans who wrote English are seldom English, so
        # they miss and are regenerated (on time whatever the machine's load).
        check_replies=True, regenerate_within_ms=60_000,
    ) as stack, console_service(
        ConsoleSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, topic_partitions=2,
                        console_port=0, console_secret="console-secret-for-tests-only-0123456789"),
        kafka_bootstrap,
    ) as (_, console_port), running_fans(kafka_bootstrap, topic_prefix) as fans:
        # The jobs as Kubernetes names them (the Services' names, k8s/check.py checks it).
        targets = {"fast-tier": stack.fast_worker.admin_port, "deep-tier": stack.deep_worker.admin_port,
                   "gateway": stack.gateway_port, "console": console_port, "fans": int(fans.url.rsplit(":", 1)[1]),
                   "draw-tier": draw_port}
        async with running_prometheus(tmp_path, targets, starting=frozenset({"draw-tier"})) as api:
            # Sample load: a raid of fans' items the word filter blocks, one held for review, plain
            # items, one that escalates to the deep tier, items that are not JSON.
            overlay = await stack.overlay("room-p")
            raider = sample_item(20)
            for n in range(RAID):
                await stack.client.submit(raider.to_submission("room-p", text=BLOCKED[n % len(BLOCKED)]))
            await stack.submit("room-p", seed=7, text=TO_REVIEW)
            for seed in range(4):
                await stack.submit("room-p", seed=seed)
            await stack.submit("room-p", seed=9, text=MATHS)
            for _ in range(INVALID):
                await stack.client.submit_raw("fan_image", "room-p", b'{"schema_version": 1,')
            answers: list[dict] = []
            answered: set[str] = set()  # tiers of the answers (persona lines are tier "fallback")
            while "deep" not in answered:  # the fast answers (or persona lines), holding lines, the deep answer
                reply = await next_reply(overlay)
                if reply["role"] == "answer":
                    answers.append(reply)
                    answered.add(reply["tier"])

            # A fan asks her to draw (in a room of its own, so the overlay above sees only the chat's answers),
            # once the draw tier is up and scraped.
            await until_draw_tier_scraped(api, draw)
            await produce(kafka_bootstrap, names.items_draw, [(DRAW_ROOM, draw_request(DRAW_ROOM).to_json())])

            # The fans' side: a fan she answered sends again and her memory has them; fans like and
            # report her answers (a report retracts at the threshold of 1), two fans whose items were
            # shed are thanked in a digest; a record the fans app cannot read, feedback it dead-letters.
            sent_again = await until_remembered(stack, fans, "room-p", seed=0)
            await fans_feedback(kafka_bootstrap, names, fans, answers)
            await produce(kafka_bootstrap, names.shed, [
                *(shed_item(names, "room-d", name) for name in SHED_FANS), ("room-d", b"{not json"),
            ])

            # Each dashboard's variables take their values from what Prometheus scraped, as in Grafana.
            panel_queries: dict[str, str] = {}
            for path in DASHBOARDS:
                dashboard = json.loads(path.read_text())
                want = EXPECTED.get(path.name, {"tier": answered, "room": {"room-p"}})
                if path.name == "fans.json":  # what the fans app counted: the answers' tiers, models, personas
                    want = {"tier": answered, "model": {r["model_id"] for r in answers},
                            "persona": {r.get("persona_version") or "-" for r in answers}}
                values = {}
                for name, variable in variables(dashboard).items():
                    if variable["type"] != "query":
                        continue
                    metric, label = label_values(variable)
                    async with asyncio.timeout(WAIT_S):
                        while not set(found := (await api.get(f"/api/v1/label/{label}/values", params={
                            "match[]": metric})).json()["data"]) >= want[name]:
                            await asyncio.sleep(0.5)
                    values[name] = "|".join(found)
                panel_queries |= {
                    f"{path.name} / {q.panel} / {q.ref_id}": expand(q.expr, values) for q in queries(dashboard)
                }
            rules = yaml.safe_load(RULES.read_text())["groups"]
            alert_queries = {
                f"alert {rule['alert']} part {i}": operand
                for group in rules for rule in group["rules"]
                for i, operand in enumerate(alert_operands(rule["expr"]), 1)
            }
            assert len(panel_queries) >= 80 and {"safety.json", "fans.json"} <= {p.name for p in DASHBOARDS}
            assert {key.split()[1] for key in alert_queries} == {r["alert"] for g in rules for r in g["rules"]}
            missing = await until_series(api, {**panel_queries, **alert_queries})
            assert not missing, "no series for:\n" + "\n".join(f"{k}: {v}" for k, v in missing.items())

            # The figures are the load's: every item read by the fast tier, the dead letters, the maths
            # item escalated (the random-weight model may escalate others), each escalation read by the deep
            # tier; the raid's items blocked by the word filter and one held for review, by category; the
            # held item's answer (and any holding line or deep answer it got) held; replies that missed
            # the persona checks, and their regenerations.
            wanted = {
                'sum(idolstream_items_consumed_total{tier="fast"})': RAID + 6 + INVALID + sent_again,
                'sum(idolstream_dead_letters_total{job="fast-tier", reason="invalid_json"})': INVALID,
                'sum(idolstream_escalations_total{reason="maths"})': 1,
                'sum(idolstream_items_consumed_total{tier="deep"}) - sum(idolstream_escalations_total)': 0,
                'sum(idolstream_moderation_verdicts_total{side="fan", stage="word_filter", action="block"})': RAID,
                'sum(idolstream_moderation_verdicts_total{side="fan", stage="word_filter", action="review"})': 1,
                'sum(idolstream_moderation_verdicts_total{side="fan", stage!="word_filter"})': 0,
                'sum(idolstream_moderation_categories_total{side="fan", category="spam"})': RAID // 2,
                'sum(idolstream_moderation_categories_total{side="fan", category="insult"})': RAID // 2,
                'sum(idolstream_moderation_categories_total{side="fan", category="self_harm"})': 1,
                'sum(idolstream_replies_held_total) >= bool 1': 1,
                'sum(idolstream_reply_check_misses_total{tier="fast"}) >= bool 1': 1,
                'sum(idolstream_reply_regenerations_total{tier="fast"}) >= bool 1': 1,
                # The console reads the held replies back: they wait in its review queue.
                'max(idolstream_review_pending) >= bool 1': 1,
                # The fans app: every like and report, counted under the tier of the answer (read before them);
                # the reported answers retracted; the bad feedback dead-lettered, the shed record it could not
                # read (and the items that are not JSON) skipped; the digest naming both fans; no agent failed.
                'sum(idolstream_feedback_total{kind="like", tier!="unknown"})': len(answers) - REPORTED,
                'sum(idolstream_feedback_total{kind="report", tier!="unknown"})': REPORTED,
                'sum(idolstream_retractions_total{reason="reports"})': REPORTED,
                'sum(idolstream_dead_letters_total{job="fans", reason="schema_violation"})': 1,
                f'sum(idolstream_fans_unreadable_total{{topic="{names.shed}"}})': 1,
                f'sum(idolstream_fans_unreadable_total{{topic="{names.fan_images}"}})': INVALID,
                'sum(idolstream_digests_total{outcome="sent"})': 1,
                'sum(idolstream_digest_names_total)': len(SHED_FANS),
                'sum(idolstream_fans_errors_total) or vector(0)': 0,
                'min(idolstream_fans_ready)': 1,
                # The regular's last item was a hit in the fast tier's memory, which holds the fans' profiles.
                'sum(idolstream_fan_memory_lookups_total{tier="fast", result="hit"}) >= bool 1': 1,
                'max(idolstream_fan_memory_profiles{tier="fast"}) >= bool 1': 1,
                # The draw tier read the one request and drew it, every step of the entry, and answered with it.
                'sum(idolstream_items_consumed_total{tier="draw"})': 1,
                'sum(idolstream_draw_pictures_total{mode="text_to_image", outcome="drawn"})': 1,
                'sum(idolstream_draw_pictures_total{outcome!="drawn"})': 0,
                'sum(idolstream_draw_steps_total)': draw_steps(),
                'sum(idolstream_replies_total{tier="draw", role="answer", route_reason="draw_request"})': 1,
            }
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAIT_S):
                    while got := {q: v for q, v in [(q, await scalar(api, q)) for q in wanted] if v != wanted[q]}:
                        await asyncio.sleep(0.5)
            assert not got, f"Prometheus has {got}, the load was {wanted}"

            # Prometheus evaluates every alert rule without error. The dead-letter alert sees 7 items in 53
            # (over its 10%) and goes pending (`for: 5m` keeps it from firing yet); the raid alert sees 40
            # of 53 blocked, more than 6 a minute over its 5 minutes, and goes pending (firing after its
            # 2 minutes on a slow machine). The deadline and lag ones stay quiet.
            alerts = {rule["alert"] for group in rules for rule in group["rules"]}
            raised = ("IdolstreamDeadLettersHigh", "IdolstreamFanItemsBlockedSurge", "IdolstreamRetractionsSurge")
            async with asyncio.timeout(WAIT_S):
                while "inactive" in {(evaluated := await alert_rules(api))[name]["state"] for name in raised}:
                    await asyncio.sleep(0.5)
            assert set(evaluated) == alerts
            assert {name: r["health"] for name, r in evaluated.items()} == dict.fromkeys(alerts, "ok"), evaluated
            assert evaluated["IdolstreamDeadLettersHigh"]["state"] == "pending"
            assert evaluated["IdolstreamFanItemsBlockedSurge"]["state"] in ("pending", "firing")
            # 3 of her few answers retracted by reports: over one in twenty, and over 2 in 10 minutes.
            assert evaluated["IdolstreamRetractionsSurge"]["state"] == "pending"
            for quiet in ("IdolstreamDeepDeadlineMisses", "IdolstreamConsumerLagGrowing", "IdolstreamFansAppNotReady",
                          "IdolstreamFansAppLagging", "IdolstreamDrawPicturesFailing"):
                assert evaluated[quiet]["state"] == "inactive", quiet


@contextlib.asynccontextmanager
async def running_draw_tier(bootstrap: str, prefix: str, port: int):
    """`idolstream serve draw-tier` on the registry's tiny pipeline, its admin port `port`; stopped with
    SIGTERM at the end, and it must stop cleanly."""
    worker = WorkerProcess("draw-tier", bootstrap, prefix, service="draw-tier", draw_group_id=f"{prefix}draw",
                           draw_admin_port=str(port), topic_partitions="2")
    await worker.start()
    try:
        yield worker
        if not worker.exited:
            worker.signal(signal.SIGTERM)
            assert await worker.wait_exit(60) == 0, worker.tail()
    finally:
        await worker.close()


async def until_draw_tier_scraped(api: httpx.AsyncClient, worker: WorkerProcess) -> None:
    """Until the draw tier says it is up (its admin port opens once the pipeline is loaded, seconds on two
    cores) and Prometheus has scraped it."""
    await worker.wait_line(r"draw tier up: ", timeout=180)
    async with asyncio.timeout(WAIT_S):
        while not await query(api, 'up{job="draw-tier"} == 1'):
            await asyncio.sleep(0.2)


def draw_request(room: str) -> DrawRequest:
    """A fan's request to draw, as the fast tier hands it on, with a minute to be drawn in."""
    item = sample_item(3).to_submission(room, text="draw me with my cat!")
    now = utcnow()
    return DrawRequest(
        request_id=new_id(), item=item, prompt="her and a cat under the stars", mode="text_to_image",
        reason=RouteReason.DRAW_REQUEST, language="en", requested_at=now, deadline_at=now + timedelta(seconds=60),
        holding_sent=True, source=Source(topic="fan.images", partition=0, offset=0, key=room),
        fast_timings=Timings(item_created_at=item.created_at, queue_ms=0.0, admission_ms=1.0, inference_ms=5.0,
                             replied_at=now),
    )


def draw_steps() -> int:
    """The steps of the draw tier's default entry (the tiny pipeline), all run for one picture."""
    entry = DrawTierSettings.model_fields["draw_model_id"].default
    return ModelRegistry.load(ROOT / "config" / "models.json").get(entry).draw.steps


@contextlib.asynccontextmanager
async def running_fans(bootstrap: str, prefix: str):
    """The fans app as a process: one report retracts a reply, and shed fans are thanked after a second."""
    fans = FansProcess(bootstrap, prefix, topic_partitions=2, report_threshold=1, digest_window_s=1)
    try:
        yield await fans.start()
    finally:
        if fans.worker is not None:
            if not fans.worker.exited:
                await fans.stop()
            await fans.worker.close()


async def until_remembered(stack: Stack, fans: FansProcess, room: str, seed: int) -> int:
    """The fan of sample `seed`, answered before, sends again until the fast tier's memory knows them (a
    hit): at once unless their profile has not reached the tier yet. How many items that took."""
    user = sample_item(seed).user_id
    await fans.until(lambda: fans.view(f"/tables/fans/{room}/{user}"), f"the profile of {user}")

    def lookups(result: str) -> float:
        sample = {"tier": "fast", "result": result}
        return stack.metrics.registry.get_sample_value("idolstream_fan_memory_lookups_total", sample) or 0.0

    for sent in range(1, 6):
        hits, misses = lookups("hit"), lookups("miss")
        await stack.submit(room, seed=seed)
        async with asyncio.timeout(WAIT_S):  # until the tier has looked the fan up
            while lookups("hit") + lookups("miss") == hits + misses:
                await asyncio.sleep(0.2)
        if lookups("hit") > hits:
            return sent
    raise AssertionError(f"the fast tier never remembered {user}")


async def fans_feedback(bootstrap: str, names: TopicNames, fans: FansProcess, answers: list[dict]) -> None:
    """Reports on the first REPORTED answers, likes on the others, once the fans app has read them all (so
    each counts under its answer's tier and model); and one feedback record of a kind no fan can send."""
    for reply in answers:
        await fans.until(lambda: fans.view(f"/tables/replies/{reply['reply_id']}"), f"reply {reply['reply_id']}")
    records = [Feedback(feedback_id=new_id(), kind="report" if n < REPORTED else "like", reply_id=reply["reply_id"],
                        room=reply["room"], user=UserRef(id=f"fan-{n}", display_name=f"Fan {n}"), at=utcnow())
               for n, reply in enumerate(answers)]
    love = {**orjson.loads(records[-1].to_json()), "feedback_id": new_id(), "kind": "love"}
    await produce(bootstrap, names.feedback, [*records, (records[-1].room, orjson.dumps(love))])


def shed_item(names: TopicNames, room: str, name: str) -> ShedItem:
    return ShedItem(shed_id=new_id(), reason=ShedReason.ROOM_PACED, item_id=new_id(), room=room, kind="fan_image",
                    user=UserRef(id=name.lower(), display_name=name), age_ms=10.0,
                    source=Source(topic=names.fan_images, partition=0, offset=0), at=utcnow())


async def scalar(api: httpx.AsyncClient, promql: str) -> float | None:
    result = await query(api, promql)
    return float(result[0]["value"][1]) if result else None


async def alert_rules(api: httpx.AsyncClient) -> dict[str, dict]:
    body = (await api.get("/api/v1/rules", params={"type": "alert"})).json()
    return {rule["name"]: rule for group in body["data"]["groups"] for rule in group["rules"]}


def test_alert_operands_are_the_measured_parts_without_thresholds():
    expr = """sum by (job, topic) (idolstream_consumer_lag{topic=~"a|b"}) > 50
          and sum by (job) (deriv(idolstream_consumer_lag[5m])) > bool 0"""
    assert alert_operands(expr) == [
        'sum by (job, topic) (idolstream_consumer_lag{topic=~"a|b"})',
        "sum by (job) (deriv(idolstream_consumer_lag[5m]))",
    ]
    assert alert_operands("a / b unless c >= 0.2") == ["a / b", "c"]
    assert alert_operands('x{a!="1"} != 1e3') == ['x{a!="1"}']
