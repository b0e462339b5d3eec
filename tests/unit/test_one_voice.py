"""The operator and the worker runtime speak with one voice: the same JSON log fields, and one
metric prefix following Prometheus naming."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import prometheus_client
import pytest

from agentworker_operator import logs as operator_logs
from agentworker_operator import metrics as operator_metrics
from worker_runtime import logs as runtime_logs
from worker_runtime.metrics import WorkerMetrics

LEADING_FIELDS = ["time", "severity", "logger", "message", "agentworker", "pod", "pid"]


def record(extra: Mapping[str, object] | None = None) -> logging.LogRecord:
    """A WARNING record "hi there" with `extra` as its attributes (what `extra=` does)."""
    level = logging.WARNING
    made = logging.makeLogRecord(
        {"name": "x", "levelno": level, "levelname": logging.getLevelName(level), "msg": "hi %s"}
    )
    made.args = ("there",)
    made.__dict__.update(extra or {})
    return made


def runtime_line(made: logging.LogRecord) -> dict[str, object]:
    environ = {"AGENT_AGENTWORKER": "shop/voice", "AGENT_POD_NAME": "voice-7d9f-abcde"}
    formatted = runtime_logs.JsonFormatter(environ).format(made)
    decoded: dict[str, object] = json.loads(formatted)
    return decoded


def operator_line(made: logging.LogRecord) -> dict[str, object]:
    decoded: dict[str, object] = json.loads(operator_logs.JsonFormatter().format(made))
    return decoded


def test_a_worker_line_and_an_operator_line_about_it_have_the_same_fields() -> None:
    worker = runtime_line(record({"job_id": "AJ_1"}))
    about_it = operator_line(
        record(
            {**operator_logs.about(("shop", "voice")), "pod": "voice-7d9f-abcde", "job_id": "AJ_1"}
        )
    )
    assert list(worker)[: len(LEADING_FIELDS)] == LEADING_FIELDS
    assert set(about_it) == set(worker)
    for field in ("severity", "logger", "message", "agentworker", "pod", "job_id"):
        assert worker[field] == about_it[field], field
    assert worker["severity"] == "WARNING"  # a LogSeverity name Cloud Logging knows
    assert worker["message"] == "hi there"


def test_kopf_per_object_records_name_their_agentworker_or_pod() -> None:
    ref = {"apiVersion": "agentworker.dev/v1alpha1", "kind": "AgentWorker", "name": "voice"}
    line = operator_line(record({"k8s_ref": {**ref, "namespace": "shop"}, "k8s_skip": False}))
    assert line["agentworker"] == "shop/voice"
    assert "k8s_ref" not in line
    assert "k8s_skip" not in line
    pod = operator_line(
        record({"k8s_ref": {"kind": "Pod", "namespace": "shop", "name": "voice-1"}})
    )
    assert pod["pod"] == "voice-1"
    other = operator_line(
        record({"k8s_ref": {"kind": "Deployment", "namespace": "a", "name": "b"}})
    )
    assert other["object"] == "Deployment a/b"


def test_a_worker_outside_the_operator_leaves_out_what_it_does_not_know() -> None:
    line = json.loads(runtime_logs.JsonFormatter({}).format(record()))
    assert "agentworker" not in line
    assert "pod" not in line
    assert line["severity"] == "WARNING"


def test_the_agentworker_adapter_keeps_the_call_sites_extras(
    caplog: pytest.LogCaptureFixture,
) -> None:
    adapter = operator_logs.AgentWorkerLog(logging.getLogger("t"), operator_logs.about(("a", "b")))
    with caplog.at_level(logging.INFO, logger="t"):
        adapter.info("status updated", extra={"fields": ["load"]})
    line = operator_line(caplog.records[0])
    assert (line["agentworker"], line["fields"]) == ("a/b", ["load"])


def metric_names(registry: prometheus_client.CollectorRegistry) -> list[str]:
    return [
        sample.name
        for family in registry.collect()
        for sample in family.samples
        if not sample.name.startswith(("python_", "process_"))
    ]


def test_every_metric_of_both_components_has_the_one_prefix() -> None:
    operator_metrics.WORKERS.labels("ns", "name", "available").set(1)
    operator_metrics.SCALE_EVENTS.labels("ns", "name", "up").inc()
    worker = WorkerMetrics()
    names = metric_names(prometheus_client.REGISTRY) + metric_names(worker.registry)
    ours = [n for n in names if n.startswith("agentworker_")]
    assert any(n.startswith("agentworker_worker_") for n in ours)
    assert any(n.startswith("agentworker_operator_") for n in ours)
    assert {n for n in names if not n.startswith("agentworker_")} <= {
        "python_gc_objects_collected_total"
    }
    # counters are exposed with _total, durations in seconds
    assert "agentworker_worker_jobs_started_total" in names
    assert "agentworker_scale_events_total" in names
    assert all("duration" not in n or "_seconds" in n for n in ours), [
        n for n in ours if "duration" in n
    ]
    operator_metrics.forget("ns", "name")


def test_a_deleted_agentworker_leaves_no_series_behind() -> None:
    key = ("shop", "gone")
    operator_metrics.RECONCILES.labels(*key, "create", "ok").inc()
    operator_metrics.RECONCILE_ERRORS.labels(*key, "InvalidSpec").inc()
    operator_metrics.RECONCILE_DURATION.labels(*key).observe(0.1)
    operator_metrics.WORKERS.labels(*key, "full").set(2)
    operator_metrics.SCALE_EVENTS.labels(*key, "down").inc()
    operator_metrics.ACTIVE_JOBS.labels(*key).set(3)
    operator_metrics.ACTIVE_JOBS.labels("shop", "kept").set(1)

    def series_of(name: str) -> list[str]:
        return [
            sample.name
            for family in prometheus_client.REGISTRY.collect()
            for sample in family.samples
            if sample.labels.get("namespace") == "shop" and sample.labels.get("name") == name
        ]

    assert len(series_of("gone")) > 6  # every kind above was exported
    operator_metrics.forget(*key)
    assert series_of("gone") == []
    assert series_of("kept") == ["agentworker_active_jobs"]
    operator_metrics.forget("shop", "kept")
