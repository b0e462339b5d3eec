"""The autoscaler: how many workers an AgentWorker should have, and why.

This module owns one pure decision, `decide(autoscaling, workers, current, history, now)`, with
the Horizontal Pod Autoscaler's rules where they apply (the usage ratio with a 10 % tolerance,
missing metrics assumed 0 when scaling up and full when scaling down, stabilization windows in
which the lowest recommendation wins for scale-up and the highest for scale-down, the scaling
policies and selectPolicy that `policies` computes) and two of its own: warm headroom (a
number of workers below their load threshold, of free call slots, or a percentage of the
serving workers kept available, so a new call always finds a worker; with a miss-rate target
also the free slots `headroom` derives for it, which `Demand` brings) and a busy floor
(WaitForIdle never goes below the workers that hold calls). Draining and terminating workers
are occupied capacity, never available. It does no I/O, reads no clock and imports no kopf,
kubernetes, aiohttp or prometheus_client; the history of recommendations and scale events is
a value the caller keeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from agentworker_operator import headroom, observation, policies
from agentworker_operator import spec as specs
from agentworker_operator.observation import Worker, WorkerState

TOLERANCE = 0.1
"""HPA's default: no change while the usage ratio is within 10 % of 1."""
MIN_TARGET_LOAD = 0.01


@dataclass(frozen=True, slots=True, kw_only=True)
class History:
    """What the autoscaler decided before: recommendations and actual scale events (seconds)."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, recommended replicas) of earlier decisions, oldest first."""
    scale_events: tuple[tuple[float, int], ...] = ()
    """(time, replicas added (> 0) or removed (< 0)) of earlier scales, oldest first."""

    def recommended(self, now: float, replicas: int, *, keep_s: float) -> History:
        """This history with a recommendation added and entries older than keep_s dropped."""
        kept = tuple(r for r in self.recommendations if r[0] > now - keep_s)
        return History(recommendations=(*kept, (now, replicas)), scale_events=self.scale_events)

    def scaled(self, now: float, delta: int, *, keep_s: float) -> History:
        """This history with a scale event added and entries older than keep_s dropped."""
        kept = tuple(e for e in self.scale_events if e[0] > now - keep_s)
        return History(recommendations=self.recommendations, scale_events=(*kept, (now, delta)))


def history_span_s(autoscaling: specs.Autoscaling) -> float:
    """How long history entries matter: the longest window or policy period."""
    up, down = autoscaling.scale_up, autoscaling.scale_down
    return max(
        up.stabilization_window_s,
        down.stabilization_window_s,
        up.longest_period_s,
        down.longest_period_s,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """Why the decision is not what the load alone asks for (the ScalingLimited condition)."""

    reason: str
    """AtMaxReplicas, AtMinReplicas, BusyWorkers, UnknownWorkers, WorkersUnreadable,
    ScaleUpLimit, ScaleDownLimit, WorkersNotReady, RolloutInProgress, PodsNotSeen."""
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ScaleDecision:
    """Replicas to run, the recommendation to remember, and why, for a person."""

    replicas: int
    recommendation: int
    """The bounded recommendation of this round, before stabilization (kept in History)."""
    reason: str
    """CamelCase: LoadAboveTarget, HeadroomLow, DispatchesWaiting, LoadBelowTarget, IdleToZero,
    AboveMaxReplicas, BelowMinReplicas, Stable."""
    message: str
    """E.g. `load 0.82 > target 0.50: 3 -> 5 workers`."""
    limit: Limit | None = None
    removable: int = 0
    """How many workers a scale-down may remove now (idle or draining ones, or busy with Drain)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Demand:
    """What the workers' loads do not show: calls waiting at the door, and the fleet's idleness."""

    waiting: int = 0
    """Dispatches the dispatch guard holds: no worker took them yet."""
    free_slots: int = 0
    """New jobs the available workers can take now (guard.free_slots)."""
    slots_per_worker: int = 1
    """Jobs a new worker can take (at least 1)."""
    idle_s: float = 0.0
    """Seconds since a worker last held a call or a dispatch last waited."""
    warm: headroom.WarmHeadroom | None = None
    """The warm headroom the miss-rate target asks for (`estimates`); None without a target."""
    unseen_pods: int = 0
    """Pods the Deployment made that the pod watch has not shown (`observation.unseen_pods`):
    they may hold calls, so they count as workers that cannot be read, never as pods yet to be
    made (which a scale-down may take first)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Counts:
    loads: tuple[float, ...]
    available: int
    full: int
    unknown: int
    starting: int
    members: int
    """Worker pods not being deleted."""
    idle_removable: int
    busy_removable: int

    @property
    def serving(self) -> int:
        return len(self.loads) + self.unknown + self.starting


def _count(workers: Sequence[Worker], current: int, unseen: int = 0) -> _Counts:
    members = [w for w in workers if not w.pod.terminating]
    by = {state: [w for w in members if w.state is state] for state in WorkerState}
    known = by[WorkerState.AVAILABLE] + by[WorkerState.FULL]
    # pods the Deployment has yet to create; those it made and the watch has not shown may
    # serve calls: they are unknown workers
    missing = max(0, current - len(members) - unseen)
    return _Counts(
        loads=tuple(w.report.load for w in known if w.report is not None),
        available=len(by[WorkerState.AVAILABLE]),
        full=len(by[WorkerState.FULL]),
        unknown=len(by[WorkerState.UNKNOWN]) + unseen,
        starting=len(by[WorkerState.STARTING]) + missing,
        members=len(members) + unseen,
        idle_removable=len(by[WorkerState.DRAINING])
        + len(by[WorkerState.STARTING])
        + missing
        + sum(1 for w in known if not w.busy),
        busy_removable=sum(1 for w in known if w.busy),
    )


def _by_load(counts: _Counts, target: float, current: int) -> int:
    """Serving workers the load asks for (HPA's formula, missing metrics by direction). Where
    the load asks for no change, that is the workers serving, but never more than the
    Deployment keeps: pods over its replicas are on their way out (a scale-down whose pod
    deletion the watch has not shown yet, a rollout's surge), and a victim that exited at
    once answers nothing, so it would count as a full unknown worker and be made again."""
    keep = min(counts.serving, current)
    if not counts.loads:
        return keep
    total = sum(counts.loads)
    ratio = total / len(counts.loads) / target
    if abs(ratio - 1.0) <= TOLERANCE:
        return keep
    if ratio > 1.0:  # scale-up: starting and unknown workers count as idle
        if total / (counts.serving * target) <= 1.0 + TOLERANCE:
            return keep
        return math.ceil(total / target - 1e-9)
    # scale-down: unknown workers count as full; starting ones are kept
    measured = len(counts.loads) + counts.unknown
    pessimistic = total + counts.unknown
    if pessimistic / (measured * target) >= 1.0 - TOLERANCE:
        return keep
    # never more than the no-change answer: with workers beyond the replicas (on their way
    # out), the count could pass it, and a lower load then ask for more workers than this
    return min(keep, math.ceil(pessimistic / target - 1e-9) + counts.starting)


def _stabilize(
    autoscaling: specs.Autoscaling, recommendation: int, current: int, history: History, now: float
) -> int:
    """HPA's stabilization: lowest within the up window, highest within the down window."""
    up_cutoff = now - autoscaling.scale_up.stabilization_window_s
    down_cutoff = now - autoscaling.scale_down.stabilization_window_s
    up = down = recommendation
    for when, remembered in history.recommendations:
        value = min(max(remembered, autoscaling.min_replicas), autoscaling.max_replicas)
        if when > up_cutoff:
            up = min(up, value)
        if when > down_cutoff:
            down = max(down, value)
    return min(max(current, up), down)


def _rate_limit(
    autoscaling: specs.Autoscaling, wanted: int, current: int, history: History, now: float
) -> int:
    """The HPA's scaling policies: `wanted` within the limit of the direction's policies (the
    one allowing the biggest change with selectPolicy Max, the smallest with Min), each from
    the replicas at the start of its period. Disabled forbids the direction, but not the move
    into [minReplicas, maxReplicas]."""
    if wanted > current:
        behavior = autoscaling.scale_up
        if behavior.select_policy is specs.SelectPolicy.DISABLED:
            return max(current, min(wanted, autoscaling.min_replicas))
        limit = policies.up_limit(behavior, current, history.scale_events, now=now)
        return max(current, min(wanted, limit))
    if wanted < current:
        behavior = autoscaling.scale_down
        if behavior.select_policy is specs.SelectPolicy.DISABLED:
            return min(current, max(wanted, autoscaling.max_replicas))
        limit = policies.down_limit(behavior, current, history.scale_events, now=now)
        return min(current, max(wanted, limit))
    return current


def decide(
    autoscaling: specs.Autoscaling,
    workers: Sequence[Worker],
    *,
    current: int,
    history: History,
    now: float,
    demand: Demand = Demand(),
) -> ScaleDecision:
    """The replicas an AgentWorker should run now, always within [minReplicas, maxReplicas]."""
    low, high = autoscaling.min_replicas, autoscaling.max_replicas
    target = max(autoscaling.target_load, MIN_TARGET_LOAD)
    counts = _count(workers, current, demand.unseen_pods)
    waiting = _for_waiting(counts, demand)
    if observation.blind(_by_state(counts)):
        blind_waiting = _for_waiting(counts, demand, blind=True)
        return _hold_blind(autoscaling, workers, counts, current, blind_waiting)
    by_load = _by_load(counts, target, current)
    by_headroom = _headroom(autoscaling, counts, demand)
    raw = max(by_load, by_headroom, waiting)
    bounded = min(max(raw, low), high)
    stable = _stabilize(autoscaling, bounded, current, history, now)
    limited = _rate_limit(autoscaling, stable, current, history, now)
    removable = counts.idle_removable
    if autoscaling.scale_down.busy_workers is specs.BusyWorkers.DRAIN:
        removable += counts.busy_removable
    replicas = limited
    if replicas < current:  # the busy floor; maxReplicas still wins (busy victims then drain)
        kept = max(counts.members, current) - removable
        replicas = max(replicas, min(kept, current, high))
    reason, message = _explain(
        counts, by_load, by_headroom, autoscaling, current, replicas, demand, waiting
    )
    limit = _limit(autoscaling, counts, raw, bounded, stable, limited, replicas, current)
    return ScaleDecision(
        replicas=replicas,
        recommendation=bounded,
        reason=reason,
        message=message,
        limit=limit,
        removable=removable,
    )


def _headroom(autoscaling: specs.Autoscaling, counts: _Counts, demand: Demand) -> int:
    """Workers the warm headroom asks for (`_for_headroom`) or, when more, those that hold the
    free slots of a miss-rate target; none once a fleet allowed to reach zero has been idle
    for scaleToZeroAfter."""
    idle = not counts.busy_removable and not counts.full and not demand.waiting
    if (
        autoscaling.min_replicas == 0
        and idle
        and demand.idle_s >= autoscaling.scale_to_zero_after_s
    ):
        return 0
    warm = _for_headroom(autoscaling.headroom, counts, demand)
    if demand.warm is not None:  # the miss rate's slots; the headroom's amount stays the floor
        target = demand.warm
        warm = max(warm, _for_slots(counts, demand, target.free_slots, target.warm_workers))
    # with minReplicas 0 the last worker stays until then, whatever the headroom
    return max(warm, 1) if autoscaling.min_replicas == 0 else warm


def _for_headroom(room: specs.Headroom, counts: _Counts, demand: Demand) -> int:
    """Serving workers the headroom's amount asks for. Workers (and percent): the full ones
    plus that many below their threshold, an unknown worker taken as full but covered no more
    than the warm workers themselves (every worker added while unreadable would be unknown
    too, and ask for one more). Slots: those that hold that many free slots (`_for_slots`)."""
    if room.unit is specs.HeadroomUnit.SLOTS:
        per_worker = max(1, demand.slots_per_worker)
        return _for_slots(counts, demand, room.amount, -(-room.amount // per_worker))
    warm = _warm_workers(room, counts)
    return counts.full + min(counts.unknown, warm) + warm


def _warm_workers(room: specs.Headroom, counts: _Counts) -> int:
    """Workers kept below their threshold: the amount, or for percent P the fewest W with
    W >= P % of (full + W), so that P % of the serving workers are available once they are
    added: ceil(full * P / (100 - P))."""
    if room.unit is specs.HeadroomUnit.PERCENT:
        return -(-counts.full * room.amount // (100 - room.amount))
    return room.amount


def _for_slots(counts: _Counts, demand: Demand, free_slots: int, warm_workers: int) -> int:
    """Serving workers that hold `free_slots` free slots: the available workers' free slots
    and those of the workers on their way count; each `slots per worker` short asks for one
    more worker, each as many over lets one go (the load and the busy floor say which). An
    unknown worker may be full: it holds no slot, but, as for the warm workers, it covers no
    more than `warm_workers` (those the slots need)."""
    per_worker = max(1, demand.slots_per_worker)
    coming = counts.starting + counts.unknown - min(counts.unknown, warm_workers)
    short = free_slots - demand.free_slots - coming * per_worker
    return counts.serving + math.ceil(short / per_worker)


def _for_waiting(counts: _Counts, demand: Demand, *, blind: bool = False) -> int:
    """Serving workers the waiting dispatches ask for: those not covered by free slots or by
    the workers on their way get new workers (0 when nothing waits). `blind`: the workers that
    cannot be read count as on their way too (they may be free); else the same dispatch would
    add a worker every round, each new one unreadable as well, up to maxReplicas."""
    if demand.waiting <= 0:
        return 0
    per_worker = max(1, demand.slots_per_worker)
    coming = counts.starting + (counts.unknown if blind else 0)
    short = demand.waiting - demand.free_slots - coming * per_worker
    return counts.serving + max(0, math.ceil(short / per_worker))


def _by_state(counts: _Counts) -> dict[WorkerState, int]:
    return {
        WorkerState.AVAILABLE: counts.available,
        WorkerState.FULL: counts.full,
        WorkerState.UNKNOWN: counts.unknown,
    }


def _hold_blind(
    autoscaling: specs.Autoscaling,
    workers: Sequence[Worker],
    counts: _Counts,
    current: int,
    waiting: int,
) -> ScaleDecision:
    """Too few workers can be read: keep the size (raised to minReplicas only), as the HPA
    does without metrics. Waiting dispatches are calls the operator saw itself, not a
    worker's word: they still add workers, up to maxReplicas."""
    replicas = max(current, autoscaling.min_replicas, min(waiting, autoscaling.max_replicas))
    unreadable = [w for w in workers if w.state is WorkerState.UNKNOWN]
    said = [f"{w.pod.name}: {w.error or 'no report'}" for w in unreadable[:3]]
    unseen = counts.unknown - len(unreadable)
    if len(said) < 3 and unseen > 0:
        said.append(f"{unseen} not shown by the pod watch yet")
        unseen = 0
    named = "; ".join(said)
    left = len(unreadable) - 3 + unseen
    more = f" and {left} more" if left > 0 else ""
    message = (
        f"{counts.unknown} of {counts.members} workers cannot be read ({named}{more}): "
        f"holding {replicas} workers until they can"
    )
    return ScaleDecision(
        replicas=replicas,
        recommendation=replicas,
        reason="WorkersUnreadable",
        message=message,
        limit=Limit(reason="WorkersUnreadable", message=message),
    )


def _load_text(counts: _Counts) -> str:
    if not counts.loads:
        return "no load reported"
    return f"load {sum(counts.loads) / len(counts.loads):.2f}"


def _explain(
    counts: _Counts,
    by_load: int,
    by_headroom: int,
    autoscaling: specs.Autoscaling,
    current: int,
    replicas: int,
    demand: Demand,
    waiting: int,
) -> tuple[str, str]:
    target = autoscaling.target_load
    change = f"{current} -> {replicas} workers"
    warm = _warm_text(counts, autoscaling, demand)
    if replicas > current:
        if waiting and waiting >= max(by_load, by_headroom):
            return "DispatchesWaiting", f"{demand.waiting} dispatches wait for a worker: {change}"
        if by_headroom > by_load:
            return "HeadroomLow", f"{warm}: {change}"
        if by_load > counts.serving:
            return "LoadAboveTarget", f"{_load_text(counts)} > target {target:.2f}: {change}"
        if current < autoscaling.min_replicas:
            return "BelowMinReplicas", f"below minReplicas {autoscaling.min_replicas}: {change}"
        # the workers already up (a scale-up another operator process started) carry the load
        return "LoadAboveTarget", f"{_load_text(counts)} on {counts.serving} workers: {change}"
    if replicas < current:
        if current > autoscaling.max_replicas:
            return "AboveMaxReplicas", f"above maxReplicas {autoscaling.max_replicas}: {change}"
        if replicas == 0:
            idle = f"{demand.idle_s:.0f}s"
            return "IdleToZero", f"no call and no dispatch for {idle}: {change}"
        return "LoadBelowTarget", f"{_load_text(counts)} < target {target:.2f}: {change}"
    return "Stable", f"{_load_text(counts)}, target {target:.2f}, {warm}: {current} workers"


def _warm_text(counts: _Counts, autoscaling: specs.Autoscaling, demand: Demand) -> str:
    """The warm headroom as it stands, e.g. `2 of 1 warm workers available`, `3 of 4 free
    slots available` or, when a miss-rate target asks for more, `5 of 9 free slots for
    misses <= 0.1 %`."""
    room, target = autoscaling.headroom, demand.warm
    slots = demand.free_slots + counts.starting * max(1, demand.slots_per_worker)
    floor = _for_headroom(room, counts, demand)
    if (
        target is not None
        and _for_slots(counts, demand, target.free_slots, target.warm_workers) > floor
    ):
        misses = f"misses <= {target.miss_rate * 100:.2g} %"
        return f"{slots} of {target.free_slots} free slots for {misses}"
    if room.unit is specs.HeadroomUnit.SLOTS:
        return f"{slots} of {room.amount} free slots available"
    free = counts.available + counts.starting
    text = f"{free} of {_warm_workers(room, counts)} warm workers available"
    return f"{text} ({room.amount} %)" if room.unit is specs.HeadroomUnit.PERCENT else text


def _limit(
    autoscaling: specs.Autoscaling,
    counts: _Counts,
    raw: int,
    bounded: int,
    stable: int,
    limited: int,
    replicas: int,
    current: int,
) -> Limit | None:
    if raw > bounded:
        return Limit(
            reason="AtMaxReplicas",
            message=f"{raw} workers wanted, held at maxReplicas {autoscaling.max_replicas}",
        )
    if replicas > limited:
        held = replicas - limited
        if counts.unknown and held <= counts.unknown:
            return Limit(
                reason="UnknownWorkers",
                message=f"{counts.unknown} workers did not report; they are never removed "
                f"as idle: {replicas} workers kept instead of {limited}",
            )
        return Limit(
            reason="BusyWorkers",
            message=f"{held} more workers would go, but they hold calls "
            f"(scaleDown.busyWorkers WaitForIdle): {replicas} workers kept",
        )
    if raw < bounded and replicas == bounded:
        return Limit(
            reason="AtMinReplicas",
            message=f"{raw} workers would do, held at minReplicas {autoscaling.min_replicas}",
        )
    if limited != stable:
        up = stable > current
        return Limit(
            reason="ScaleUpLimit" if up else "ScaleDownLimit",
            message=f"{stable} workers wanted, {limited} now: {_policy_text(autoscaling, up=up)}",
        )
    return None


def _policy_text(autoscaling: specs.Autoscaling, *, up: bool) -> str:
    """The direction's policies for a person, e.g. `scaleUp adds at most 4 workers per 15s
    or 100 % per 15s, whichever adds more`."""
    behavior = autoscaling.scale_up if up else autoscaling.scale_down
    direction, verb = ("scaleUp", "adds") if up else ("scaleDown", "removes")
    if behavior.select_policy is specs.SelectPolicy.DISABLED:
        return f"{direction}.selectPolicy is Disabled"
    each = " or ".join(
        f"{p.value} {'workers' if p.type is specs.PolicyType.PODS else '%'} per {p.period_s:g}s"
        for p in behavior.policies
    )
    text = f"{direction} {verb} at most {each}"
    if len(behavior.policies) == 1:
        return text
    more = "more" if behavior.select_policy is specs.SelectPolicy.MAX else "less"
    return f"{text}, whichever {verb} {more}"
