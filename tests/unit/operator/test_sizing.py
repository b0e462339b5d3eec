"""The size of a fleet the autoscaler does not size: autoscaling off or paused keeps the size the
operator last applied; a change of spec.replicas since then resizes it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentworker_operator import builders, sizing
from agentworker_operator import spec as specs

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

OWNER = builders.Owner(name="support", namespace="team-a", uid="uid-1")


def agent(
    *, replicas: int = 2, enabled: bool = False, paused: bool = False, **raw: Any
) -> specs.AgentWorkerSpec:
    return specs.parse_spec(
        {
            "image": "agent:1",
            "entrypoint": "agent:main",
            "livekit": {"url": "ws://lk:7880", "credentialsSecret": {"name": "lk"}},
            "replicas": replicas,
            "autoscaling": {"enabled": enabled, "paused": paused, **raw},
        }
    )


def applied(replicas: int, spec_replicas: int | None) -> sizing.Applied:
    return sizing.Applied(replicas=replicas, spec_replicas=spec_replicas)


@pytest.mark.parametrize(
    ("enabled", "paused", "mode"),
    [
        (True, False, sizing.Mode.AUTOSCALED),
        (True, True, sizing.Mode.PAUSED),
        (False, False, sizing.Mode.DISABLED),
        (False, True, sizing.Mode.DISABLED),
    ],
    ids=["autoscaled", "paused", "disabled", "disabled-wins-over-paused"],
)
def test_mode_says_who_sizes_the_fleet(enabled: bool, paused: bool, mode: sizing.Mode) -> None:
    assert sizing.mode(agent(enabled=enabled, paused=paused).autoscaling) is mode


def test_turning_autoscaling_off_keeps_the_replicas_last_applied() -> None:
    # the autoscaler had 7 workers; spec.replicas is still the first size, 2
    held = sizing.hold(agent(replicas=2), applied(7, 2))
    assert held == sizing.Hold(
        replicas=7,
        reason="AutoscalingDisabled",
        message="autoscaling is off: the fleet keeps its 7 workers until spec.replicas (2) changes",
        limited=False,
    )


def test_a_change_of_spec_replicas_after_autoscaling_was_turned_off_resizes() -> None:
    held = sizing.hold(agent(replicas=3), applied(7, 2))
    assert (held.replicas, held.message) == (3, "spec.replicas drives the Deployment: 3 workers")


def test_a_resized_fleet_keeps_its_new_size_at_the_next_apply() -> None:
    assert sizing.hold(agent(replicas=3), applied(3, 3)).replicas == 3


def test_a_new_fleet_with_autoscaling_off_starts_at_spec_replicas() -> None:
    assert sizing.hold(agent(replicas=4), None).replicas == 4


def test_a_new_paused_fleet_starts_at_spec_replicas_within_the_bounds() -> None:
    held = sizing.hold(agent(replicas=0, enabled=True, paused=True, minReplicas=2), None)
    assert held.replicas == 2  # as a new autoscaled fleet would start


def test_a_paused_fleet_keeps_its_size_and_says_so_in_a_limited_condition() -> None:
    held = sizing.hold(agent(replicas=1, enabled=True, paused=True), applied(5, 1))
    assert held == sizing.Hold(
        replicas=5,
        reason="Paused",
        message="spec.autoscaling.paused: no scale decision is made; the fleet keeps its 5 "
        "workers (a change of spec.replicas resizes it)",
        limited=True,
    )


def test_a_paused_fleet_keeps_its_size_even_outside_changed_bounds() -> None:
    spec = agent(replicas=1, enabled=True, paused=True, minReplicas=6, maxReplicas=8)
    assert sizing.hold(spec, applied(5, 1)).replicas == 5  # no decision, not even the bounds'


def test_a_paused_fleet_is_resized_by_a_change_of_spec_replicas() -> None:
    assert sizing.hold(agent(replicas=2, enabled=True, paused=True), applied(5, 1)).replicas == 2


@pytest.mark.parametrize(
    ("enabled", "expected"),
    [(False, 2), (True, 5)],
    ids=["off-applies-spec-replicas", "paused-keeps-the-size"],
)
def test_a_deployment_an_older_operator_made_is_held_as_that_operator_would(
    enabled: bool, expected: int
) -> None:
    # no record: an older operator applied spec.replicas with autoscaling off, its own size on
    held = sizing.hold(agent(replicas=2, enabled=enabled, paused=True), applied(5, None))
    assert held.replicas == expected


def test_the_deployment_records_the_spec_replicas_it_was_applied_with() -> None:
    spec = agent(replicas=2, enabled=True)
    deployment = builders.build_deployment(OWNER, spec, replicas=7)
    assert sizing.applied_of(deployment) == applied(7, 2)


@pytest.mark.parametrize(
    ("deployment", "expected"),
    [
        (None, None),
        ({"spec": {}}, None),
        ({"spec": {"replicas": -1}}, None),
        ({"spec": {"replicas": True}}, None),
        ({"spec": {"replicas": 3}}, applied(3, None)),
        (
            {
                "metadata": {"annotations": {builders.SPEC_REPLICAS_ANNOTATION: "x"}},
                "spec": {"replicas": 3},
            },
            applied(3, None),
        ),
        (
            {
                "metadata": {"annotations": {builders.SPEC_REPLICAS_ANNOTATION: "1"}},
                "spec": {"replicas": 3},
            },
            applied(3, 1),
        ),
    ],
    ids=["none", "no-replicas", "negative", "bool", "no-record", "bad-record", "recorded"],
)
def test_applied_of_reads_replicas_and_record_and_ignores_what_is_not_a_count(
    deployment: dict[str, Any] | None, expected: sizing.Applied | None
) -> None:
    assert sizing.applied_of(deployment) == expected


@settings(max_examples=200, deadline=None)
@given(
    last=st.integers(0, 1000),
    spec_replicas=st.integers(0, 1000),
    recorded=st.integers(0, 1000),
    enabled=st.booleans(),
)
def test_a_held_fleet_changes_size_only_to_a_changed_spec_replicas(
    last: int, spec_replicas: int, recorded: int, enabled: bool
) -> None:
    spec = agent(replicas=spec_replicas, enabled=enabled, paused=True, maxReplicas=1000)
    held = sizing.hold(spec, applied(last, recorded))
    if recorded == spec_replicas:
        assert held.replicas == last
    else:
        assert held.replicas == spec_replicas
