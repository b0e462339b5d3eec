"""The chart's PrometheusRule: off by default; each alert reads series the operator exports.

Every metric an alert's expression names must be registered in operator/metrics.py (read from
its source, with its labels), so that renaming a metric, or a label, fails here instead of
leaving an alert that never fires. AgentWorkerOperatorDown must select the scrape targets the
chart's own ServiceMonitor makes. When `promtool` (Prometheus's; not on PyPI, Debian's
`prometheus` package has it) is on the PATH, it checks the rules and runs them on made-up series.
These tests only run `helm template`: they need the rig's helm build, not a running rig.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentworker_operator import metrics
from tests.e2e.chart.conftest import Render, documents, find, write_values

pytestmark = pytest.mark.timeout(60)

ALERTS = {
    "AgentWorkerFleetFull",
    "AgentWorkerWorkersUnreadable",
    "AgentWorkerDegraded",
    "AgentWorkerCallsRecovered",
    "AgentWorkerOperatorDown",
}
ON = (
    "--set=prometheus.prometheusRule.enabled=true",
    "--set=prometheus.serviceMonitor.enabled=true",
)
TARGET_LABELS = {"job", "namespace", "service", "instance", "pod", "container", "endpoint"}
"""Labels Prometheus gives every series of a ServiceMonitor's target."""
PROMETHEUS_OWN = {"up": set[str]()}
"""Series Prometheus makes itself for each target (their labels are the target's)."""
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "sum", "min", "max", "avg", "count", "absent", "increase", "rate",
}  # fmt: skip
"""The PromQL words the chart's expressions may use (an unknown one is taken for a metric)."""


def exported() -> dict[str, set[str]]:
    """Every series name operator/metrics.py registers (counters with `_total`, histograms with
    `_bucket`, `_sum`, `_count`), with its label names, from the module's source."""
    tree = ast.parse(Path(metrics.__file__).read_text())
    suffixes = {"Gauge": [""], "Counter": ["_total"], "Histogram": ["_bucket", "_sum", "_count"]}
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        if node.func.id not in suffixes or not node.args:
            continue
        name = str(ast.literal_eval(node.args[0])).removesuffix("_total")  # client adds it
        labels = ast.literal_eval(node.args[2]) if len(node.args) > 2 else []
        for suffix in suffixes[node.func.id]:
            found[f"{name}{suffix}"] = set(labels) | ({"le"} if suffix == "_bucket" else set())
    return found


def rule(render: Render, *args: str, namespace: str = "ops") -> dict[str, Any]:
    (found,) = find(documents(render("aw", "-n", namespace, *ON, *args).stdout), "PrometheusRule")
    return found


def alerts(render: Render, *args: str) -> dict[str, dict[str, Any]]:
    (group,) = rule(render, *args)["spec"]["groups"]
    return {r["alert"]: r for r in group["rules"]}


STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
MATCHER = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"')
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def references(expr: str) -> tuple[dict[str, set[str]], set[str]]:
    """The metrics an expression reads, each with the labels its matchers name, and the labels
    its groupings (by, on, ...) name."""
    read: dict[str, set[str]] = {}
    for metric, matchers in SELECTOR.findall(expr):
        read.setdefault(metric, set()).update(MATCHER.findall(matchers))
    grouped = {label.strip() for labels in GROUPING.findall(expr) for label in labels.split(",")}
    rest = GROUPING.sub(" ", re.sub(r"\{[^}]*\}|\[[^]]*\]", " ", STRING.sub('""', expr)))
    for word in IDENTIFIER.findall(rest):
        if word not in PROMQL_WORDS:
            read.setdefault(word, set())
    return read, grouped - {""}


def test_there_is_no_prometheus_rule_unless_enabled(render: Render) -> None:
    assert not find(documents(render("aw").stdout), "PrometheusRule")
    monitored = render("aw", "--set=prometheus.serviceMonitor.enabled=true").stdout
    assert not find(documents(monitored), "PrometheusRule")


def test_every_alert_has_a_for_a_severity_a_summary_a_description_and_a_runbook(
    render: Render,
) -> None:
    page = "https://docs.example.com/agentworker/troubleshooting.md"
    found = alerts(render, f"--set=prometheus.prometheusRule.runbookUrl={page}")
    assert set(found) == ALERTS
    for name, alert in found.items():
        assert re.fullmatch(r"[0-9]+[smh]", alert["for"]), name
        assert alert["labels"]["severity"] in {"critical", "warning"}, name
        annotations = alert["annotations"]
        about = "ops/aw" if name == "AgentWorkerOperatorDown" else "{{ $labels.namespace }}/"
        assert about in annotations["summary"], name
        assert len(annotations["description"]) > 100, name
        assert annotations["runbook_url"] == f"{page}#{name.lower()}", name


def test_the_runbook_anchors_are_headings_of_the_troubleshooting_page() -> None:
    page = (Path(metrics.__file__).parents[1] / "docs" / "troubleshooting.md").read_text()
    headings = {line.lstrip("#").strip().lower() for line in page.splitlines() if line[:1] == "#"}
    assert {name.lower() for name in ALERTS} <= headings


def test_without_a_runbook_url_no_alert_has_one(render: Render) -> None:
    assert all("runbook_url" not in a["annotations"] for a in alerts(render).values())


def test_every_alert_reads_only_series_the_operator_exports_with_labels_they_have(
    render: Render,
) -> None:
    known = exported() | PROMETHEUS_OWN
    assert {"agentworker_condition", "agentworker_calls_redispatched_total"} <= set(known)
    for name, alert in alerts(render).items():
        read, grouped = references(alert["expr"])
        assert read, name
        assert set(read) <= set(known), f"{name} reads {set(read) - set(known)}"
        for metric, labels in read.items():
            assert labels <= known[metric] | TARGET_LABELS, f"{name}: {metric}{labels}"
        their_labels = set().union(*(known[m] for m in read))
        assert grouped <= their_labels, f"{name} groups by {grouped - their_labels}"


def test_the_fleet_alerts_keep_the_agentworker_labels_and_drop_the_operator_pod(
    render: Render,
) -> None:
    """A handover, while two replicas have a fleet's series, must not make two alerts."""
    for name, alert in alerts(render).items():
        if name != "AgentWorkerOperatorDown":
            assert "by (namespace, name" in alert["expr"], name


def test_operator_down_selects_the_targets_the_service_monitor_makes(render: Render) -> None:
    objects = documents(render("aw", "-n", "ops", *ON).stdout)
    (monitor,) = find(objects, "ServiceMonitor")
    (service,) = find(objects, "Service", "aw-metrics")
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert selected.items() <= service["metadata"]["labels"].items()
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    (down,) = [r for r in find(objects, "PrometheusRule")[0]["spec"]["groups"][0]["rules"]
               if r["alert"] == "AgentWorkerOperatorDown"]  # fmt: skip
    target = f'job="{job}", namespace="ops", service="aw-metrics"'
    assert f"absent(up{{{target}}} == 1)" in down["expr"]
    assert f"sum(agentworker_operator_leader{{{target}}}) < 1" in down["expr"]


def test_operator_down_wants_a_leader_for_every_shard(render: Render) -> None:
    down = alerts(render, "--set=sharding.shards=3")["AgentWorkerOperatorDown"]
    assert down["expr"].endswith(") < 3")


def test_a_target_selector_stands_for_the_service_monitor(render: Render, tmp_path: Path) -> None:
    selector = 'job="kubernetes-pods", app="agentworker-operator"'
    values = {"prometheus": {"prometheusRule": {"operatorDown": {"targetSelector": selector}}}}
    path = write_values(tmp_path / "values.yaml", values)
    objects = documents(
        render("aw", "--set=prometheus.prometheusRule.enabled=true", "-f", str(path)).stdout
    )
    assert not find(objects, "ServiceMonitor")
    (down,) = [r for r in find(objects, "PrometheusRule")[0]["spec"]["groups"][0]["rules"]
               if r["alert"] == "AgentWorkerOperatorDown"]  # fmt: skip
    assert f"absent(up{{{selector}}} == 1)" in down["expr"]


def test_alerts_without_a_service_monitor_or_a_target_selector_are_refused(
    render: Render,
) -> None:
    done = render("aw", "--set=prometheus.prometheusRule.enabled=true", check=False)
    assert done.returncode != 0
    assert "needs prometheus.serviceMonitor.enabled" in done.stderr
    without_down = render(
        "aw",
        "--set=prometheus.prometheusRule.enabled=true",
        "--set=prometheus.prometheusRule.operatorDown.enabled=false",
    ).stdout
    (found,) = find(documents(without_down), "PrometheusRule")
    assert "AgentWorkerOperatorDown" not in str(found)


def test_values_set_windows_thresholds_durations_and_severities(render: Render) -> None:
    found = alerts(
        render,
        "--set=prometheus.prometheusRule.callsRecovered.window=1h",
        "--set=prometheus.prometheusRule.callsRecovered.threshold=3",
        "--set=prometheus.prometheusRule.fleetFull.for=30s",
        "--set=prometheus.prometheusRule.fleetFull.severity=page",
        "--set=prometheus.prometheusRule.workersUnreadable.enabled=false",
    )
    recovered = found["AgentWorkerCallsRecovered"]
    assert "increase(agentworker_calls_redispatched_total[1h])) > 3" in recovered["expr"]
    assert (found["AgentWorkerFleetFull"]["for"], found["AgentWorkerFleetFull"]["labels"]) == (
        "30s",
        {"severity": "page"},
    )
    assert "AgentWorkerWorkersUnreadable" not in found
    # without its own alert, unreadable workers are a Degraded reason like the others
    assert "WorkersUnreadable" not in found["AgentWorkerDegraded"]["expr"]
    assert 'reason!="WorkersUnreadable"' in alerts(render)["AgentWorkerDegraded"]["expr"]


def test_labels_reach_the_rule_for_the_rule_selector_and_every_alert(render: Render) -> None:
    found = rule(
        render,
        "--set=prometheus.prometheusRule.labels.release=kube-prometheus-stack",
        "--set=prometheus.prometheusRule.namespace=monitoring",
        "--set=prometheus.prometheusRule.alertLabels.team=voice",
        "--set=prometheus.prometheusRule.alertLabels.severity=ignored",
    )
    assert found["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert found["metadata"]["namespace"] == "monitoring"
    for alert in found["spec"]["groups"][0]["rules"]:
        assert alert["labels"]["team"] == "voice"
        assert alert["labels"]["severity"] != "ignored", "the alert's own severity wins"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("--set-string=fleetFull.for=soon", "does not match pattern"),
        ("--set-string=fleetFull.for=", "minLength"),
        ("--set=callsRecovered.threshold=-1", "minimum"),
        ("--set-string=degraded.severity=very bad", "does not match pattern"),
        ("--set-string=operatorDown.targetSelector=}", "does not match pattern"),
        ("--set-string=runbookUrl=troubleshooting.md", "does not match pattern"),
        ("--set=fleetFull.threshold=1", "additional properties 'threshold' not allowed"),
    ],
    ids=["bad-for", "empty-for", "negative-threshold", "severity-with-space", "brace-in-selector",
         "relative-runbook", "unknown-key"],
)  # fmt: skip
def test_bad_alert_values_are_refused_naming_them(render: Render, value: str, message: str) -> None:
    flag, _, setting = value.partition("=")
    done = render("aw", *ON, f"{flag}=prometheus.prometheusRule.{setting}", check=False)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


# -- promtool: the rules as Prometheus reads them ------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not on the PATH (Debian's prometheus package has it)"
)
FLEET = 'namespace="voice", name="support"'
TARGET = 'job="agentworker-operator", namespace="ops", service="aw-metrics"'
RULE_TESTS: list[dict[str, Any]] = [
    {
        "interval": "1m",
        "input_series": [
            {"series": f'agentworker_condition{{{FLEET}, type="FleetFull", status="true"}}',
             "values": "1x10"},
            {"series": f"agentworker_desired_replicas{{{FLEET}}}", "values": "5x10"},
            # an AgentWorker scaled to nothing on purpose: full of nothing, no alert
            {"series": 'agentworker_condition{namespace="voice", name="off", type="FleetFull", '
                       'status="true"}', "values": "1x10"},
            {"series": 'agentworker_desired_replicas{namespace="voice", name="off"}',
             "values": "0x10"},
            # the dispatch guard holds calls of another fleet
            {"series": 'agentworker_pending_dispatches{namespace="voice", name="guarded"}',
             "values": "2x10"},
        ],
        "alert_rule_test": [
            {"eval_time": "1m", "alertname": "AgentWorkerFleetFull", "exp_alerts": []},
            {
                "eval_time": "3m",
                "alertname": "AgentWorkerFleetFull",
                "exp_alerts": [
                    {"exp_labels": {"namespace": "voice", "name": "support",
                                    "severity": "critical"}},
                    {"exp_labels": {"namespace": "voice", "name": "guarded",
                                    "severity": "critical"}},
                ],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {"series": f'agentworker_workers{{{FLEET}, state="unknown"}}', "values": "2x15"},
            {"series": f'agentworker_condition{{{FLEET}, type="Degraded", status="true"}}',
             "values": "1x15"},
            {"series": f'agentworker_condition_reason{{{FLEET}, type="Degraded", '
                       'reason="WorkersUnreadable"}', "values": "1x15"},
            {"series": 'agentworker_condition{namespace="voice", name="bad", type="Degraded", '
                       'status="true"}', "values": "1x15"},
            {"series": 'agentworker_condition_reason{namespace="voice", name="bad", '
                       'type="Degraded", reason="SecretNotFound"}', "values": "1x15"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "11m",
                "alertname": "AgentWorkerWorkersUnreadable",
                "exp_alerts": [{"exp_labels": {"namespace": "voice", "name": "support",
                                               "severity": "warning"}}],
            },
            {
                "eval_time": "11m",
                "alertname": "AgentWorkerDegraded",  # WorkersUnreadable is the alert above's
                "exp_alerts": [{"exp_labels": {"namespace": "voice", "name": "bad",
                                               "reason": "SecretNotFound",
                                               "severity": "warning"}}],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            # made at 0 with the fleet: the first recovered call is an increase
            {"series": f"agentworker_calls_redispatched_total{{{FLEET}, pod=\"op-1\"}}",
             "values": "0 0 0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"},
        ],
        "alert_rule_test": [
            {"eval_time": "2m", "alertname": "AgentWorkerCallsRecovered", "exp_alerts": []},
            {
                "eval_time": "4m",
                "alertname": "AgentWorkerCallsRecovered",
                "exp_alerts": [{"exp_labels": {"namespace": "voice", "name": "support",
                                               "severity": "warning"}}],
            },
            {"eval_time": "20m", "alertname": "AgentWorkerCallsRecovered", "exp_alerts": []},
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {"series": f'up{{{TARGET}, pod="op-1"}}', "values": "1x20"},
            {"series": f'up{{{TARGET}, pod="op-2"}}', "values": "1x20"},
            {"series": f'agentworker_operator_leader{{{TARGET}, pod="op-1"}}',
             "values": "1 1 1 1 0x16"},
            {"series": f'agentworker_operator_leader{{{TARGET}, pod="op-2"}}', "values": "0x20"},
        ],
        "alert_rule_test": [
            {"eval_time": "3m", "alertname": "AgentWorkerOperatorDown", "exp_alerts": []},
            {
                "eval_time": "10m",  # both up, neither leads
                "alertname": "AgentWorkerOperatorDown",
                "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
            },
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            {"series": f'up{{{TARGET}, pod="op-1"}}', "values": "0x10"},
            # another release's operator is up: not this one
            {"series": 'up{job="agentworker-operator", namespace="other", service="aw-metrics"}',
             "values": "1x10"},
        ],
        "alert_rule_test": [
            {
                "eval_time": "6m",
                "alertname": "AgentWorkerOperatorDown",
                "exp_alerts": [{"exp_labels": {"severity": "critical"}}],
            },
        ],
    },
]  # fmt: skip


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, check=False, timeout=30
    )


@needs_promtool
def test_promtool_accepts_the_rules_and_their_templates(render: Render, tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule(render)["spec"]))
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in checked.stdout


@needs_promtool
def test_the_alerts_fire_on_the_series_they_are_for_and_only_those(
    render: Render, tmp_path: Path
) -> None:
    spec = rule(render)["spec"]
    for group in spec["groups"]:  # promtool compares annotations too: the labels are the point
        for alert in group["rules"]:
            alert.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(spec))
    tests = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": RULE_TESTS}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = promtool("test", "rules", str(tmp_path / "tests.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr
