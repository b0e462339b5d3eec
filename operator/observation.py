"""What each worker pod is doing, from its pod object and the `/worker` document it served.

This module owns the reading of both `/worker` dialects (this runtime's and the official
livekit-agents worker's, whose keys are a subset: `agent_name`, `worker_type`, `active_jobs`,
`worker_load`), the state a worker is counted in (starting, available, full, draining, unknown)
and the fleet summary the status shows. It is pure: the scraper fetches, this decides. It does
no I/O and imports no kopf, kubernetes, aiohttp or prometheus_client.

A worker that does not answer, or answers something that is not a worker document, is UNKNOWN
while its pod is ready: it is never counted as idle and never picked as an idle victim. A pod
that is being deleted is DRAINING whatever it answers: its calls still occupy capacity.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentworker_operator import builders


class WorkerState(enum.StrEnum):
    """Where a worker stands, as the autoscaler counts it."""

    STARTING = "starting"
    """Not registered yet (or not yet answering): capacity on its way, no calls."""
    AVAILABLE = "available"
    """Registered, load at or below its threshold: takes new calls."""
    FULL = "full"
    """Registered, load above its threshold: keeps its calls, takes no new one."""
    DRAINING = "draining"
    """Retired, draining, or its pod is being deleted: finishes its calls, takes none."""
    UNKNOWN = "unknown"
    """Ready pod whose /worker did not answer or made no sense: never taken for idle."""


class InvalidReport(ValueError):
    """A /worker answer that is not a worker document; the message says what is wrong."""


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerReport:
    """A parsed /worker document (either dialect)."""

    load: float
    """Reported load, 0 to 1."""
    active_jobs: int
    rooms: tuple[str, ...] = ()
    """Rooms of the running jobs (this runtime only; the official worker does not list them)."""
    job_ids: tuple[str, ...] | None = None
    """Ids of the running jobs; None when the document lists none or a job without its id
    (the official worker): its jobs are then known by their count only."""
    agents: tuple[tuple[str, str], ...] = ()
    """(room, the agent participant's identity) of each running job (this runtime only)."""
    draining: bool = False
    """Draining or retired (this runtime only)."""
    retired: bool = False
    """Retired by the victim handshake, not draining on SIGTERM: the retirement can be
    withdrawn (DELETE /retire)."""
    registered: bool | None = None
    """Registered with LiveKit; None when the document does not say (the official worker)."""
    full: bool = False
    """The worker says it is full (`state: full`): its own rule, which also counts the offers
    it holds and the jobs its last load reading has not measured yet (a burst)."""
    retirable: bool = False
    """Speaks the victim handshake (POST /retire): this runtime."""
    worker_id: str = ""
    agent_name: str = ""
    load_threshold: float | None = None
    """The worker's own threshold when it reports one."""
    companion: str = ""
    """The companion's version when it serves this document (an official worker wrapped)."""
    sdk_version: str = ""
    project_type: str = ""


def _number(doc: Mapping[str, Any], key: str) -> float:
    # livekit-agents writes the document with protobuf's MessageToJson, which leaves out every
    # field at zero: an idle official worker has no active_jobs key at all
    value = doc.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise InvalidReport(f"{key} is {value!r}, not a number")
    return float(value)


def parse_worker_document(raw: object) -> WorkerReport:
    """The report in a decoded /worker answer; InvalidReport when it is not a worker document."""
    if not isinstance(raw, Mapping):
        raise InvalidReport(f"the document is a {type(raw).__name__}, not an object")
    if not isinstance(raw.get("worker_type"), str):
        raise InvalidReport("it has no worker_type")
    jobs = _number(raw, "active_jobs")
    if jobs < 0 or not float(jobs).is_integer():
        raise InvalidReport(f"active_jobs is {jobs!r}, not a count")
    load = min(max(_number(raw, "worker_load"), 0.0), 1.0)
    state = raw.get("state")
    agents: list[tuple[str, str]] = []
    listed = raw.get("jobs")
    for job in listed if isinstance(listed, list) else []:
        if isinstance(job, Mapping) and job.get("room"):
            # the runtime's default identity is livekit-agents': "agent-<job id>"
            identity = job.get("identity") or f"agent-{job.get('id', '')}"
            agents.append((str(job["room"]), str(identity)))
    rooms = tuple(room for room, _ in agents)
    job_ids = _job_ids(listed)
    threshold = raw.get("load_threshold")
    return WorkerReport(
        load=load,
        active_jobs=int(jobs),
        rooms=rooms,
        job_ids=job_ids,
        agents=tuple(agents),
        draining=bool(raw.get("draining")) or bool(raw.get("retired")),
        retired=bool(raw.get("retired")) and not raw.get("draining"),
        registered=state in ("available", "full", "draining") if isinstance(state, str) else None,
        full=state == "full",
        retirable="retired" in raw,
        worker_id=str(raw.get("worker_id") or ""),
        agent_name=str(raw.get("agent_name") or ""),
        load_threshold=float(threshold) if isinstance(threshold, int | float) else None,
        companion=str(raw.get("companion") or ""),
        sdk_version=str(raw.get("sdk_version") or ""),
        project_type=str(raw.get("project_type") or ""),
    )


def _job_ids(listed: object) -> tuple[str, ...] | None:
    """The ids of a document's `jobs`; None without the list, or with a job that has no id."""
    if not isinstance(listed, list):
        return None
    ids = [job.get("id") for job in listed if isinstance(job, Mapping)]
    if len(ids) != len(listed) or not all(isinstance(i, str) and i for i in ids):
        return None
    return tuple(str(i) for i in ids)


@dataclass(frozen=True, slots=True, kw_only=True)
class PodView:
    """The parts of a worker pod the autoscaler needs."""

    name: str
    ip: str = ""
    ready: bool = False
    terminating: bool = False
    template_hash: str = ""
    """The pod template version it runs (builders.TEMPLATE_HASH_ANNOTATION)."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    restarts: int = 0
    """Container restarts, summed: a rise means the worker process died (its calls with it)."""


def pod_view(pod: Mapping[str, Any]) -> PodView:
    """A PodView of a pod object as read from the API."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
        if isinstance(c, Mapping)
    )
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    restarts = sum(
        c.get("restartCount") or 0
        for c in status.get("containerStatuses") or []
        if isinstance(c, Mapping) and isinstance(c.get("restartCount"), int)
    )
    return PodView(
        name=str(meta.get("name") or ""),
        ip=str(status.get("podIP") or ""),
        ready=ready,
        terminating=bool(meta.get("deletionTimestamp")),
        template_hash=annotations.get(builders.TEMPLATE_HASH_ANNOTATION, ""),
        annotations=annotations,
        restarts=restarts,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Worker:
    """One worker pod and what it reported in the latest observation."""

    pod: PodView
    report: WorkerReport | None = None
    error: str = ""
    """Why there is no report (timeout, refused, not a worker document); "" with a report."""
    state: WorkerState = WorkerState.UNKNOWN

    @property
    def active_jobs(self) -> int:
        return self.report.active_jobs if self.report is not None else 0

    @property
    def busy(self) -> bool:
        """Holds calls, or might (unknown): never removed as idle."""
        return self.report is None or self.report.active_jobs > 0


def classify(
    pod: PodView,
    report: WorkerReport | None,
    *,
    load_threshold: float,
    reported_before: bool = False,
) -> WorkerState:
    """The state a worker counts in, from its pod and its report (None: no valid answer).

    `reported_before`: the worker was seen registered in an earlier observation, so silence
    now means trouble (UNKNOWN), never a worker that is still starting.
    """
    if pod.terminating:
        return WorkerState.DRAINING
    if report is None:
        return WorkerState.UNKNOWN if pod.ready or reported_before else WorkerState.STARTING
    if report.draining:
        return WorkerState.DRAINING
    if report.registered is False or (report.registered is None and not pod.ready):
        # reconnecting to LiveKit with calls running: occupied, never a starting (idle) worker
        return WorkerState.FULL if report.active_jobs else WorkerState.STARTING
    threshold = report.load_threshold if report.load_threshold is not None else load_threshold
    # the worker's own word first: it turns full on the offers it holds, before its load says so
    return WorkerState.FULL if report.full or report.load > threshold else WorkerState.AVAILABLE


def observe(
    pod: Mapping[str, Any],
    answer: object,
    error: str,
    *,
    load_threshold: float,
    reported_before: bool = False,
) -> Worker:
    """A Worker from a pod object and its decoded /worker answer (or the error instead)."""
    view = pod_view(pod)
    report: WorkerReport | None = None
    if not error:
        try:
            report = parse_worker_document(answer)
        except InvalidReport as invalid:
            error = f"not a worker document: {invalid}"
    state = classify(view, report, load_threshold=load_threshold, reported_before=reported_before)
    return Worker(pod=view, report=report, error=error, state=state)


STALE_WATCH_PERIODS = 3
"""Sync periods the pod watch may disagree with the Deployment, with no event of the fleet's pods
meanwhile, before the operator lists the pods again (a half-open watch delivers nothing; a live
one that lags, or a Deployment status that trails it, is no reason). Periods, not rounds: the
rounds a worker's change starts come many a second while a fleet scales up."""


def watch_stale(disagreeing_since: float | None, now: float, *, period_s: float) -> bool:
    """Whether a disagreement that began at `disagreeing_since` (None: none now) has lasted long
    enough to list the pods again."""
    if disagreeing_since is None:
        return False
    return now - disagreeing_since >= STALE_WATCH_PERIODS * period_s


def pods_disagree(pods: Sequence[Mapping[str, Any]], deployment: Mapping[str, Any] | None) -> bool:
    """Whether the watched pods (not being deleted) and the Deployment's status.replicas, its
    ReplicaSets' active pods, disagree (once the Deployment controller saw its latest spec)."""
    if deployment is None:
        return False
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    if status.get("observedGeneration") != meta.get("generation"):
        return False
    active = sum(1 for pod in pods if not (pod.get("metadata") or {}).get("deletionTimestamp"))
    return bool(status.get("replicas", 0) != active)


def unseen_pods(pods: Sequence[Mapping[str, Any]], deployment: Mapping[str, Any] | None) -> int:
    """How many more pods the Deployment counts (status.replicas, once its controller saw its
    latest spec) than the pod watch shows (not being deleted): 0 when it shows as many or more."""
    if deployment is None:
        return 0
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    if status.get("observedGeneration") != meta.get("generation"):
        return 0
    active = sum(1 for pod in pods if not (pod.get("metadata") or {}).get("deletionTimestamp"))
    return max(0, int(status.get("replicas") or 0) - active)


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetSummary:
    """Counts for the status, the printer columns and the metrics."""

    by_state: Mapping[WorkerState, int]
    active_jobs: int
    load: float | None
    """Average load of the registered, serving workers (available and full); None without any."""
    unknown_pods: tuple[str, ...]
    old_worker_jobs: int
    """Calls on workers that run an older pod template (a rollout in progress)."""
    unreadable: tuple[tuple[str, str], ...] = ()
    """(pod, what went wrong) of each unknown worker: a timeout, a status code, unparsable."""

    @property
    def blind(self) -> bool:
        """Too few workers can be read to decide on: see `blind`."""
        return blind(self.by_state)


def blind(by_state: Mapping[WorkerState, int]) -> bool:
    """Whether the operator cannot see its fleet: workers that do not answer (or answer
    nonsense) are at least as many as those that report serving. The size then holds, as the
    HPA's does without metrics: a wrong port, a NetworkPolicy or a stalled watch must not
    become a fleet grown to maxReplicas."""
    unknown = by_state.get(WorkerState.UNKNOWN, 0)
    serving = by_state.get(WorkerState.AVAILABLE, 0) + by_state.get(WorkerState.FULL, 0)
    return unknown > 0 and unknown >= serving


def summarize(workers: Sequence[Worker], *, template_hash: str) -> FleetSummary:
    """The fleet's counts; `template_hash` is the current pod template's version."""
    by_state = dict.fromkeys(WorkerState, 0)
    for worker in workers:
        by_state[worker.state] += 1
    serving = [
        w.report.load
        for w in workers
        if w.report is not None and w.state in (WorkerState.AVAILABLE, WorkerState.FULL)
    ]
    return FleetSummary(
        by_state=by_state,
        active_jobs=sum(w.active_jobs for w in workers),
        load=round(sum(serving) / len(serving), 3) if serving else None,
        unknown_pods=tuple(sorted(w.pod.name for w in workers if w.state is WorkerState.UNKNOWN)),
        unreadable=tuple(
            sorted(
                (w.pod.name, w.error or "no report")
                for w in workers
                if w.state is WorkerState.UNKNOWN
            )
        ),
        old_worker_jobs=sum(
            w.active_jobs for w in workers if template_hash and w.pod.template_hash != template_hash
        ),
    )
