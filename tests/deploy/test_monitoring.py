"""``deploy/monitoring`` checked offline: the PrometheusRule's rules pass ``promtool check
rules`` and the unit tests in ``prometheus/rules.test.yaml`` (``promtool test rules``); every
alert fires there (each severity) and stays silent on a healthy fleet, and has its runbook;
the rules and the Grafana dashboard read only metrics the workers export; the custom
resources pass the vendored prometheus-operator CRD schemas; the overlays render them.

promtool comes with Debian's ``prometheus`` package (``make install`` installs it): without
it these tests fail, they never skip."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.utils import floatToGoString

from mesh.observability.slo import FRESHNESS_BUCKETS, REQUEST_BUCKETS
from tests.deploy.test_manifests import (
    DEPLOY,
    OVERLAYS,
    ROOT,
    Doc,
    check_jsonschema,
    kustomize,
    one,
    write_docs,
)

MONITORING = DEPLOY / "monitoring"
RULES = MONITORING / "prometheusrule.yaml"
DASHBOARD = MONITORING / "dashboards" / "dictamesh.json"
UNIT_TESTS = Path(__file__).parent / "prometheus" / "rules.test.yaml"
SCHEMAS = Path(__file__).parent / "prometheus-operator"
RUNBOOKS = ROOT / "docs" / "runbooks"
RUNBOOK_URL = "https://github.com/dictamesh/dictamesh/blob/main/docs/runbooks/{}.md"
RUNBOOK_SECTIONS = ("## What it means", "## Confirm", "## What to do", "## Verify recovery")
HEALTHY = "healthy fleet"
SEVERITIES = {"page", "ticket"}

# Being added to the workers with exactly these names (histograms as exposed).
NEW_METRICS = frozenset(
    {
        *(f"dictamesh_request_duration_seconds{s}" for s in ("_bucket", "_sum", "_count")),
        *(f"dictamesh_freshness_seconds{s}" for s in ("_bucket", "_sum", "_count")),
        "dictamesh_consumer_lag_records",
        "dictamesh_worker_rebalances_total",
        "dictamesh_worker_recovery_remaining_records",
    }
)
# Series Prometheus makes itself, per scrape target.
PROMETHEUS_SERIES = frozenset({"up"})


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, (
        "promtool is missing: `apt-get install prometheus` (Debian's package brings it; "
        "`make install` does it on a new checkout)"
    )
    return found


def run_promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


# --- the metrics the code exports ----------------------------------------------------------

_DEFINITION = re.compile(
    r"\b(Counter|Gauge|Histogram|Summary|Info|Enum|CounterMetricFamily|GaugeMetricFamily|"
    r"HistogramMetricFamily|SummaryMetricFamily|InfoMetricFamily|StateSetMetricFamily)"
    r"\(\s*\"(dictamesh_[a-z0-9_]+)\""
)
_EXPOSED_AS = {
    "Counter": ("_total",),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count"),
    "Summary": ("", "_sum", "_count"),
    "Info": ("_info",),
    "Enum": ("",),
}


def exposed_names(kind: str, name: str) -> set[str]:
    """The series names prometheus_client exposes for a metric defined as ``kind(name)``."""
    base = kind.removesuffix("MetricFamily").replace("StateSet", "Enum")
    if base == "Counter":
        name = name.removesuffix("_total")
    return {name + suffix for suffix in _EXPOSED_AS[base]}


def metrics_in_code() -> set[str]:
    """Every ``dictamesh_*`` series the product defines, found by reading ``mesh/``."""
    names: set[str] = set()
    for path in (ROOT / "mesh").rglob("*.py"):
        for kind, name in _DEFINITION.findall(path.read_text()):
            names |= exposed_names(kind, name)
    return names


def test_the_metrics_are_found_in_the_code() -> None:
    found = metrics_in_code()
    assert {
        "dictamesh_catalog_events_total",
        "dictamesh_source_poll_seconds_bucket",
        "dictamesh_source_state",
        "dictamesh_worker_ready",
        "dictamesh_build_info",
        "dictamesh_auth_refused_total",
    } <= found
    assert len(found) > 40


# --- PromQL: which metric names an expression reads -----------------------------------------

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPINGS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_NAMES = re.compile(r"(?<![\w:.])[a-zA-Z_:][a-zA-Z0-9_:]*(?![\w:]|\s*\()")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
     "offset", "bool", "inf", "nan", "start", "end"}
)  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: what is left once strings, label matchers,
    ranges, groupings and function calls are taken out."""
    text = _RANGES.sub(" ", _MATCHERS.sub(" ", _STRINGS.sub('""', expr)))
    text = _GROUPINGS.sub(" ", text)
    return {name for name in _NAMES.findall(text) if name.lower() not in _KEYWORDS}


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'sum by (namespace, le) (rate(a_bucket{le="0.25", x=~"y|z"}[5m])) / ignoring (kind)'
        ' group_left sum(b_total offset 15m) or label_replace(c, "role", "x", "", "")'
        " unless on (namespace) histogram_quantile(0.99, d:e:rate5m) > bool 1e3"
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c", "d:e:rate5m"}


# --- the PrometheusRule ---------------------------------------------------------------------


def rule_groups(*, annotations: bool = True) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = copy.deepcopy(
        yaml.safe_load(RULES.read_text())["spec"]["groups"]
    )
    if not annotations:
        for group in groups:
            for rule in group["rules"]:
                rule.pop("annotations", None)
    return groups


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def write_rules(path: Path, groups: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def test_the_rules_pass_promtool_check(tmp_path: Path) -> None:
    done = run_promtool("check", "rules", str(write_rules(tmp_path / "rules.yaml", rule_groups())))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_rules_pass_their_unit_tests(tmp_path: Path) -> None:
    write_rules(tmp_path / "rules.yaml", rule_groups(annotations=False))
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    done = run_promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    """The unit tests are not vacuous: a page threshold ten times too high fails them."""
    groups = rule_groups(annotations=False)
    for group in groups:
        for rule in group["rules"]:
            if rule.get("alert") == "DictaMeshGraphQLErrorBudgetBurn":
                rule["expr"] = rule["expr"].replace("14.4 * 0.001", "144 * 0.001")
    write_rules(tmp_path / "rules.yaml", groups)
    shutil.copy(UNIT_TESTS, tmp_path / UNIT_TESTS.name)
    done = run_promtool("test", "rules", UNIT_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "DictaMeshGraphQLErrorBudgetBurn" in done.stdout + done.stderr


def test_every_alert_fires_in_a_test_and_is_silent_on_a_healthy_fleet() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    wanted = {(rule["alert"], rule["labels"]["severity"]) for rule in alerts()}
    fired = {
        (case["alertname"], expected["exp_labels"]["severity"])
        for test in tests
        if test["name"] != HEALTHY
        for case in test.get("alert_rule_test", [])
        for expected in case["exp_alerts"]
    }
    assert fired == wanted
    healthy = one_test(tests, HEALTHY)
    checks = healthy["alert_rule_test"]
    assert all(case["exp_alerts"] == [] for case in checks)
    times = {case["eval_time"] for case in checks}
    names = {name for name, _ in wanted}
    assert {(case["eval_time"], case["alertname"]) for case in checks} == {
        (time, name) for time in times for name in names
    }
    assert "26h" in times  # past the longest window that fits in the test (1d)


def one_test(tests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [test for test in tests if test["name"] == name]
    assert len(found) == 1, name
    return found[0]


def test_every_alert_says_what_it_is_and_links_its_runbook() -> None:
    names = set()
    for rule in alerts():
        name = rule["alert"]
        names.add(name)
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip(), name
        assert len(annotations["description"]) > 40, name
        assert annotations["runbook_url"] == RUNBOOK_URL.format(name)
    runbooks = {path.stem for path in RUNBOOKS.glob("*.md") if path.name != "README.md"}
    assert runbooks == names
    for name in names:
        text = (RUNBOOKS / f"{name}.md").read_text()
        assert text.startswith(f"# {name}\n"), name
        positions = [text.find(section) for section in RUNBOOK_SECTIONS]
        assert -1 not in positions, name
        assert positions == sorted(positions), name


def test_the_rules_read_only_metrics_that_exist() -> None:
    groups = rule_groups()
    recorded = {rule["record"] for group in groups for rule in group["rules"] if "record" in rule}
    known = metrics_in_code() | NEW_METRICS | PROMETHEUS_SERIES | recorded
    for group in groups:
        for rule in group["rules"]:
            unknown = metric_names(str(rule["expr"])) - known
            assert not unknown, (rule.get("record") or rule.get("alert"), unknown)


def le_label(bound: float) -> str:
    """The ``le`` label value prometheus_client exposes for a bucket bound."""
    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def test_the_slo_thresholds_are_bucket_bounds() -> None:
    """``le="…"`` selects one bucket: a threshold that is not a bound selects nothing."""
    bounds = {
        "dictamesh_request_duration_seconds_bucket": {le_label(b) for b in REQUEST_BUCKETS},
        "dictamesh_freshness_seconds_bucket": {le_label(b) for b in FRESHNESS_BUCKETS},
    }
    used: dict[str, set[str]] = {name: set() for name in bounds}
    selector = re.compile(r"(dictamesh_\w+_bucket)\{([^}]*)\}")
    for group in rule_groups():
        for rule in group["rules"]:
            for name, matchers in selector.findall(str(rule["expr"])):
                used[name].update(re.findall(r'\ble="([^"]+)"', matchers))
    assert used["dictamesh_request_duration_seconds_bucket"] == {"0.1", "0.25", "1.0"}
    assert used["dictamesh_freshness_seconds_bucket"] == {"2.0"}
    for name, les in used.items():
        assert les <= bounds[name], (name, les - bounds[name])


# --- the dashboard --------------------------------------------------------------------------

_GRAFANA_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables by values promtool can parse."""
    return _GRAFANA_VARIABLE.sub(
        lambda m: "5m" if m.group(1) in {"__rate_interval", "__interval", "__range"} else "x",
        expr,
    )


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows hold theirs
    return panels


def dashboard_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (f"{panel['title']} {target['refId']}", target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def test_the_dashboard_shows_every_role() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "dictamesh"
    panels = dashboard_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    rows = {panel["title"].split(" (")[0] for panel in panels if panel["type"] == "row"}
    assert {"Capture", "Catalog", "Postgres mirror", "GraphQL and REST"} <= rows
    queries = dashboard_queries()
    assert len(queries) > 30
    assert all(expr.strip() for _, expr in queries)
    read = set().union(*(metric_names(expr) for _, expr in queries))
    assert {
        "dictamesh_source_state",
        "dictamesh_consumer_lag_records",
        "dictamesh_mirror_rows_total",
        "dictamesh_cache_lookups_total",
        "dictamesh_graphql_batches_total",
        "dictamesh_freshness_seconds_bucket",
    } <= read


def test_the_dashboard_reads_only_metrics_that_exist() -> None:
    known = metrics_in_code() | NEW_METRICS
    for where, expr in dashboard_queries():
        unknown = metric_names(grafana_to_promql(expr)) - known
        assert not unknown, (where, unknown)
    variables = json.loads(DASHBOARD.read_text())["templating"]["list"]
    for variable in variables:
        if variable["type"] == "query":
            metric = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["definition"])
            assert metric, variable["name"]
            assert metric.group(1) in known, variable["name"]


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    rules = [
        {"record": f"dashboard:query_{n}", "expr": grafana_to_promql(expr)}
        for n, (_, expr) in enumerate(dashboard_queries())
    ]
    path = write_rules(tmp_path / "dashboard.yaml", [{"name": "dashboard", "rules": rules}])
    done = run_promtool("check", "rules", str(path))
    assert done.returncode == 0, done.stdout + done.stderr


# --- the rendered resources -----------------------------------------------------------------


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {overlay: kustomize(DEPLOY / overlay) for overlay in OVERLAYS}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_overlays_ship_the_monitoring(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    namespace = one(docs, "StatefulSet")["metadata"]["namespace"]
    dashboard = one(docs, "ConfigMap", "dictamesh-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["data"]["dictamesh.json"] == DASHBOARD.read_text()
    assert one(docs, "PrometheusRule")["spec"] == yaml.safe_load(RULES.read_text())["spec"]
    monitor = one(docs, "ServiceMonitor")
    for doc in (dashboard, monitor, one(docs, "PrometheusRule")):
        assert doc["metadata"]["namespace"] == namespace
    # It scrapes each worker once: through the peers Service (ready or not), not the client one.
    services = [d for d in docs if d["kind"] == "Service"]
    wanted = monitor["spec"]["selector"]["matchLabels"].items()
    selected = [s for s in services if wanted <= s["metadata"].get("labels", {}).items()]
    assert [s["metadata"]["name"] for s in selected] == ["dictamesh-worker-peers"]
    peers = selected[0]
    assert peers["spec"]["publishNotReadyAddresses"] is True
    ports = {port["name"] for port in peers["spec"]["ports"]}
    assert {endpoint["port"] for endpoint in monitor["spec"]["endpoints"]} == {"http"} <= ports
    assert {endpoint["path"] for endpoint in monitor["spec"]["endpoints"]} == {"/metrics"}
    # The rules find the targets as job="dictamesh".
    assert peers["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "dictamesh"
    assert 'up{job="dictamesh"}' in RULES.read_text()


def test_the_custom_resources_pass_the_crd_schemas(
    rendered: dict[str, list[Doc]], tmp_path: Path
) -> None:
    for overlay, docs in rendered.items():
        for kind in ("ServiceMonitor", "PrometheusRule"):
            paths = write_docs(tmp_path / overlay.replace("/", "-") / kind, [one(docs, kind)])
            done = check_jsonschema(SCHEMAS / f"{kind.lower()}.schema.json", paths)
            assert done.returncode == 0, done.stdout + done.stderr
    docs = rendered["overlays/prod"]
    monitor = copy.deepcopy(one(docs, "ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    rule = copy.deepcopy(one(docs, "PrometheusRule"))
    rule["spec"]["groups"][0]["rules"][0]["alert"] = "BothRecordAndAlert"
    for kind, broken in (("ServiceMonitor", monitor), ("PrometheusRule", rule)):
        paths = write_docs(tmp_path / "broken" / kind, [broken])
        done = check_jsonschema(SCHEMAS / f"{kind.lower()}.schema.json", paths)
        assert done.returncode != 0, kind
