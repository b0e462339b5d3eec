"""Prometheus metrics of the operator: reconciles, errors, durations, and per-AgentWorker gauges.

This module owns the metric names, their labels and the /metrics endpoint. It records what
other modules report and decides nothing; the labels never carry a secret, nor a room name, an
identity or anything else a caller sent: only names of AgentWorkers and words of a fixed set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from agentworker_operator.observation import FleetSummary, WorkerState

RECONCILES = Counter(
    "agentworker_operator_reconciles_total",
    "Reconciles of an AgentWorker by what triggered them and how they ended.",
    ["namespace", "name", "trigger", "result"],
)
RECONCILE_ERRORS = Counter(
    "agentworker_operator_reconcile_errors_total",
    "Reconciles that failed, by reason (InvalidSpec, ApplyFailed, ApiError, ...).",
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
REPLICAS = Gauge(
    "agentworker_replicas",
    "Worker pods that exist (the Deployment's replicas), draining ones included.",
    ["namespace", "name"],
)
READY_REPLICAS = Gauge(
    "agentworker_ready_replicas",
    "Ready worker pods (registered and not draining).",
    ["namespace", "name"],
)
LEADER = Gauge(
    "agentworker_operator_leader",
    "1 while this replica holds the leader Lease (with --shards above 1, a shard's Lease).",
)
SHARD = Gauge(
    "agentworker_operator_shard",
    "1 while this replica holds the Lease of this shard and handles its AgentWorkers (only "
    "with --shards above 1).",
    ["shard"],
)
WORKERS = Gauge(
    "agentworker_workers",
    "Workers by state in the latest observation (starting, available, full, draining, unknown).",
    ["namespace", "name", "state"],
)
ACTIVE_JOBS = Gauge(
    "agentworker_active_jobs", "Jobs (calls) running across the workers.", ["namespace", "name"]
)
LOAD = Gauge(
    "agentworker_load",
    "Average load reported by the serving workers, 0 to 1.",
    ["namespace", "name"],
)
SCALE_EVENTS = Counter(
    "agentworker_scale_events_total",
    "Times the autoscaler changed the replicas, by direction (up, down).",
    ["namespace", "name", "direction"],
)
OBSERVATION_DURATION = Histogram(
    "agentworker_operator_observation_duration_seconds",
    "Time to read every worker's /worker of an AgentWorker once.",
    ["namespace", "name"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
OBSERVATION_FAILURES = Counter(
    "agentworker_operator_observation_failures_total",
    "Worker reads that got no valid /worker document (the worker counted as unknown).",
    ["namespace", "name"],
)
ANNOTATION_WRITES = Counter(
    "agentworker_operator_pod_annotation_writes_total",
    "Patches of worker pods' deletion-cost and do-not-disrupt annotations.",
    ["namespace", "name"],
)
REDISPATCHES = Counter(
    "agentworker_calls_redispatched_total",
    "Rooms the agent was dispatched into again after its worker ended without draining.",
    ["namespace", "name"],
)
DISPATCHES_RESCUED = Counter(
    "agentworker_dispatches_rescued_total",
    "Dispatches the LiveKit server gave to no worker that the dispatch guard issued again and a "
    "worker then served, by why none took it first (no_worker: none registered; full: every "
    "one full or draining; unanswered: one was available and the assignment still failed).",
    ["namespace", "name", "reason"],
)
DISPATCHES_ABANDONED = Counter(
    "agentworker_dispatches_abandoned_total",
    "Dispatches the dispatch guard gave up on after spec.dispatchGuard.maxWait.",
    ["namespace", "name"],
)
PENDING_DISPATCHES = Gauge(
    "agentworker_pending_dispatches",
    "Dispatches the dispatch guard holds for want of a worker.",
    ["namespace", "name"],
)
CHANGE_TO_DECISION = Histogram(
    "agentworker_operator_change_to_decision_seconds",
    "From a worker's change heard on its long poll to the autoscaler's decision on its fleet.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
SYNC_DURATION = Histogram(
    "agentworker_operator_sync_duration_seconds",
    "Time one sync round over every AgentWorker took.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
WEBHOOKS = Counter(
    "agentworker_webhooks_total",
    "LiveKit webhook requests by event (room_started, room_finished, participant_joined, "
    "participant_left, other; unknown until verified and parsed) and outcome (delivered, "
    "ignored, or why it was refused).",
    ["event", "outcome"],
)
CONDITION = Gauge(
    "agentworker_condition",
    "The AgentWorker's status conditions (Ready, Progressing, Degraded, ScalingLimited, "
    "FleetFull, Companion): one series per status (true, false, unknown), 1 on the current one.",
    ["namespace", "name", "type", "status"],
)
CONDITION_REASON = Gauge(
    "agentworker_condition_reason",
    "1 on the current reason of each condition (a CamelCase word of a fixed set; Other for any "
    "other text); the series of a former reason is removed.",
    ["namespace", "name", "type", "reason"],
)
_PER_AGENTWORKER: tuple[Gauge | Counter | Histogram, ...] = (
    RECONCILES,
    RECONCILE_ERRORS,
    RECONCILE_DURATION,
    WORKERS,
    SCALE_EVENTS,
    DESIRED_REPLICAS,
    REPLICAS,
    READY_REPLICAS,
    ACTIVE_JOBS,
    LOAD,
    OBSERVATION_DURATION,
    OBSERVATION_FAILURES,
    ANNOTATION_WRITES,
    REDISPATCHES,
    DISPATCHES_RESCUED,
    DISPATCHES_ABANDONED,
    PENDING_DISPATCHES,
    CONDITION,
    CONDITION_REASON,
)
CONDITION_STATUSES = ("true", "false", "unknown")
"""The `status` label's values, a condition's status in lower case (kube-state-metrics')."""
_REASON = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")
OTHER_REASON = "Other"
"""The `reason` label of a reason that is not a CamelCase word (the operator writes none such,
but a companion fallback's reason is read back from the stored status)."""
_conditions: dict[tuple[str, str], dict[str, str]] = {}
"""Per AgentWorker, the reason last recorded for each condition type: the series to remove when
the reason changes or the condition goes."""


def record_fleet(key: tuple[str, str], fleet: FleetSummary) -> None:
    """The gauges of one AgentWorker's latest observation, and its counters of lost and
    recovered calls at 0 until they count any: an alert's increase() sees the first one."""
    for state in WorkerState:
        WORKERS.labels(*key, state.value).set(fleet.by_state[state])
    ACTIVE_JOBS.labels(*key).set(fleet.active_jobs)
    if fleet.load is not None:
        LOAD.labels(*key).set(fleet.load)
    REDISPATCHES.labels(*key)
    DISPATCHES_ABANDONED.labels(*key)


def record_conditions(key: tuple[str, str], conditions: Sequence[Mapping[str, object]]) -> None:
    """The gauges of one AgentWorker's conditions as written to its status (`type`, `status`,
    `reason` of each): 1 on the current status and reason of each, the rest of the statuses 0.
    A reason that changed, and a condition no longer written, lose their series."""
    before = _conditions.get(key, {})
    now: dict[str, str] = {}
    for condition in conditions:
        kind = str(condition.get("type"))
        state = str(condition.get("status")).lower()
        reason = str(condition.get("reason"))
        reason = reason if _REASON.fullmatch(reason) else OTHER_REASON
        for value in CONDITION_STATUSES:
            current = value == state or (value == "unknown" and state not in CONDITION_STATUSES)
            CONDITION.labels(*key, kind, value).set(1 if current else 0)
        CONDITION_REASON.labels(*key, kind, reason).set(1)
        if before.get(kind, reason) != reason:
            CONDITION_REASON.remove(*key, kind, before[kind])
        now[kind] = reason
    for kind in before.keys() - now.keys():
        for value in CONDITION_STATUSES:
            CONDITION.remove(*key, kind, value)
        CONDITION_REASON.remove(*key, kind, before[kind])
    _conditions[key] = now


def forget(namespace: str, name: str) -> None:
    """Drop every series of a deleted AgentWorker, whatever its other labels."""
    for metric in _PER_AGENTWORKER:
        metric.remove_by_labels({"namespace": namespace, "name": name})
    _conditions.pop((namespace, name), None)


def serve(host: str, port: int) -> None:
    """Serve /metrics from a daemon thread (prometheus-client's own server)."""
    start_http_server(port, addr=host)
