"""The AgentWorker's status and conditions, decided from gathered facts with the clock passed in.

This module owns what the status says: observedGeneration, replica counts, selector, the
workers' own counts (`fleet_status`), the warm headroom a miss-rate target derived
(`warm_headroom_status`) and the conditions Ready, Progressing, Degraded, ScalingLimited and
FleetFull (each with a CamelCase reason, a message, lastTransitionTime and
observedGeneration), which Events a change deserves, and the smallest patch that brings the
stored status up to date (None when nothing changed). It is pure: no I/O, no kopf, kubernetes,
aiohttp or prometheus_client; `now` is an argument.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentworker_operator import companion as companions
from agentworker_operator import headroom, kubelet, sizing
from agentworker_operator.observation import FleetSummary, WorkerState

Status = dict[str, Any]
"""The status subresource as stored (plain JSON)."""


class ConditionType(enum.StrEnum):
    """The condition types an AgentWorker reports."""

    READY = "Ready"
    PROGRESSING = "Progressing"
    DEGRADED = "Degraded"
    SCALING_LIMITED = "ScalingLimited"
    FLEET_FULL = "FleetFull"
    COMPANION = "Companion"
    """Only on `command` fleets: whether their workers serve the contract through it."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """Something wrong that a person must fix; becomes Degraded=True and a Warning Event."""

    reason: str
    """CamelCase, e.g. InvalidSpec, SecretNotFound, SecretKeyMissing, RolloutStuck."""
    message: str
    """What is wrong and what would be right; never contains a secret value."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DeploymentFacts:
    """What the owned Deployment reports about itself."""

    generation: int
    observed_generation: int
    replicas: int
    ready_replicas: int
    updated_replicas: int
    available_replicas: int
    progress_deadline_exceeded: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class PodFailure:
    """A worker pod whose container is stuck, as the kubelet reports it."""

    pod: str
    reason: str
    """The container's waiting reason, e.g. CrashLoopBackOff or ImagePullBackOff."""
    message: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CompanionFacts:
    """How a `command` fleet gets the worker contract, and how many of its workers serve it."""

    mode: companions.Mode
    plan: companions.Plan
    fallback: companions.Fallback | None = None
    serving: int = 0
    """Live workers whose /worker the companion served."""
    workers: int = 0
    """Live workers (not being deleted)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """Everything the status is decided from, gathered by the handlers in one go."""

    generation: int
    """metadata.generation of the AgentWorker."""
    selector: str
    desired_replicas: int | None
    """Replicas the operator asked for; None when the spec could not be parsed."""
    autoscaling_enabled: bool = False
    problem: Problem | None = None
    """A spec or credentials problem found before applying; the Deployment was left alone."""
    livekit_url: str = ""
    livekit_error: str | None = None
    """Why the LiveKit server did not answer the operator's probe; None when it did."""
    deployment: DeploymentFacts | None = None
    """None when the Deployment does not exist (yet)."""
    failing_pods: tuple[PodFailure, ...] = ()
    """Worker pods whose container cannot start (crash loop, image pull, bad config)."""
    credentials_secret: str = ""
    """spec.livekit.credentialsSecret.name: a pod that cannot start for want of it names it."""
    fleet: FleetSummary | None = None
    """What the workers reported in the latest observation; None before the first one."""
    scaling: Scaling | None = None
    """The autoscaler's latest decision, or, with autoscaling off or paused, what holds the
    size (`sizing.Hold`); None before the first decision (or with an unparsable spec)."""
    last_scale_time: str | None = None
    """When the autoscaler last changed the replicas (RFC 3339)."""
    companion: CompanionFacts | None = None
    """None for this runtime's fleets (or an unparsable spec)."""
    pending_dispatches: int | None = None
    """Dispatches the dispatch guard holds for want of a worker; None with the guard off."""
    warm_headroom: headroom.WarmHeadroom | None = None
    """The warm headroom derived from the miss-rate target; None without one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Scaling:
    """The autoscaler's latest decision, as the ScalingLimited condition tells it."""

    limited: bool
    reason: str
    """CamelCase: AtMaxReplicas, AtMinReplicas, BusyWorkers, UnknownWorkers, ... or the
    decision's own reason (LoadAboveTarget, Stable, ...) when nothing held it back; Paused or
    AutoscalingDisabled when no decision is made."""
    message: str


PAUSED = sizing.Mode.PAUSED.value
"""ScalingLimited's reason while spec.autoscaling.paused holds the size; also the Event's when a
pause starts (`RESUMED` when it ends)."""
RESUMED = "Resumed"


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    """One decided condition before timestamps are attached."""

    type: ConditionType
    status: bool
    reason: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """A Kubernetes Event a person should see, posted on a condition change."""

    type: str
    """Normal or Warning."""
    reason: str
    message: str


def _registered_workers(facts: Facts) -> int:
    """Workers that report themselves registered: LiveKit reaches them, whatever the probe."""
    if facts.fleet is None:
        return 0
    return facts.fleet.by_state[WorkerState.AVAILABLE] + facts.fleet.by_state[WorkerState.FULL]


def _problem(facts: Facts) -> Problem | None:
    if facts.problem is not None:
        return facts.problem
    if facts.livekit_error is not None and not _registered_workers(facts):
        return Problem(
            reason="LiveKitUnreachable",
            message=f"the LiveKit server at {facts.livekit_url} (spec.livekit.url) does not "
            f"answer ({facts.livekit_error}); workers cannot register until it does",
        )
    secret_problem = _credentials_problem(facts)
    if secret_problem is not None:
        return secret_problem
    if facts.failing_pods:
        shown = "; ".join(
            f"{f.pod}: {f.reason}" + (f" ({f.message})" if f.message else "")
            for f in facts.failing_pods[:3]
        )
        return Problem(
            reason="WorkersFailing",
            message=f"{len(facts.failing_pods)} worker pods cannot start: {shown} "
            "(check the image, spec.entrypoint and the credentials Secret)",
        )
    fleet = facts.fleet
    if fleet is not None and fleet.blind:
        shown = "; ".join(f"{pod}: {error}" for pod, error in fleet.unreadable[:3])
        more = f" and {len(fleet.unreadable) - 3} more" if len(fleet.unreadable) > 3 else ""
        return Problem(
            reason="WorkersUnreadable",
            message=f"{len(fleet.unreadable)} workers' /worker cannot be read ({shown}{more}); "
            "autoscaling holds the size until they can (check spec.command serves the worker "
            "on port 8081, and that no NetworkPolicy or mesh blocks the operator)",
        )
    dep = facts.deployment
    if dep is not None and dep.progress_deadline_exceeded:
        return Problem(
            reason="RolloutStuck",
            message="the Deployment exceeded its progress deadline: new workers never became "
            "ready (check the image, the entrypoint and the LiveKit URL)",
        )
    return None


_SECRET_NOT_FOUND = re.compile(r'secrets? "([^"]+)" not found', re.IGNORECASE)
_SECRET_KEY_MISSING = re.compile(r"couldn't find key (\S+) in Secret (?:[^/\s]+/)?(\S+)")


def _credentials_problem(facts: Facts) -> Problem | None:
    """The credentials Secret, or one of its keys, is missing: the kubelet says so in a pod's
    CreateContainerConfigError (the operator does not read the Secret: it may not)."""
    name = facts.credentials_secret
    for failure in facts.failing_pods:
        if failure.reason != "CreateContainerConfigError":
            continue
        found = _SECRET_NOT_FOUND.search(failure.message)
        if found and found.group(1) == name:
            return Problem(
                reason="SecretNotFound",
                message=f"Secret {name} (spec.livekit.credentialsSecret.name) does not exist "
                f"(pod {failure.pod}: {failure.message}); create it with keys "
                "LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
            )
        missing = _SECRET_KEY_MISSING.search(failure.message)
        if missing and missing.group(2) == name:
            return Problem(
                reason="SecretKeyMissing",
                message=f"Secret {name} (spec.livekit.credentialsSecret.name) has no key "
                f"{missing.group(1)} (pod {failure.pod}: {failure.message})",
            )
    return None


def _rollout(facts: Facts) -> tuple[bool, str, str]:
    """(in progress, reason, message) of the Deployment towards the desired replicas."""
    dep, want = facts.deployment, facts.desired_replicas or 0
    if dep is None:
        return True, "Creating", "the Deployment does not exist yet"
    if dep.observed_generation < dep.generation:
        return True, "RollingOut", "the Deployment controller has not seen the latest spec yet"
    if dep.updated_replicas < want:
        return True, "RollingOut", f"{dep.updated_replicas}/{want} workers run the latest spec"
    if dep.replicas > dep.updated_replicas:
        old = dep.replicas - dep.updated_replicas
        return True, "RollingOut", f"{old} old workers are draining"
    if dep.ready_replicas < want:
        return True, "ScalingUp", f"{dep.ready_replicas}/{want} workers ready"
    if dep.replicas > want:
        return True, "ScalingDown", f"{dep.replicas - want} workers are draining"
    return False, "RolloutComplete", f"{dep.ready_replicas}/{want} workers run the latest spec"


def _ready(facts: Facts, progressing: bool, rollout_message: str) -> Condition:
    """Ready: the latest spec runs on every desired worker and nothing blocks it."""
    kind, dep = ConditionType.READY, facts.deployment
    blocking = facts.problem or _credentials_problem(facts)  # no worker can start either way
    if blocking is not None:
        return Condition(type=kind, status=False, reason=blocking.reason, message=blocking.message)
    if progressing or dep is None:
        return Condition(type=kind, status=False, reason="WorkersNotReady", message=rollout_message)
    message = f"{dep.ready_replicas}/{facts.desired_replicas or 0} workers ready"
    return Condition(type=kind, status=True, reason="WorkersReady", message=message)


def _scaling_limited(facts: Facts) -> Condition:
    """ScalingLimited: whether bounds, busy or unknown workers, or a pause, held the autoscaler
    back."""
    kind = ConditionType.SCALING_LIMITED
    if facts.scaling is None and not facts.autoscaling_enabled:
        return Condition(
            type=kind,
            status=False,
            reason=sizing.Mode.DISABLED.value,
            message="spec.replicas drives the Deployment",
        )
    if facts.scaling is None:
        return Condition(
            type=kind,
            status=False,
            reason="WaitingForObservation",
            message="the workers have not been observed yet",
        )
    scaling = facts.scaling
    return Condition(
        type=kind, status=scaling.limited, reason=scaling.reason, message=scaling.message
    )


def _fleet_full(facts: Facts) -> Condition:
    """FleetFull: no worker can take a new call, so LiveKit has nowhere to dispatch one."""
    kind, fleet = ConditionType.FLEET_FULL, facts.fleet
    if fleet is None:
        return Condition(
            type=kind,
            status=False,
            reason="WaitingForObservation",
            message="the workers have not been observed yet",
        )
    count = fleet.by_state
    available, starting = count[WorkerState.AVAILABLE], count[WorkerState.STARTING]
    if available:
        return Condition(
            type=kind,
            status=False,
            reason="WorkersAvailable",
            message=f"{available} workers take new calls",
        )
    if starting:
        return Condition(
            type=kind,
            status=False,
            reason="WorkersStarting",
            message=f"no worker takes new calls yet; {starting} are starting",
        )
    guarded = facts.pending_dispatches is not None
    if guarded and facts.desired_replicas == 0 and not sum(count.values()):
        return Condition(
            type=kind,
            status=False,
            reason="ScaledToZero",
            message="no worker runs (minReplicas 0): the dispatch guard holds the next call "
            "while a worker starts",
        )
    held = (
        f"the dispatch guard holds them ({facts.pending_dispatches} waiting) until a worker can"
        if guarded
        else "a self-hosted LiveKit server drops such dispatches"
    )
    return Condition(
        type=kind,
        status=True,
        reason="NoAvailableWorker",
        message=f"no worker can take a new call ({count[WorkerState.FULL]} full, "
        f"{count[WorkerState.DRAINING]} draining, {count[WorkerState.UNKNOWN]} unknown): "
        f"{held}; raise maxReplicas or loadThreshold",
    )


def decide_conditions(facts: Facts) -> list[Condition]:
    """The five conditions (six for a `command` fleet), in a fixed order, from the facts alone."""
    problem = _problem(facts)
    progressing, p_reason, p_message = _rollout(facts)
    degraded = Condition(
        type=ConditionType.DEGRADED,
        status=problem is not None,
        reason=problem.reason if problem else "AsExpected",
        message=problem.message if problem else "no problem found",
    )
    progress = Condition(
        type=ConditionType.PROGRESSING, status=progressing, reason=p_reason, message=p_message
    )
    decided = [
        _ready(facts, progressing, p_message),
        progress,
        degraded,
        _scaling_limited(facts),
        _fleet_full(facts),
    ]
    if facts.companion is not None and facts.companion.plan is not companions.Plan.RUNTIME:
        c = facts.companion
        words = companions.condition(c.plan, c.fallback, c.serving, c.workers)
        decided.append(
            Condition(
                type=ConditionType.COMPANION,
                status=words.status,
                reason=words.reason,
                message=words.message,
            )
        )
    return decided


def _timestamp(now: datetime.datetime) -> str:
    return now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def render_conditions(
    decided: Sequence[Condition],
    previous: Sequence[Mapping[str, Any]],
    *,
    generation: int,
    now: datetime.datetime,
) -> list[dict[str, Any]]:
    """Conditions as stored; lastTransitionTime moves only when the status flips."""
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    rendered = []
    for condition in decided:
        status = "True" if condition.status else "False"
        old = before.get(condition.type.value)
        same = old is not None and old.get("status") == status and old.get("lastTransitionTime")
        rendered.append(
            {
                "type": condition.type.value,
                "status": status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": old["lastTransitionTime"]
                if same and old
                else _timestamp(now),
                "observedGeneration": generation,
            }
        )
    return rendered


def desired_status(facts: Facts, previous: Mapping[str, Any], *, now: datetime.datetime) -> Status:
    """The whole status the operator owns, given the facts and the stored status."""
    conditions = previous.get("conditions")
    dep = facts.deployment
    status: Status = {
        "observedGeneration": facts.generation,
        "selector": facts.selector,
        "replicas": dep.replicas if dep else 0,
        "readyReplicas": dep.ready_replicas if dep else 0,
        "updatedReplicas": dep.updated_replicas if dep else 0,
        "conditions": render_conditions(
            decide_conditions(facts),
            conditions if isinstance(conditions, list) else [],
            generation=facts.generation,
            now=now,
        ),
    }
    if facts.desired_replicas is not None:
        status["desiredReplicas"] = facts.desired_replicas
    if facts.fleet is not None:
        status.update(fleet_status(facts.fleet))
    if facts.last_scale_time is not None:
        status["lastScaleTime"] = facts.last_scale_time
    # None removes the count (merge patch) when the guard is off
    status["pendingDispatches"] = facts.pending_dispatches
    # and the derivation when no miss-rate target is set
    status["warmHeadroom"] = warm_headroom_status(facts.warm_headroom)
    if facts.companion is not None:
        c = facts.companion
        # None removes a record a fleet no longer needs (merge patch)
        status["companion"] = companions.status_record(c.plan, c.fallback, c.mode)
    return status


def fleet_status(fleet: FleetSummary) -> Status:
    """The status fields that come from the workers' own reports."""
    count = fleet.by_state
    status: Status = {
        "activeJobs": fleet.active_jobs,
        "available": count[WorkerState.AVAILABLE],
        "full": count[WorkerState.FULL],
        "draining": count[WorkerState.DRAINING],
        "starting": count[WorkerState.STARTING],
        "unknown": count[WorkerState.UNKNOWN],
        "unknownWorkers": list(fleet.unknown_pods[:10]),
        "oldWorkerJobs": fleet.old_worker_jobs,
    }
    # None removes a stale load from the stored status (merge patch) when no worker reports one.
    status["load"] = round(fleet.load, 2) if fleet.load is not None else None
    return status


def warm_headroom_status(derived: headroom.WarmHeadroom | None) -> Status | None:
    """`status.warmHeadroom`: the warm workers a miss-rate target asks for and what they were
    derived from, rounded so that the estimates' drift from round to round rewrites the status
    no more often than a person would see a difference; None without a target."""
    if derived is None:
        return None
    shown: Status = {
        "workers": derived.warm_workers,
        "freeSlots": derived.free_slots,
        "slotsPerWorker": derived.slots_per_worker,
        "arrivalsPerMinute": round(derived.arrival_rate_per_s * 60.0, 2),
        "reactionSeconds": round(derived.reaction_s),
        "busyCalls": derived.busy_calls,
        "missRate": derived.miss_rate,
        "capped": derived.capped,
    }
    if derived.mean_call_s is not None:
        shown["meanCallSeconds"] = round(derived.mean_call_s)
    return shown


def status_patch(previous: Mapping[str, Any], desired: Status) -> Status | None:
    """The fields of `desired` that differ from `previous`; None when the status is current.
    A merge patch merges objects: a key that an object field no longer has is sent as None."""
    patch: Status = {}
    for key, value in desired.items():
        before = previous.get(key)
        if before == value:
            continue
        if isinstance(value, dict) and isinstance(before, Mapping):
            value = {**dict.fromkeys(before.keys() - value.keys()), **value}
        patch[key] = value
    return patch or None


def events_for(previous: Mapping[str, Any], desired: Status) -> list[Event]:
    """Events for condition changes: a new or different problem, a full fleet, becoming ready,
    a pause that starts or ends (`_pause_event`)."""
    old = {c.get("type"): c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    events = []
    for condition in desired["conditions"]:
        before = old.get(condition["type"], {})
        changed = (before.get("status"), before.get("reason")) != (
            condition["status"],
            condition["reason"],
        )
        if not changed:
            continue
        warns = condition["type"] in (ConditionType.DEGRADED, ConditionType.FLEET_FULL)
        if warns and condition["status"] == "True":
            events.append(
                Event(type="Warning", reason=condition["reason"], message=condition["message"])
            )
        elif condition["type"] == ConditionType.READY and condition["status"] == "True":
            events.append(
                Event(type="Normal", reason=condition["reason"], message=condition["message"])
            )
        elif condition["type"] == ConditionType.SCALING_LIMITED:
            pause = _pause_event(before, condition)
            if pause is not None:
                events.append(pause)
    return events


def _pause_event(before: Mapping[str, Any], after: Mapping[str, Any]) -> Event | None:
    """One Event when a pause starts (the condition's words) and one when the autoscaler
    decides again; none when autoscaling is turned off instead (nothing resumes)."""
    if after["reason"] == PAUSED:
        return Event(type="Normal", reason=PAUSED, message=after["message"])
    if before.get("reason") == PAUSED and after["reason"] != sizing.Mode.DISABLED.value:
        return Event(
            type="Normal",
            reason=RESUMED,
            message="spec.autoscaling.paused is false: the autoscaler decides the replicas again",
        )
    return None


def facts_from_deployment(deployment: Mapping[str, Any] | None) -> DeploymentFacts | None:
    """What a Deployment object (as read from the API) says about its rollout."""
    if deployment is None:
        return None
    state = deployment.get("status") or {}
    conditions = state.get("conditions") or []
    stuck = any(
        c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded"
        for c in conditions
        if isinstance(c, Mapping)
    )
    return DeploymentFacts(
        generation=int(deployment.get("metadata", {}).get("generation") or 0),
        observed_generation=int(state.get("observedGeneration") or 0),
        replicas=int(state.get("replicas") or 0),
        ready_replicas=int(state.get("readyReplicas") or 0),
        updated_replicas=int(state.get("updatedReplicas") or 0),
        available_replicas=int(state.get("availableReplicas") or 0),
        progress_deadline_exceeded=stuck,
    )


def failures_from_pods(pods: Sequence[Mapping[str, Any]]) -> tuple[PodFailure, ...]:
    """Worker pods (not being deleted) whose container waits for a reason a person must fix:
    the worker's, or an init container or sidecar of spec.podTemplate.initContainers (the
    worker never starts behind one that cannot)."""
    failures = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        pod_status = pod.get("status") or {}
        containers = [
            *(pod_status.get("initContainerStatuses") or []),
            *(pod_status.get("containerStatuses") or []),
        ]
        for container in containers:
            reason, message = kubelet.stuck(container)
            if reason:
                failures.append(
                    PodFailure(pod=str(meta.get("name")), reason=reason, message=message[:160])
                )
    return tuple(sorted(failures, key=lambda f: f.pod))
