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

import enum
from collections.abc import Mapping, Sequence, Set

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


def stale_retirees(workers: Sequence[Worker], retired_before: Set[str]) -> list[Worker]:
    """Retired workers left over from an earlier round (an interrupted scale-down): recycle them.

    A retired worker takes no call until its retirement expires (the runtime's
    AGENT_RETIRE_TIMEOUT_S, 60 s); one that was retired already in the previous observation and
    holds no call is safe to delete at once (the ReplicaSet replaces it).
    """
    return [
        w
        for w in workers
        if w.state is WorkerState.DRAINING
        and not w.pod.terminating
        and w.pod.name in retired_before
        and w.report is not None
        and w.report.active_jobs == 0
    ]


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


def _diff(current: Mapping[str, str], wanted: Mapping[str, str | None]) -> AnnotationPatch | None:
    patch = {key: value for key, value in wanted.items() if current.get(key) != value}
    return patch or None


def protection_patch(
    worker: Worker, *, exact_cost: bool = False, user_keys: frozenset[str] = frozenset()
) -> AnnotationPatch | None:
    """The annotation change a worker needs now, or None (nothing to write).

    A busy worker carries do-not-disrupt, safe-to-evict false and a deletion cost of its calls
    (written when it turns busy; refreshed to the exact count only with `exact_cost`, right
    before a scale-down); an idle one carries none of them. Keys the user sets in the pod
    template (`user_keys`), workers that did not report and terminating pods are left alone.
    """
    if worker.report is None or worker.pod.terminating:
        return None
    current = worker.pod.annotations
    if current.get(DELETION_COST) == VICTIM_COST:
        return None  # a chosen victim keeps its cost until it is gone
    wanted: dict[str, str | None]
    if worker.report.active_jobs > 0:
        cost = current.get(DELETION_COST)
        if exact_cost or cost is None or cost == "0":
            cost = str(worker.report.active_jobs)
        wanted = {DO_NOT_DISRUPT: "true", SAFE_TO_EVICT: "false", DELETION_COST: cost}
    else:
        wanted = dict.fromkeys(MANAGED)
    return _diff(current, {k: v for k, v in wanted.items() if k not in user_keys})


def victim_patch(worker: Worker) -> AnnotationPatch | None:
    """The lowest deletion cost for a worker chosen (and, if it can, agreed) to go."""
    return _diff(worker.pod.annotations, {DELETION_COST: VICTIM_COST})
