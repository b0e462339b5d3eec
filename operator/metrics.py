"""Prometheus metrics of the operator: reconciles, errors, durations, and per-AgentWorker gauges.

This module owns the metric names, their labels and the /metrics endpoint. It records what
other modules report and decides nothing; the labels never carry a secret.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "agentworker_operator_reconciles_total",
    "Reconciles of an AgentWorker by what triggered them and how they ended.",
    ["namespace", "name", "trigger", "result"],
)
RECONCILE_ERRORS = Counter(
    "agentworker_operator_reconcile_errors_total",
    "Reconciles that failed, by reason (InvalidSpec, SecretNotFound, ApiError, ...).",
    ["namespace", "name", "reason"],
)
RECONCILE_DURATION = Histogram(
    "agentworker_operator_reconcile_duration_seconds",
    "Time one reconcile of an AgentWorker took.",
    ["namespace", "name"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DESIRED_REPLICAS = Gauge(
    "agentworker_desired_replicas",
    "Replicas the operator asks the Deployment for.",
    ["namespace", "name"],
)
READY_REPLICAS = Gauge(
    "agentworker_ready_replicas",
    "Ready worker pods (registered and not draining).",
    ["namespace", "name"],
)
LEADER = Gauge("agentworker_operator_leader", "1 while this replica holds the leader Lease.")


def serve(host: str, port: int) -> None:
    """Serve /metrics from a daemon thread (prometheus-client's own server)."""
    start_http_server(port, addr=host)
