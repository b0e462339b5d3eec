"""The operator's settings: one frozen tree of dataclasses, filled from the command line.

This module owns every knob of the operator process and its default. It holds values only:
no I/O, no parsing of the command line (that is `__main__`), no kopf settings (`handlers`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from agentworker_operator.builders import DEFAULT_COMPANION_IMAGE as DEFAULT_COMPANION_IMAGE


class LogFormat(enum.StrEnum):
    """How log lines are written."""

    JSON = "json"
    TEXT = "text"


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseSettings:
    """Leader election with a coordination.k8s.io Lease: only the holder reconciles."""

    name: str = "agentworker-operator"
    """Name of the Lease object."""
    namespace: str = "default"
    """Namespace of the Lease (the operator's own namespace in a cluster)."""
    identity: str
    """This replica's holder identity; stable across container restarts in one pod."""
    duration_s: float = 15.0
    """Seconds a holder's claim lasts without renewal before another replica may take it."""
    renew_every_s: float = 5.0
    """Seconds between renewals by the holder, and between attempts by a standby."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretRef:
    """A Secret by namespace and name."""

    namespace: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PodRef:
    """A pod by namespace and name."""

    namespace: str
    name: str


CONTROL_KEY_NAME = "agentworker-operator-control-key"


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncSettings:
    """The periodic loop that observes the workers, autoscales and resyncs."""

    interval_s: float = 5.0
    """Seconds between two observations of every AgentWorker's workers (the sync period)."""
    resync_s: float = 30.0
    """Seconds between whole reconciles (server-side apply of every child) of an AgentWorker."""
    scrape_timeout_s: float = 2.0
    """Seconds a worker's /worker may take to answer before it counts as unknown."""
    scrape_concurrency: int = 100
    """Requests to workers in flight at once, across all AgentWorkers."""
    watch_workers: bool = True
    """Long-poll each worker's /worker (`watcher`): a fleet whose worker changed is synced at
    once, not at the next period."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything the `agent-operator` process needs to know."""

    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means all namespaces."""
    health_host: str = "0.0.0.0"  # probes come from the kubelet, off the pod
    """Address of the liveness/readiness endpoint (/healthz, /readyz)."""
    health_port: int = 8080
    """Port of the liveness/readiness endpoint; 0 disables it."""
    metrics_host: str = "0.0.0.0"
    """Address of the Prometheus /metrics endpoint."""
    metrics_port: int = 9090
    """Port of the Prometheus /metrics endpoint; 0 disables it."""
    webhook_host: str = "0.0.0.0"  # the LiveKit server calls from off the pod
    """Address of LiveKit's webhook endpoint (POST /livekit/webhook)."""
    webhook_port: int = 0
    """Port of LiveKit's webhook endpoint; 0 (the default) disables it: it takes requests from
    outside the cluster's control plane, is of use only once a LiveKit server is configured to
    call it, and needs the LiveKit API secrets, so it is opted into (the chart's
    webhook.enabled)."""
    log_format: LogFormat = LogFormat.JSON
    """json (production) or text (development)."""
    log_level: str = "INFO"
    """Level of the operator's own loggers."""
    lease: LeaseSettings = field(default_factory=lambda: LeaseSettings(identity="unset"))
    """Leader election."""
    pod: PodRef | None = None
    """This replica's own pod (POD_NAMESPACE and POD_NAME from the downward API), labelled
    `builders.LEASE_HOLDER_LABEL` while it holds a Lease; None outside a pod."""
    shards: int = 1
    """How many shards the installation's AgentWorkers are split into (`sharding`), each
    handled by the process holding its Lease `<lease.name>-shard-<i>`; 1 (the default): one
    Lease, `lease.name`, and its holder handles every AgentWorker."""
    sync: SyncSettings = field(default_factory=SyncSettings)
    """Observation, autoscaling and resync."""
    companion_image: str = DEFAULT_COMPANION_IMAGE
    """The image the companion's init container runs (it needs python and the package)."""
    control_key: SecretRef = field(
        default_factory=lambda: SecretRef(namespace="default", name=CONTROL_KEY_NAME)
    )
    """The Secret, in the operator's own namespace, whose random key every AgentWorker's control
    token is derived from; the operator makes it when missing."""
