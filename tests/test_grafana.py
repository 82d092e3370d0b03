"""`make check-grafana` in the suite: the alert rules parse, and each fires when it should."""

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_make_check_grafana_passes():
    done = subprocess.run(["make", "-s", "check-grafana"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout
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
