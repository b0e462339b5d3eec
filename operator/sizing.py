"""The size of a fleet the autoscaler does not size: autoscaling turned off, or paused.

This module owns one pure decision, `hold(spec, applied)`: the replicas the Deployment gets
while `spec.autoscaling.enabled` is false or `spec.autoscaling.paused` is true. Either way the
fleet keeps the size it has, the replicas the operator last applied, rather than jump to a
`spec.replicas` that nobody set for this fleet's present (an autoscaled fleet's spec.replicas
is only its first size); a change of `spec.replicas` since that apply (`kubectl scale aw`, an
HPA or KEDA through the scale subresource) is a person's resize, and is applied.

"Changed since" is judged from what the operator applied, not from a memory of the moment
autoscaling was turned off: every apply of the Deployment writes the spec.replicas it was made
from (`builders.SPEC_REPLICAS_ANNOTATION`) next to the replicas, in the same object, so the
pair survives an operator restart or a new leader, and no second object has to be kept in step.
Two edits the operator never saw apart (spec.replicas changed, then autoscaling turned off,
while no operator ran) count as a resize; so does nothing else.

It does no I/O, reads no clock, and imports no kopf, kubernetes, aiohttp or prometheus_client.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentworker_operator import builders
from agentworker_operator import spec as specs


class Mode(enum.Enum):
    """Who sizes the fleet."""

    AUTOSCALED = "Autoscaled"
    """The autoscaler (`autoscaler.decide`)."""
    PAUSED = "Paused"
    """Nobody decides: autoscaling is enabled and paused; the size is held."""
    DISABLED = "AutoscalingDisabled"
    """A person, through spec.replicas; the size is held until it changes."""


def mode(autoscaling: specs.Autoscaling) -> Mode:
    """Disabled wins over paused: without an autoscaler there is nothing to pause."""
    if not autoscaling.enabled:
        return Mode.DISABLED
    return Mode.PAUSED if autoscaling.paused else Mode.AUTOSCALED


@dataclass(frozen=True, slots=True, kw_only=True)
class Applied:
    """What the operator last applied to the Deployment."""

    replicas: int
    spec_replicas: int | None
    """The AgentWorker's spec.replicas then; None: applied by an operator that did not record
    it (a release before this record)."""


def applied_of(deployment: Mapping[str, Any] | None) -> Applied | None:
    """What a Deployment (as read from the API) says the operator applied; None without a
    Deployment or without readable replicas."""
    replicas = ((deployment or {}).get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        return None
    annotations = ((deployment or {}).get("metadata") or {}).get("annotations") or {}
    recorded = str(annotations.get(builders.SPEC_REPLICAS_ANNOTATION, ""))
    spec_replicas = int(recorded) if recorded.isascii() and recorded.isdigit() else None
    return Applied(replicas=replicas, spec_replicas=spec_replicas)


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """The replicas of a fleet the autoscaler does not size, and why (the ScalingLimited
    condition: True while paused, something holds the autoscaler back; False when off)."""

    replicas: int
    reason: str
    """Paused or AutoscalingDisabled (`Mode`'s value)."""
    message: str
    limited: bool


def hold(spec: specs.AgentWorkerSpec, applied: Applied | None) -> Hold:
    """The replicas while autoscaling is off or paused (`mode` is not AUTOSCALED).

    The replicas last applied are kept while spec.replicas is what it was then; a different
    spec.replicas is applied. Nothing applied yet (a new fleet): spec.replicas, kept within
    [minReplicas, maxReplicas] when paused, as a new autoscaled fleet starts. A Deployment
    without the record (an older operator's): what that operator did, spec.replicas when
    autoscaling is off, the size kept when paused (it was autoscaling)."""
    paused = mode(spec.autoscaling) is Mode.PAUSED
    if applied is None:
        replicas = builders.desired_replicas(spec)
    elif applied.spec_replicas is None:
        replicas = applied.replicas if paused else spec.replicas
    elif applied.spec_replicas != spec.replicas:
        replicas = spec.replicas
    else:
        replicas = applied.replicas
    if paused:
        return Hold(
            replicas=replicas,
            reason=Mode.PAUSED.value,
            message=f"spec.autoscaling.paused: no scale decision is made; the fleet keeps its "
            f"{replicas} workers (a change of spec.replicas resizes it)",
            limited=True,
        )
    message = (
        f"autoscaling is off: the fleet keeps its {replicas} workers until spec.replicas "
        f"({spec.replicas}) changes"
        if replicas != spec.replicas
        else f"spec.replicas drives the Deployment: {replicas} workers"
    )
    return Hold(replicas=replicas, reason=Mode.DISABLED.value, message=message, limited=False)
