"""What the Grafana dashboards ask Prometheus, read out of their JSON (pure, no I/O).

`make check-grafana` uses this to check the dashboards' shape and their PromQL syntax
offline; the Prometheus test uses it to run every panel query, with its variables
filled in, against a real Prometheus scraping a running stack.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

DATASOURCE_REF = "${datasource}"
# Grafana's own interval variables, as a fixed query window outside Grafana.
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((?:(.+),\s*)?(\w+)\)$")


@dataclass(frozen=True)
class PanelQuery:
    panel: str  # the panel's title
    ref_id: str
    expr: str  # as written, with Grafana variables


def panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel, those folded inside rows included; rows themselves are not panels."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(panel.get("title", ""), target.get("refId", ""), target.get("expr", ""))
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def variables(dashboard: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def label_values(variable: Mapping[str, Any]) -> tuple[str, str]:
    """(metric selector, label) of a query variable's `label_values(metric, label)`; a query
    without a metric selects every idolstream series that has the label."""
    query = variable.get("query", {})
    text = ((query.get("query") if isinstance(query, dict) else query) or "").strip()
    match = _LABEL_VALUES.match(text)
    if match is None:
        raise ValueError(
            f"${variable.get('name')}: only label_values(metric, label) queries are supported, got {text!r}"
        )
    label = match.group(2)
    return match.group(1) or f'{{__name__=~"idolstream_.+", {label}!=""}}', label


def used_variables(text: str) -> set[str]:
    return {braced or bare for braced, bare in _VARIABLE.findall(text)}


def expand(expr: str, values: Mapping[str, str]) -> str:
    """The query with each `$var`/`${var}` replaced; KeyError names a variable without a value."""
    known = {**BUILTIN_VARIABLES, **values}

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in known:
            raise KeyError(name)
        return known[name]

    return _VARIABLE.sub(value, expr)


def problems(dashboard: Mapping[str, Any], required_variables: tuple[str, ...] = ("datasource",)) -> list[str]:
    """What would make the dashboard break or mislead once imported; empty when it is sound."""
    found: list[str] = []
    title = dashboard.get("title") or "?"
    for key in ("uid", "title", "schemaVersion"):
        if not dashboard.get(key):
            found.append(f"{title}: no {key}")
    declared = variables(dashboard)
    for name in required_variables:
        if name not in declared:
            found.append(f"{title}: no ${name} variable")
    source = declared.get("datasource")
    if source is not None and (source.get("type") != "datasource" or source.get("query") != "prometheus"):
        found.append(f"{title}: $datasource must be a Prometheus datasource variable")
    for name, variable in declared.items():
        queried = variable.get("datasource", {}).get("uid")
        if name != "datasource" and variable.get("type") == "query" and queried != DATASOURCE_REF:
            found.append(f"{title}: variable ${name} does not query {DATASOURCE_REF}")
    ids: set[int] = set()
    titles: set[str] = set()
    for panel in panels(dashboard):
        where = f"{title} / {panel.get('title') or '(untitled panel)'}"
        if not panel.get("title"):
            found.append(f"{where}: no title")
        elif panel["title"] in titles:  # operators (and the checks) name a panel by its title
            found.append(f"{where}: the title is used twice")
        titles.add(panel.get("title"))
        if panel.get("id") in ids:
            found.append(f"{where}: panel id {panel.get('id')} is used twice")
        ids.add(panel.get("id"))
        if "gridPos" not in panel:
            found.append(f"{where}: no gridPos")
        if panel.get("datasource", {}).get("uid") != DATASOURCE_REF:
            found.append(f"{where}: datasource is not {DATASOURCE_REF}")
        targets = panel.get("targets", [])
        if not targets and panel.get("type") != "text":
            found.append(f"{where}: no query")
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs):
            found.append(f"{where}: refIds repeat")
        for target in targets:
            expr = target.get("expr", "")
            if not expr.strip():
                found.append(f"{where}: query {target.get('refId')} is empty")
            for name in used_variables(expr) - set(declared) - set(BUILTIN_VARIABLES):
                found.append(f"{where}: query {target.get('refId')} uses undefined ${name}")
    return found


_SPLITTERS = re.compile(r"\s(?:and|or|unless)\s|(?<![=!<>])(?:==|!=|>=|<=|>|<)(?:\s*bool)?(?![=~])")
_NUMBER = re.compile(r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?\s*$", re.IGNORECASE)


def alert_operands(expr: str) -> list[str]:
    """The measured parts of an alert expression: split at top-level comparisons and set
    operators, thresholds dropped. A healthy stack returns no series for the whole alert
    (that is the point of it) but must return series for each of these."""
    parts: list[str] = []
    depth, start, i = 0, 0, 0
    quote: str | None = None
    while i < len(expr):
        ch = expr[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'`":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif depth == 0 and (match := _SPLITTERS.match(expr, i)):
            parts.append(expr[start:i])
            start = i = match.end()
            continue
        i += 1
    parts.append(expr[start:])
    return [part.strip() for part in parts if part.strip() and not _NUMBER.match(part)]
