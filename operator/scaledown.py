"""Which workers a scale-down removes, and the pod annotations that protect calls.

This module owns the victim order (workers with no call first, never a worker that did not
report, busy ones only when scaleDown.busyWorkers is Drain, fewest calls first) and the pod
annotations the operator manages: `controller.kubernetes.io/pod-deletion-cost` (so the
ReplicaSet removes exactly the chosen victims), and, while a worker holds calls,
`karpenter.sh/do-not-disrupt` and the Cluster Autoscaler's `safe-to-evict: "false"` (so node
autoscalers leave it alone). Annotations change when a worker turns busy or idle and right
before a scale-down, never on every observation. Pure: no I/O, no kopf, kubernetes, aiohttp or
prometheus_client.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

from agentworker_operator.observation import Worker, WorkerState

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"
SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"
MANAGED = (DELETION_COST, DO_NOT_DISRUPT, SAFE_TO_EVICT)
VICTIM_COST = "-2147483648"
"""The lowest int32: a retired victim goes before any other pod of the ReplicaSet."""

AnnotationPatch = dict[str, str | None]
"""Annotations to set (a value) or remove (None), as a JSON merge patch of metadata.annotations."""


def victim_order(workers: Sequence[Worker], *, drain_busy: bool) -> list[Worker]:
    """Workers a scale-down may remove, best first; UNKNOWN and terminating ones never.

    Not-yet-started workers first (no call, and the ReplicaSet takes not-ready pods first
    anyway), then ones already draining (retired earlier), then idle ones with the lowest load,
    then, only with `drain_busy`, busy ones with the fewest calls (they drain).
    """
    members = [w for w in workers if not w.pod.terminating]
    starting = [w for w in members if w.state is WorkerState.STARTING]
    draining = [w for w in members if w.state is WorkerState.DRAINING]
    serving = [w for w in members if w.state in (WorkerState.AVAILABLE, WorkerState.FULL)]
    idle = sorted(
        (w for w in serving if not w.busy),
        key=lambda w: (w.report.load if w.report else 1.0, w.pod.name),
    )
    order = [*starting, *draining, *idle]
    if drain_busy:
        order += sorted((w for w in serving if w.busy), key=lambda w: (w.active_jobs, w.pod.name))
    return order


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleDownPlan:
    """How a scale-down from `current` to `target` replicas goes, decided before any worker
    is asked: replicas with no pod go first and need no handshake; then the candidates are
    asked in order until `wanted` agree; `blocked` says why no worker may go now."""

    unmade: int
    """Replicas the Deployment never created (quota, a pending pod): removed as they are."""
    wanted: int
    """Workers that must agree to go."""
    candidates: tuple[Worker, ...]
    blocked: tuple[str, str] | None = None
    """(reason, message) when the workers may not be touched: nothing is asked then."""


def plan_scale_down(
    workers: Sequence[Worker],
    *,
    current: int,
    target: int,
    drain_busy: bool,
    rolling_out: bool,
    unseen: int = 0,
) -> ScaleDownPlan:
    """The plan of a scale-down: victims chosen and blockers checked before any /retire.

    - Replicas beyond the pods that exist (`current` over the members and the `unseen` pods,
      those the Deployment made and the pod watch has not shown) go first: lowering the
      Deployment by them removes no pod.
    - While pods are unseen nothing else goes: the operator cannot tell whether one is busy or
      not ready (the ReplicaSet would remove a not-ready one before the victims).
    - During a rollout nothing else goes: the Deployment controller splits a scale-down across
      the old and new ReplicaSets, and pod-deletion-cost ranks pods within one only.
    - A not-ready pod that is not a victim blocks: the ReplicaSet removes it before any other.
    """
    members = [w for w in workers if not w.pod.terminating]
    unmade = min(max(0, current - len(members) - unseen), max(0, current - target))
    wanted = max(0, current - target - unmade)
    candidates = tuple(victim_order(workers, drain_busy=drain_busy))
    if not wanted:
        return ScaleDownPlan(unmade=unmade, wanted=0, candidates=())
    if unseen:
        return ScaleDownPlan(
            unmade=unmade,
            wanted=wanted,
            candidates=candidates,
            blocked=(
                "PodsNotSeen",
                f"scale-down of {wanted} workers waits: the Deployment made {unseen} pods the "
                "pod watch has not shown, and one of them may hold a call",
            ),
        )
    if rolling_out:
        return ScaleDownPlan(
            unmade=unmade,
            wanted=wanted,
            candidates=candidates,
            blocked=(
                "RolloutInProgress",
                f"scale-down of {wanted} workers waits for the rollout: the Deployment "
                "controller would split it across the old and new ReplicaSets, where the "
                "operator cannot choose the victims",
            ),
        )
    blocking = blocking_pods(workers, candidates[:wanted])
    if blocking:
        return ScaleDownPlan(
            unmade=unmade,
            wanted=wanted,
            candidates=candidates,
            blocked=(
                "WorkersNotReady",
                f"scale-down waits: {', '.join(blocking[:3])} not ready, and the ReplicaSet "
                "removes a not-ready pod before any other",
            ),
        )
    return ScaleDownPlan(unmade=unmade, wanted=wanted, candidates=candidates)


def retirements_to_withdraw(
    workers: Sequence[Worker], *, replicas: int, keep: Set[str] = frozenset()
) -> list[Worker]:
    """Retired workers no scale-down is about to remove: they serve again (DELETE /retire).

    The Deployment has `replicas`; the ReplicaSet removes the pods beyond that, retired
    (not-ready) ones first, the chosen victims (lowest cost) before them: that many retirees
    stay retired, the rest are withdrawn. `keep`: victims of this very round.
    """
    members = [w for w in workers if not w.pod.terminating]
    retired = [w for w in members if w.report is not None and w.report.retired]
    leaving = max(0, len(members) - replicas)
    retired.sort(key=lambda w: (w.pod.name not in keep, not _is_victim(w), w.pod.name))
    return [w for w in retired[leaving:] if w.pod.name not in keep]


def _is_victim(worker: Worker) -> bool:
    return worker.pod.annotations.get(DELETION_COST) == VICTIM_COST


class Handshake(enum.Enum):
    """How a chosen worker comes to agree to go."""

    ASK = "ask"
    """This runtime, idle: POST /retire; it may refuse if a call arrived meanwhile."""
    AGREED = "agreed"
    """Nothing to ask: it takes no call (starting, retired) or may go busy (Drain), or it
    cannot be asked (the official worker) and is idle: deletion cost, then a SIGTERM drain."""
    REFUSED = "refused"
    """It holds calls (or might: no report) and busy workers are waited for."""


def handshake(worker: Worker, *, drain_busy: bool) -> Handshake:
    """Whether a victim candidate is asked to retire, taken as it is, or left alone."""
    if worker.state in (WorkerState.STARTING, WorkerState.DRAINING):
        return Handshake.AGREED
    if worker.report is None:
        return Handshake.REFUSED
    if worker.busy:
        return Handshake.AGREED if drain_busy else Handshake.REFUSED
    return Handshake.ASK if worker.report.retirable else Handshake.AGREED


def blocking_pods(workers: Sequence[Worker], victims: Sequence[Worker]) -> list[str]:
    """Pods that are not ready and not victims: the ReplicaSet would remove them first."""
    chosen = {w.pod.name for w in victims}
    return sorted(
        w.pod.name
        for w in workers
        if not w.pod.terminating and not w.pod.ready and w.pod.name not in chosen
    )


def as_written(worker: Worker, written: Mapping[str, str | None]) -> Worker:
    """The worker with the annotations the operator last wrote on its pod: the watch's copy
    may lag them, and a decision made on the lagging copy could skip a needed write."""
    if not written:
        return worker
    annotations = {k: v for k, v in worker.pod.annotations.items() if written.get(k, v) is not None}
    annotations.update({k: v for k, v in written.items() if v is not None})
    return dataclasses.replace(worker, pod=dataclasses.replace(worker.pod, annotations=annotations))


def _diff(current: Mapping[str, str], wanted: Mapping[str, str | None]) -> AnnotationPatch | None:
    patch = {key: value for key, value in wanted.items() if current.get(key) != value}
    return patch or None


def protection_patch(
    worker: Worker, *, exact_cost: bool = False, user_keys: frozenset[str] = frozenset()
) -> AnnotationPatch | None:
    """The annotation change a worker needs now, or None (nothing to write).

    A busy worker carries do-not-disrupt, safe-to-evict false and a deletion cost of its calls
    (written when it turns busy; refreshed to the exact count only with `exact_cost`, right
    before a scale-down); an idle one carries none of them. A chosen victim's lowest cost holds
    only while it reports retired or draining: one that outlived its retirement (the operator
    was down) is protected again like any other. Keys the user sets in the pod
    template (`user_keys`), workers that did not report and terminating pods are left alone.
    """
    if worker.report is None or worker.pod.terminating:
        return None
    current = worker.pod.annotations
    if _is_victim(worker) and worker.report.draining:
        return None  # a chosen victim keeps its cost while it is on its way out
    wanted: dict[str, str | None]
    if worker.report.active_jobs > 0:
        cost = current.get(DELETION_COST)
        if exact_cost or cost is None or cost in ("0", VICTIM_COST):
            cost = str(worker.report.active_jobs)
        wanted = {DO_NOT_DISRUPT: "true", SAFE_TO_EVICT: "false", DELETION_COST: cost}
    else:
        wanted = dict.fromkeys(MANAGED)
    return _diff(current, {k: v for k, v in wanted.items() if k not in user_keys})


def victim_patch(worker: Worker) -> AnnotationPatch | None:
    """The lowest deletion cost for a worker chosen (and, if it can, agreed) to go."""
    return _diff(worker.pod.annotations, {DELETION_COST: VICTIM_COST})
