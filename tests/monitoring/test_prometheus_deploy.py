"""deploy/: the built-in alert rules as Prometheus alerting rules and a Grafana dashboard of the
overview's charts. Both parse, match the rules and charts they copy, and ask only for metric
names that /metrics exposes."""

import json
import re
import shutil
import subprocess

import pytest
import yaml
from django.conf import settings
from django.test import Client, override_settings
from prometheus_client.parser import text_string_to_metric_families

from monitoring.alerts.rules import default_rules
from monitoring.cache import gate
from monitoring.dashboard.pages import CHARTS
from monitoring.metrics import store
from monitoring.metrics.recorder import recorder
from tests.conftest import missing_service
from tests.monitoring.metrics_support import ROOT, TOKEN, bearer, reset_metrics

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "opsdash.json"
KEYWORDS = {"and", "or", "unless", "bool", "offset"}


@pytest.fixture(autouse=True)
def fresh_window():
    reset_metrics()
    with override_settings(MONITORING_TOKEN=TOKEN):
        yield
    reset_metrics()


def alert_rules() -> dict[str, dict]:
    document = yaml.safe_load(ALERTS.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    assert [sorted(rule) for rule in rules] == [
        ["alert", "annotations", "expr", "for", "labels"]
    ] * (len(rules))
    return {rule["alert"]: rule for rule in rules}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the panels, and the job variable's metric."""
    queries = [t["expr"] for panel in dashboard()["panels"] for t in panel["targets"]]
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["query"]["query"])
            queries.append(match[1])
    return queries


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers,
    ranges, grouping clauses, Grafana variables, functions, keywords and numbers are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\$\w+", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", text)
    return {name for name in names if name not in KEYWORDS and not re.fullmatch(r"inf|nan", name)}


def exposed_names() -> set[str]:
    """Every sample name /metrics writes once requests, cache lookups, Redis calls and a
    reachable Redis are there."""
    recorder.record("webhook_sms", 200, 0.012, 1)
    recorder.record("webhook_sms", 503, 0.2, 1)
    gate.stats.count("leads", "hits", 3)
    gate.stats.count("leads", "misses")
    gate.stats.redis_call("leads", 0.0004)
    store.flush()
    response = Client().get("/metrics", headers=bearer())
    assert response.status_code == 200
    families = text_string_to_metric_families(response.content.decode())
    return {sample.name for family in families for sample in family.samples}


def test_it_ships_every_built_in_rule_with_its_default_threshold_and_duration():
    rules = alert_rules()

    assert sorted(rules) == sorted(rule.name for rule in default_rules())
    for rule in default_rules():
        shipped = rules[rule.name]
        assert shipped["labels"] == {"severity": rule.severity}, rule.name
        assert shipped["for"] == duration(rule.for_seconds), rule.name
        comparison = f"{'>' if rule.above else '<'} {rule.threshold:g}"
        assert re.search(rf"\s{re.escape(comparison)}$", judged(shipped["expr"])), rule.name
        assert shipped["annotations"]["summary"] == rule.summary.format(threshold=rule.threshold)


def judged(expression: str) -> str:
    """The part of a rule's expression before its first `and` (the value judged)."""
    return expression.split("\nand ")[0].strip()


def duration(seconds: int) -> str:
    return f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"


def test_it_judges_only_enough_traffic_as_the_built_in_rules_do():
    rules = alert_rules()

    for name in ("cache_hit_rate_critical", "cache_hit_rate_low"):
        assert f">= {settings.ALERT_HIT_RATE_MIN_LOOKUPS}\n" in rules[name]["expr"], name
        assert "[5m]" in rules[name]["expr"], name
    for name in ("response_time_critical", "response_time_high", "error_rate_critical"):
        assert f">= {settings.ALERT_MIN_REQUESTS}\n" in rules[name]["expr"], name
        assert "[1m]" in rules[name]["expr"], name
        not_traffic = re.findall(r'group!="(\w+)"', rules[name]["expr"])
        assert set(not_traffic) == set(settings.METRICS_NOT_TRAFFIC), name


def test_it_draws_the_overview_charts_in_the_grafana_dashboard():
    panels = dashboard()["panels"]

    assert [(p["title"], [t["legendFormat"] for t in p["targets"]]) for p in panels] == [
        (title, series) for _, title, _, series in CHARTS
    ]
    assert {p["datasource"]["uid"] for p in panels} == {"${datasource}"}
    assert len({p["id"] for p in panels}) == len(panels)


@pytest.mark.django_db(transaction=True)
def test_it_asks_only_for_metric_names_that_metrics_exposes(shared_redis):
    exposed = exposed_names()
    expressions = [rule["expr"] for rule in alert_rules().values()] + dashboard_queries()

    used = set()
    for expression in expressions:
        names = metric_names(expression)
        assert names, f"no metric in {expression!r}"
        used |= names

    assert used - exposed == set()
    assert used == {
        "opsdash_cache_enabled",
        "opsdash_cache_operations_total",
        "opsdash_cache_redis_calls_total",
        "opsdash_cache_redis_seconds_total",
        "opsdash_redis_memory_bytes",
        "opsdash_redis_ping_seconds",
        "opsdash_redis_up",
        "opsdash_request_duration_seconds_bucket",
        "opsdash_request_duration_seconds_count",
        "opsdash_request_duration_seconds_sum",
        "opsdash_requests_total",
    }


def promtool(*args: str) -> None:
    path = shutil.which("promtool")
    if path is None:
        missing_service("promtool (Debian's prometheus package)")
    result = subprocess.run([path, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_passes_promtool_on_the_rules_and_their_unit_tests():
    promtool("check", "rules", str(ALERTS))
    promtool("test", "rules", str(ALERTS_TEST))


def test_it_writes_the_dashboard_queries_in_valid_promql(tmp_path):
    """promtool parses each panel's query as a recording rule (Grafana's variables given
    values), so a typo in the dashboard fails here, not in someone's Grafana."""
    rules = [
        {"record": f"opsdash_dashboard:panel{panel['id']}:{target['refId']}", "expr": expr}
        for panel in dashboard()["panels"]
        for target in panel["targets"]
        for expr in [target["expr"].replace("$__rate_interval", "1m").replace("$job", "opsdash")]
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    promtool("check", "rules", str(path))
