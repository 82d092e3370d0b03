"""`make check-grafana` in the suite: the dashboards are sound and their queries parse, the
alert rules parse, and each fires when it should."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_make_check_grafana_passes():
    done = subprocess.run(["make", "-s", "check-grafana"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dashboards: 4 sound" in done.stdout
    assert "SUCCESS: 12 rules found" in done.stdout
    assert "SUCCESS" in done.stdout.split("Unit Testing")[1], "promtool test rules ran and passed"


def test_the_rule_tests_would_catch_an_alert_that_never_fires(tmp_path):
    rules = (ROOT / "grafana" / "alerts" / "idolstream.rules.yml").read_text()
    broken = rules.replace("unless sum(rate(idolstream_replies_total", "and sum(rate(idolstream_replies_total")
    assert broken != rules
    (tmp_path / "idolstream.rules.yml").write_text(broken)
    tests = (ROOT / "grafana" / "alerts" / "idolstream.rules.test.yml").read_text()
    (tmp_path / "idolstream.rules.test.yml").write_text(tests)
    done = subprocess.run(["promtool", "test", "rules", "idolstream.rules.test.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "IdolstreamNoRepliesLeaving" in done.stdout + done.stderr


def test_every_alert_has_a_rule_test_in_which_it_fires():
    rules = yaml.safe_load((ROOT / "grafana" / "alerts" / "idolstream.rules.yml").read_text())
    tests = yaml.safe_load((ROOT / "grafana" / "alerts" / "idolstream.rules.test.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    fired = {case["alertname"] for test in tests["tests"] for case in test.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    assert alerts - fired == set(), "alerts no rule test sees firing"


def _check_with_overview(tmp_path, change) -> subprocess.CompletedProcess:
    """grafana/check.py on a copy of grafana/ whose overview dashboard `change` has altered."""
    shutil.copytree(ROOT / "grafana", tmp_path / "grafana")
    path = tmp_path / "grafana" / "dashboards" / "overview.json"
    dashboard = json.loads(path.read_text())
    change(dashboard)
    path.write_text(json.dumps(dashboard))
    return subprocess.run([sys.executable, "grafana/check.py", str(tmp_path / "grafana")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def _broken(panel: dict) -> None:
    panel["targets"][0]["expr"] = "sum(rate(idolstream_replies_total[$__rate_interval])"  # one ) short


def _unknown_variable(panel: dict) -> None:
    panel["targets"][0]["expr"] = 'sum(idolstream_ws_clients{pod=~"$pod"})'


def _fixed_datasource(panel: dict) -> None:
    panel["datasource"] = {"type": "prometheus", "uid": "prometheus"}


@pytest.mark.parametrize(("mutate", "complaint"), [
    (_broken, "does not parse"),
    (_unknown_variable, "uses undefined $pod"),
    (_fixed_datasource, "datasource is not ${datasource}"),
])
def test_the_dashboard_check_names_the_panel_a_mistake_is_in(tmp_path, mutate, complaint):
    def change(dashboard):
        mutate(next(p for p in dashboard["panels"] if p.get("title") == "Items in and replies out"))

    done = _check_with_overview(tmp_path, change)
    assert done.returncode == 1
    problems = [line for line in done.stdout.splitlines() if line.startswith("PROBLEM")]
    assert len(problems) == 1 and "Items in and replies out" in problems[0] and complaint in problems[0], done.stdout


def test_a_dashboard_without_its_room_filter_is_refused(tmp_path):
    def change(dashboard):
        dashboard["templating"]["list"] = [v for v in dashboard["templating"]["list"] if v["name"] != "room"]

    done = _check_with_overview(tmp_path, change)
    assert done.returncode == 1 and "no $room variable" in done.stdout


def test_two_panels_with_one_title_are_refused(tmp_path):
    def change(dashboard):
        next(p for p in dashboard["panels"] if p.get("title") == "Escalations by reason")["title"] = "Lag"

    done = _check_with_overview(tmp_path, change)
    assert done.returncode == 1 and "Lag: the title is used twice" in done.stdout, done.stdout
