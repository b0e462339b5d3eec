"""How fast the autoscaler may move, and how much spare capacity it keeps: typed and parsed.

This module owns the meaning and the defaults of `spec.autoscaling.scaleUp`/`scaleDown` (the
Horizontal Pod Autoscaler's scaling policies, `selectPolicy` and stabilization windows, plus
the shorthand `stepPods` per `period` for one Pods policy) and of the warm headroom
(`spec.autoscaling.headroom`: workers, slots or percent, and a miss-rate target;
`minAvailableWorkers` is the old spelling of `headroom.workers`). `spec` reads the rest of the
spec and re-exports these types; `up_limit` and `down_limit` say what the policies allow
given the scales already made, and `autoscaler` applies that. It does no I/O and imports no kopf,
kubernetes, aiohttp or prometheus_client.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from agentworker_operator import fields, headroom


class BusyWorkers(enum.StrEnum):
    """What a scale-down does when it would need to remove workers that hold calls."""

    WAIT_FOR_IDLE = "WaitForIdle"
    """Never go below the number of busy workers: wait until enough of them are idle."""
    DRAIN = "Drain"
    """Remove busy workers too (fewest calls first); they drain for up to drainTimeout."""


class PolicyType(enum.StrEnum):
    """What a scaling policy's value counts (the HPA's policy types)."""

    PODS = "Pods"
    """Workers added or removed per period."""
    PERCENT = "Percent"
    """A percentage of the workers the fleet had when the period began."""


class SelectPolicy(enum.StrEnum):
    """Which of a direction's policies holds when they allow different changes (the HPA's)."""

    MAX = "Max"
    """The policy that allows the biggest change."""
    MIN = "Min"
    """The policy that allows the smallest change."""
    DISABLED = "Disabled"
    """No change in this direction; minReplicas and maxReplicas still hold."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingPolicy:
    """One limit on how fast the fleet changes in one direction (the HPA's scaling policy)."""

    type: PolicyType
    value: int
    """Workers (Pods) or percent of the workers at the period's start (Percent), at least 1."""
    period_s: float
    """Seconds back in which the changes already made count against the policy."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingBehavior:
    """How fast the autoscaler may move in one direction."""

    stabilization_window_s: float
    """Seconds of recommendations considered before moving (the highest wins for scale-down)."""
    policies: tuple[ScalingPolicy, ...]
    """The limits per period; `select_policy` says which of them holds."""
    select_policy: SelectPolicy = SelectPolicy.MAX
    """Max (default): the policy allowing the biggest change; Min: the smallest; Disabled: no
    change in this direction."""
    busy_workers: BusyWorkers = BusyWorkers.WAIT_FOR_IDLE
    """Scale-down only: whether busy workers may be removed (they drain) or are waited for."""

    @property
    def longest_period_s(self) -> float:
        """The longest period of the policies: how long a scale event matters, in seconds."""
        return max((policy.period_s for policy in self.policies), default=0.0)


class HeadroomUnit(enum.StrEnum):
    """What the warm headroom's amount counts."""

    WORKERS = "workers"
    """Workers below their load threshold."""
    SLOTS = "slots"
    """Free call slots on the available workers (and on those starting)."""
    PERCENT = "percent"
    """A percentage of the serving workers that is below the load threshold."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Headroom:
    """Warm headroom: spare capacity kept ahead of the calls, so a new call finds a worker."""

    unit: HeadroomUnit = HeadroomUnit.WORKERS
    """What `amount` counts: workers (default), slots or percent."""
    amount: int = 1
    """Workers below loadThreshold (workers, default 1), free call slots (slots), or the
    percentage of the serving workers kept below loadThreshold, rounded up (percent); 0 keeps
    no headroom."""
    miss_rate: float | None = None
    """The fraction of calls that may find no free worker slot (0.001: 0.1 %); the operator
    keeps the warm workers that the job starts it sees and its own measured reaction time ask
    for, never less than `amount` asks. None (the default): `amount` alone."""


def pods_policy(step: int, period_s: float) -> tuple[ScalingPolicy, ...]:
    """The policies of the shorthand `stepPods` per `period`: one Pods policy."""
    return (ScalingPolicy(type=PolicyType.PODS, value=step, period_s=period_s),)


DEFAULT_SCALE_UP = ScalingBehavior(
    stabilization_window_s=0.0,
    policies=(
        ScalingPolicy(type=PolicyType.PODS, value=4, period_s=15.0),
        ScalingPolicy(type=PolicyType.PERCENT, value=100, period_s=15.0),
    ),
)
"""The HPA's default scale-up: 4 workers or doubling per 15 s, whichever adds more."""
DEFAULT_SCALE_DOWN = ScalingBehavior(stabilization_window_s=300.0, policies=pods_policy(1, 60.0))
"""One worker per minute, after 5 minutes of lower recommendations (slower than the HPA's)."""
SHORTHAND_UP = (4, 15.0)
"""(stepPods, period in seconds) when a scaleUp sets only one of the two."""
SHORTHAND_DOWN = (1, 60.0)
"""(stepPods, period in seconds) when a scaleDown sets only one of the two."""


def parse_behavior(
    behavior: fields.FieldReader,
    default: ScalingBehavior,
    shorthand: tuple[int, float],
    *,
    down: bool = False,
) -> ScalingBehavior:
    """spec.autoscaling.scaleUp or scaleDown (`down`): the `default`'s window and policies
    where unset, `shorthand` (stepPods, period) for the half of the shorthand not set."""
    busy = BusyWorkers.WAIT_FOR_IDLE
    if down:
        busy = behavior.choice("busyWorkers", BusyWorkers, BusyWorkers.WAIT_FOR_IDLE)
    elif behavior.get("busyWorkers") is not None:
        raise fields.InvalidSpecError(
            behavior.at("busyWorkers"), behavior.get("busyWorkers"), _UP_ONLY
        )
    return ScalingBehavior(
        stabilization_window_s=behavior.duration_s(
            "stabilizationWindow", f"{int(default.stabilization_window_s)}s"
        ),
        policies=_parse_policies(behavior, default, shorthand, down=down),
        select_policy=behavior.choice("selectPolicy", SelectPolicy, SelectPolicy.MAX),
        busy_workers=busy,
    )


MAX_POLICIES = 10
MAX_POLICY_PERIOD_S = 1800
"""The longest periodSeconds of a policy (the HPA's limit: 30 minutes)."""
_SHORTHAND = ("stepPods", "period")
_BESIDE_POLICIES = (
    "is the shorthand for one Pods policy and cannot stand beside policies; set one (an "
    "AgentWorker created before policies existed holds stepPods and period from the CRD's "
    "former defaults: remove both)"
)


def _parse_policies(
    behavior: fields.FieldReader,
    default: ScalingBehavior,
    shorthand: tuple[int, float],
    *,
    down: bool,
) -> tuple[ScalingPolicy, ...]:
    """The policies, or the one Pods policy of the shorthand stepPods per period, or the
    default's when neither is set."""
    short = [key for key in _SHORTHAND if behavior.get(key) is not None]
    if behavior.get("policies") is None:
        if not short:
            return default.policies
        step = behavior.integer("stepPods", shorthand[0], low=1, high=1000)
        return pods_policy(step, behavior.duration_s("period", f"{shorthand[1]:g}s"))
    if short:
        raise fields.InvalidSpecError(
            behavior.at(short[0]), behavior.get(short[0]), _BESIDE_POLICIES
        )
    raw = behavior.json_list("policies")
    if not 1 <= len(raw) <= MAX_POLICIES:
        raise fields.InvalidSpecError(
            behavior.at("policies"),
            raw,
            f"is not a list of 1 to {MAX_POLICIES} policies (selectPolicy Disabled stops this "
            "direction)",
        )
    return tuple(
        _parse_policy(fields.FieldReader(item, f"{behavior.at('policies')}[{i}]"), down=down)
        for i, item in enumerate(raw)
    )


def _parse_policy(policy: fields.FieldReader, *, down: bool) -> ScalingPolicy:
    for key in ("type", "value", "periodSeconds"):
        if policy.get(key) is None:
            raise fields.InvalidSpecError(policy.at(key), None, "is not set but is required")
    kind = policy.choice("type", PolicyType, PolicyType.PODS)
    # removing more than all the workers is removing all of them
    high = 100 if down and kind is PolicyType.PERCENT else 1000
    return ScalingPolicy(
        type=kind,
        value=policy.integer("value", 1, low=1, high=high),
        period_s=float(policy.integer("periodSeconds", 1, low=1, high=MAX_POLICY_PERIOD_S)),
    )


_UP_ONLY = "is a scaleDown setting; scale-up adds workers and never removes one"


MAX_MISS_RATE = 0.5
"""The largest miss-rate target accepted: a target that lets every other call find no worker
is no headroom."""


HEADROOM_MAX = {HeadroomUnit.WORKERS: 1000, HeadroomUnit.SLOTS: 10_000, HeadroomUnit.PERCENT: 99}
"""The largest amount of each headroom unit (100 % available would need endless workers once
one is full)."""


def parse_headroom(scaling: fields.FieldReader) -> Headroom:
    """headroom.workers, slots or percent (at most one), or the old spelling
    minAvailableWorkers of workers (not beside them); 1 worker when none is set."""
    target = scaling.child("headroom")
    given = [unit for unit in HeadroomUnit if target.get(unit.value) is not None]
    if len(given) > 1:
        raise fields.InvalidSpecError(
            target.path,
            {unit.value: target.get(unit.value) for unit in given},
            "sets more than one of workers, slots and percent; set one",
        )
    old = scaling.get("minAvailableWorkers")
    if given and old is not None:
        raise fields.InvalidSpecError(
            scaling.at("minAvailableWorkers"),
            old,
            "is the old spelling of headroom.workers and cannot stand beside "
            f"headroom.{given[0].value}; set one (an AgentWorker created before headroom.workers "
            "existed holds minAvailableWorkers: 1 from the CRD's former default: remove it)",
        )
    if given:
        unit = given[0]
        amount = target.integer(unit.value, 0, low=0, high=HEADROOM_MAX[unit])
    else:
        unit = HeadroomUnit.WORKERS
        amount = scaling.integer("minAvailableWorkers", 1, low=0, high=HEADROOM_MAX[unit])
    return Headroom(unit=unit, amount=amount, miss_rate=_parse_miss_rate(target))


def _parse_miss_rate(target: fields.FieldReader) -> float | None:
    value = target.get("missRate")
    if value is None:
        return None
    low, high = headroom.MIN_MISS_RATE, MAX_MISS_RATE
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise fields.InvalidSpecError(
            target.at("missRate"),
            value,
            f"is not a fraction of calls in [{low:g}, {high:g}] (0.001: at most 0.1 % of calls "
            "find no worker)",
        )
    return float(value)


# ---------------------------------------------------------------------------------------------
# What the policies allow
# ---------------------------------------------------------------------------------------------


def up_limit(
    behavior: ScalingBehavior,
    current: int,
    scale_events: Sequence[tuple[float, int]],
    *,
    now: float,
) -> int:
    """The most replicas the scale-up policies allow now, as the HPA computes it: per policy,
    the replicas at its period's start plus `value` (Pods) or times 1 + value % rounded up
    (Percent); the largest of those with selectPolicy Max, the smallest with Min.

    `scale_events`: (time, replicas added (> 0) or removed (< 0)) of the scales made so far.
    Disabled is the caller's (no change at all, whatever this says)."""
    limits = []
    for policy in behavior.policies:
        start = _period_start(current, scale_events, now, policy.period_s)
        if policy.type is PolicyType.PODS:
            limits.append(start + policy.value)
        else:  # in integers: no float rounds 10 workers + 10 % up to 12
            limits.append(-(-start * (100 + policy.value) // 100))
    return max(limits) if behavior.select_policy is SelectPolicy.MAX else min(limits)


def down_limit(
    behavior: ScalingBehavior,
    current: int,
    scale_events: Sequence[tuple[float, int]],
    *,
    now: float,
) -> int:
    """The fewest replicas the scale-down policies allow now, as the HPA computes it: per
    policy, the replicas at its period's start minus `value` (Pods) or times 1 - value %
    rounded down (Percent); the smallest of those with selectPolicy Max (the biggest change),
    the largest with Min."""
    limits = []
    for policy in behavior.policies:
        start = _period_start(current, scale_events, now, policy.period_s)
        if policy.type is PolicyType.PODS:
            limits.append(start - policy.value)
        else:
            limits.append(start * (100 - policy.value) // 100)
    return min(limits) if behavior.select_policy is SelectPolicy.MAX else max(limits)


def _period_start(
    current: int, scale_events: Sequence[tuple[float, int]], now: float, period_s: float
) -> int:
    """The replicas when a period of `period_s` began: every scale made since, up or down,
    undone (a change exactly `period_s` old no longer counts)."""
    return current - sum(delta for when, delta in scale_events if when > now - period_s)
