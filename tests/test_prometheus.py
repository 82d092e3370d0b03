"""The dashboards and alerts against a real Prometheus (Debian's package, installed by
`make setup`) scraping a running stack under sample load: every panel query and every
alert's measured parts return series, and Prometheus evaluates every rule without error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from producers.samples import sample_item
from consumers.console import console_service
from stream.dashboards import alert_operands, expand, label_values, queries, variables
from stream.settings import ConsoleSettings
from tests.stack import WAIT_S, next_reply, running_stack

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
# The variables' values each dashboard must find: the overview's tiers are those that answered.
MODEL_TIERS = {"tier": {"fast", "deep"}}
EXPECTED = {"model.json": MODEL_TIERS, "safety.json": MODEL_TIERS}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def running_prometheus(tmp_path: Path, targets: dict[str, int]):
    """Prometheus scraping each job's 127.0.0.1 port every second, with the alert rules loaded."""
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
            async with asyncio.timeout(WAIT_S):  # every target scraped once before the test's load
                while len(await query(api, "up == 1")) < len(targets):
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
    kafka_bootstrap, topic_prefix, fast_runner, deep_runner, tmp_path
):
    async with running_stack(
        kafka_bootstrap, topic_prefix, fast_runner, deep_runner, {"deep_admin_port": 0},
        admin_port=0, deep_deadline_ms=60_000,
        # The persona checks on: random replies to fans who wrote English are seldom English, so
        # they miss and are regenerated (on time whatever the machine's load).
        check_replies=True, regenerate_within_ms=60_000,
    ) as stack, console_service(
        ConsoleSettings(kafka_bootstrap=kafka_bootstrap, topic_prefix=topic_prefix, topic_partitions=2,
                        console_port=0, console_secret="console-secret-for-tests-only-0123456789"),
        kafka_bootstrap,
    ) as (_, console_port):
        targets = {"fast-tier": stack.fast_worker.admin_port, "deep-tier": stack.deep_worker.admin_port,
                   "gateway": stack.gateway_port, "console": console_port}
        async with running_prometheus(tmp_path, targets) as api:
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
            answered: set[str] = set()  # tiers of the answers (persona lines are tier "fallback")
            while "deep" not in answered:  # the fast answers (or persona lines), holding lines, the deep answer
                reply = await next_reply(overlay)
                if reply["role"] == "answer":
                    answered.add(reply["tier"])

            # Each dashboard's variables take their values from what Prometheus scraped, as in Grafana.
            panel_queries: dict[str, str] = {}
            for path in DASHBOARDS:
                dashboard = json.loads(path.read_text())
                want = EXPECTED.get(path.name, {"tier": answered, "room": {"room-p"}})
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
            assert len(panel_queries) >= 45 and "safety.json" in {p.name for p in DASHBOARDS}
            assert {key.split()[1] for key in alert_queries} == {r["alert"] for g in rules for r in g["rules"]}
            missing = await until_series(api, {**panel_queries, **alert_queries})
            assert not missing, "no series for:\n" + "\n".join(f"{k}: {v}" for k, v in missing.items())

            # The figures are the load's: every item read by the fast tier, the dead letters, the maths
            # item escalated (the random-weight model may escalate others), each escalation read by the deep
            # tier; the raid's items blocked by the word filter and one held for review, by category; the
            # held item's answer (and any holding line or deep answer it got) held; replies that missed
            # the persona checks, and their regenerations.
            wanted = {
                'sum(idolstream_items_consumed_total{tier="fast"})': RAID + 6 + INVALID,
                'sum(idolstream_dead_letters_total{reason="invalid_json"})': INVALID,
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
            names = {rule["alert"] for group in rules for rule in group["rules"]}
            raised = ("IdolstreamDeadLettersHigh", "IdolstreamFanItemsBlockedSurge")
            async with asyncio.timeout(WAIT_S):
                while "inactive" in {(evaluated := await alert_rules(api))[name]["state"] for name in raised}:
                    await asyncio.sleep(0.5)
            assert set(evaluated) == names
            assert {name: r["health"] for name, r in evaluated.items()} == dict.fromkeys(names, "ok"), evaluated
            assert evaluated["IdolstreamDeadLettersHigh"]["state"] == "pending"
            assert evaluated["IdolstreamFanItemsBlockedSurge"]["state"] in ("pending", "firing")
            assert evaluated["IdolstreamDeepDeadlineMisses"]["state"] == "inactive"
            assert evaluated["IdolstreamConsumerLagGrowing"]["state"] == "inactive"


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
