"""The shipped alert rules and dashboard refer only to metrics the code exports.

Operators install cluster/monitoring/prometheus-rules.yaml and
cluster/monitoring/grafana-dashboard.json as they are. An alert on a metric
name or label that longserve/server/monitoring/metrics.py does not export never fires, and a
panel on one stays empty, with nothing to say so. These tests read both files
offline (no Ray is started) and check every PromQL expression against
longserve.server.monitoring.metrics.METRICS: names (with Ray's `ray_` prefix and the histogram
suffixes `_bucket`, `_sum`, `_count`), labels in `{...}` matchers, `by (...)`
style groupings and templates, and that every exported metric is used.
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from longserve.server.monitoring.metrics import METRICS

MONITORING = Path(__file__).resolve().parent.parent / "cluster" / "monitoring"
RULES_FILE = MONITORING / "prometheus-rules.yaml"
DASHBOARD_FILE = MONITORING / "grafana-dashboard.json"

HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")
STRING = re.compile(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'" r"|`[^`]*`")
SERIES = re.compile(r"\bray_longserve_\w+")
SELECTOR = re.compile(r"\b(ray_longserve_\w+)\s*\{([^}]*)\}")
MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
RULE_TEMPLATE_LABEL = re.compile(r"\$labels\.(\w+)")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


@dataclass
class Query:
    where: str  # for messages and test ids: "rule LongserveJobBacklog", "panel 'Slow tasks' A"
    expr: str
    template: str  # text whose label references must exist: annotations or legendFormat
    template_label: re.Pattern


# --- reading the files --------------------------------------------------------


def load_rules() -> dict:
    return yaml.safe_load(RULES_FILE.read_text())


def load_dashboard() -> dict:
    return json.loads(DASHBOARD_FILE.read_text())


def all_rules() -> list[dict]:
    return [rule for group in load_rules()["groups"] for rule in group["rules"]]


def graph_panels() -> list[dict]:
    """Every panel but rows, including panels nested in collapsed rows."""
    panels = []
    for panel in load_dashboard()["panels"]:
        if panel.get("type") == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    return panels


def queries() -> list[Query]:
    found = [
        Query(f"rule {rule['alert']}", rule["expr"], json.dumps(rule.get("annotations", {})), RULE_TEMPLATE_LABEL)
        for rule in all_rules()
    ]
    for panel in graph_panels():
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r} {target.get('refId', '')}".strip()
            found.append(Query(where, target["expr"], target.get("legendFormat", ""), LEGEND_LABEL))
    return found


# --- reading PromQL -------------------------------------------------------------


def without_strings(expr: str) -> str:
    """The expression with every quoted string emptied, so label values don't look like PromQL."""
    return STRING.sub('""', expr)


def split_series(series: str) -> tuple[str, str]:
    """`ray_longserve_latency_seconds_bucket` -> ("longserve_latency_seconds", "_bucket")."""
    name = series.removeprefix("ray_")
    suffix = HISTOGRAM_SUFFIX.search(name)
    if suffix and HISTOGRAM_SUFFIX.sub("", name) in METRICS:
        return HISTOGRAM_SUFFIX.sub("", name), suffix.group(0)
    return name, ""


def series_in(expr: str) -> list[str]:
    return SERIES.findall(without_strings(expr))


def labels_of(series: str) -> set[str]:
    """The labels a scraped series carries: the metric's tag keys, plus `le` on histogram buckets."""
    name, suffix = split_series(series)
    tags = set(METRICS[name][2])
    return tags | {"le"} if suffix == "_bucket" else tags


def labels_common_to(expr: str) -> set[str]:
    """Labels every series of the expression carries: the ones it may group, join or show by."""
    return set.intersection(*(labels_of(series) for series in series_in(expr)))


def grouping_labels(expr: str) -> set[str]:
    return {
        label.strip()
        for group in GROUPING.findall(without_strings(expr))
        for label in group.split(",")
        if label.strip()
    }


# --- structure --------------------------------------------------------------------


def test_rule_file_structure():
    rules = load_rules()
    assert rules["groups"], "no rule groups"
    for group in rules["groups"]:
        assert group.get("name"), group
        assert group.get("rules"), f"group {group['name']} has no rules"
    names = [rule["alert"] for rule in all_rules()]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"


@pytest.mark.parametrize("rule", all_rules(), ids=lambda rule: rule.get("alert", "?"))
def test_each_rule_is_complete(rule):
    for key in ("alert", "expr", "for"):
        assert rule.get(key), f"{rule.get('alert')}: no {key}"
    assert DURATION.match(str(rule["for"])), f"{rule['alert']}: for: {rule['for']!r} is not a duration"
    assert rule.get("labels", {}).get("severity"), f"{rule['alert']}: no labels.severity"
    annotations = rule.get("annotations", {})
    assert annotations.get("summary") and annotations.get("description"), f"{rule['alert']}: no summary/description"
    assert "$labels.model" in annotations["summary"], f"{rule['alert']}: summary does not name the model"


def test_dashboard_structure():
    dashboard = load_dashboard()
    assert dashboard["title"] and dashboard["uid"]
    assert dashboard["schemaVersion"] >= 36
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["definition"] == "label_values(ray_longserve_requests_total, model)"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"


@pytest.mark.parametrize("panel", graph_panels(), ids=lambda panel: panel.get("title", "?"))
def test_each_panel_has_a_title_and_queries(panel):
    assert panel.get("title"), panel
    assert panel.get("targets"), f"panel {panel['title']!r} has no targets"
    for target in panel["targets"]:
        assert target.get("expr", "").strip(), f"panel {panel['title']!r}: a target without expr"
        assert SELECTOR.search(target["expr"]), f"panel {panel['title']!r}: no longserve metric in {target['expr']}"
    assert panel["datasource"]["uid"] == "${datasource}"


# --- metric names and labels ----------------------------------------------------------


@pytest.mark.parametrize("query", queries(), ids=lambda query: query.where)
def test_expression_uses_only_exported_metrics(query):
    assert series_in(query.expr), f"{query.where}: no ray_longserve_ metric in {query.expr}"
    for series in series_in(query.expr):
        name, suffix = split_series(series)
        assert name in METRICS, (
            f"{query.where}: {series} is not exported: no {name} in longserve/server/monitoring/metrics.py"
        )
        kind = METRICS[name][0]
        if suffix:
            assert kind == "histogram", f"{query.where}: {series}, but {name} is a {kind}, not a histogram"
        else:
            assert kind != "histogram", f"{query.where}: histogram {series} needs _bucket, _sum or _count"


@pytest.mark.parametrize("query", queries(), ids=lambda query: query.where)
def test_expression_uses_only_exported_labels(query):
    expr = without_strings(query.expr)
    for series, matchers in SELECTOR.findall(expr):
        unknown = set(MATCHER_LABEL.findall(matchers)) - labels_of(series)
        assert not unknown, f"{query.where}: {series} has no label(s) {sorted(unknown)}"
    common = labels_common_to(query.expr)
    unknown = grouping_labels(query.expr) - common
    assert not unknown, f"{query.where}: groups by {sorted(unknown)}, not labels of every series in it"
    unknown = set(query.template_label.findall(query.template)) - common
    assert not unknown, f"{query.where}: template shows label(s) {sorted(unknown)} the series lack"


def test_model_variable_uses_an_exported_label():
    variable = next(var for var in load_dashboard()["templating"]["list"] if var["name"] == "model")
    series, label = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", variable["definition"]).groups()
    assert label in labels_of(series)


def test_dashboard_queries_follow_the_model_variable():
    for panel in graph_panels():
        for target in panel["targets"]:
            for series, matchers in SELECTOR.findall(target["expr"]):
                assert 'model=~"$model"' in matchers, f"panel {panel['title']!r}: {series} ignores $model"


def test_every_exported_metric_is_monitored():
    used = {split_series(series)[0] for query in queries() for series in series_in(query.expr)}
    missing = set(METRICS) - used
    assert not missing, f"metrics neither alerted on nor on the dashboard: {sorted(missing)}"
