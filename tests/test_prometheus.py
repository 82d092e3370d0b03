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

from stream.dashboards import alert_operands, expand, label_values, queries, variables
from tests.stack import WAIT_S, next_reply, running_stack

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "grafana" / "alerts" / "idolstream.rules.yml"
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
MATHS = "Can you solve this one from my homework? 12 + 30 x 2 = ?"


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
    ) as stack:
        targets = {"fast-tier": stack.fast_worker.admin_port, "deep-tier": stack.deep_worker.admin_port,
                   "gateway": stack.gateway_port}
        async with running_prometheus(tmp_path, targets) as api:
            # Sample load: plain items, one that escalates to the deep tier, one that is not JSON.
            overlay = await stack.overlay("room-p")
            for seed in range(4):
                await stack.submit("room-p", seed=seed)
            await stack.submit("room-p", seed=9, text=MATHS)
            await stack.client.submit_raw("fan_image", "room-p", b'{"schema_version": 1,')
            answered: set[str] = set()  # tiers of the answers (persona lines are tier "fallback")
            while "deep" not in answered:  # four fast answers, a holding line, then the deep answer
                reply = await next_reply(overlay)
                if reply["role"] == "answer":
                    answered.add(reply["tier"])

            # Each dashboard's variables take their values from what Prometheus scraped, as in Grafana.
            expected = {"tier": answered, "room": {"room-p"}}
            expected_model = {"tier": {"fast", "deep"}}  # the model dashboard's tiers are the model-running ones
            panel_queries: dict[str, str] = {}
            for path in DASHBOARDS:
                dashboard = json.loads(path.read_text())
                want = expected_model if path.name == "model.json" else expected
                values = {}
                for name, variable in variables(dashboard).items():
                    if variable["type"] != "query":
                        continue
                    metric, label = label_values(variable)
                    async with asyncio.timeout(WAIT_S):
                        while not set(found := (await api.get(f"/api/v1/label/{label}/values",
                                                              params={"match[]": metric})).json()["data"]) >= want[name]:
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
            assert len(panel_queries) >= 30
            assert {key.split()[1] for key in alert_queries} == {r["alert"] for g in rules for r in g["rules"]}
            missing = await until_series(api, {**panel_queries, **alert_queries})
            assert not missing, "no series for:\n" + "\n".join(f"{k}: {v}" for k, v in missing.items())

            # The figures are the load's: six items read by the fast tier, one dead letter, the maths
            # item escalated (the random-weight model may escalate others), each escalation read by the deep tier.
            wanted = {
                'sum(idolstream_items_consumed_total{tier="fast"})': 6,
                'sum(idolstream_dead_letters_total{reason="invalid_json"})': 1,
                'sum(idolstream_escalations_total{reason="maths"})': 1,
                'sum(idolstream_items_consumed_total{tier="deep"}) - sum(idolstream_escalations_total)': 0,
            }
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(WAIT_S):
                    while got := {q: v for q, v in [(q, await scalar(api, q)) for q in wanted] if v != wanted[q]}:
                        await asyncio.sleep(0.5)
            assert not got, f"Prometheus has {got}, the load was {wanted}"

            # Prometheus evaluates every alert rule without error; the dead-letter alert sees
            # one item in six (over its 10%) and goes pending, the deadline and lag ones stay quiet.
            names = {rule["alert"] for group in rules for rule in group["rules"]}
            async with asyncio.timeout(WAIT_S):
                while (evaluated := await alert_rules(api))["IdolstreamDeadLettersHigh"]["state"] == "inactive":
                    await asyncio.sleep(0.5)
            assert set(evaluated) == names
            assert {name: r["health"] for name, r in evaluated.items()} == dict.fromkeys(names, "ok"), evaluated
            assert evaluated["IdolstreamDeadLettersHigh"]["state"] == "pending"  # `for: 5m` keeps it from firing yet
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
