"""Check the Grafana dashboards and provisioning offline (run by `make check-grafana`).

Each dashboard must be sound once imported (see stream.dashboards.problems) and declare
the variables operators filter by; every panel query, with its variables filled in, must
parse as PromQL: they are handed to `promtool check rules` as recording rules.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from stream.dashboards import expand, label_values, problems, queries, variables

HERE = Path(__file__).resolve().parent
# The variables each dashboard must offer: a datasource, and the tier (and room, model, persona) filters.
REQUIRED = {
    "overview.json": ("datasource", "tier", "room"),
    "model.json": ("datasource", "tier"),
    "safety.json": ("datasource", "tier"),
    "fans.json": ("datasource", "tier", "model", "persona"),
}


def placeholder_values(dashboard: dict) -> dict[str, str]:
    """A value for each variable that keeps regex matchers valid (`tier=~"$tier"`)."""
    return {name: ".+" for name in variables(dashboard)}


def variable_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(variable, PromQL) for each query variable: label_values(metric, label) asks for the metric."""
    return [(name, label_values(v)[0]) for name, v in variables(dashboard).items() if v.get("type") == "query"]


def check_provisioning(root: Path) -> list[str]:
    found = []
    sources = yaml.safe_load((root / "provisioning/datasources/idolstream.yml").read_text())
    if not any(d.get("type") == "prometheus" for d in sources.get("datasources", [])):
        found.append("provisioning: no Prometheus datasource")
    providers = yaml.safe_load((root / "provisioning/dashboards/idolstream.yml").read_text())
    if not all(p.get("type") == "file" and p.get("options", {}).get("path") for p in providers.get("providers", [])):
        found.append("provisioning: every dashboard provider needs type file and options.path")
    return found


def promql_problems(exprs: list[tuple[str, str]]) -> list[str]:
    """Syntax errors, found by promtool, each named by where its query comes from."""

    def run(batch: list[tuple[str, str]]) -> subprocess.CompletedProcess:
        rules = {"groups": [{"name": "dashboards", "rules": [
            {"record": f"dashboard:query_{i}", "expr": expr} for i, (_, expr) in enumerate(batch)
        ]}]}
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "dashboards.rules.yml"
            path.write_text(yaml.safe_dump(rules, sort_keys=False))
            return subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)

    if run(exprs).returncode == 0:
        return []
    found = []
    for where, expr in exprs:  # find the culprits one by one
        done = run([(where, expr)])
        if done.returncode != 0:
            found.append(f"{where}: {expr!r} does not parse: {(done.stdout + done.stderr).strip()}")
    return found


def main(root: Path = HERE) -> int:
    found = check_provisioning(root)
    exprs: list[tuple[str, str]] = []
    paths = sorted((root / "dashboards").glob("*.json"))
    for path in paths:
        dashboard = json.loads(path.read_text())
        found += problems(dashboard, REQUIRED.get(path.name, ("datasource",)))
        values = placeholder_values(dashboard)
        for query in queries(dashboard):
            try:
                exprs.append((f"{path.name} / {query.panel} / {query.ref_id}", expand(query.expr, values)))
            except KeyError:
                continue  # an undefined variable: problems() named it
        exprs += [(f"{path.name} / ${name}", expr) for name, expr in variable_queries(dashboard)]
    if not paths:
        found.append("no dashboards under grafana/dashboards")
    found += promql_problems(exprs)
    for problem in found:
        print(f"PROBLEM {problem}")
    if found:
        return 1
    print(f"dashboards: {len(paths)} sound, {len(exprs)} queries parse as PromQL; provisioning sound")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE))
