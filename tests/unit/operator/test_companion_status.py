"""The companion in the status: the Companion condition (command fleets only) and the
`status.companion` record, decided from `Facts.companion` alone."""

from __future__ import annotations

from typing import Any

import pytest

from agentworker_operator import companion as companions
from agentworker_operator import status
from agentworker_operator.companion import Mode, Plan
from tests.unit.operator.test_status import LATER, NOW, facts

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

FALLBACK = companions.Fallback(
    image="ghcr.io/acme/agent:1",
    mode=Mode.INJECT,
    reason="UnsupportedVersion",
    message="livekit-agents 1.2.0",
)


def companion(plan: Plan, **changes: Any) -> status.CompanionFacts:
    values: dict[str, Any] = {
        "mode": Mode.DISABLED if plan is Plan.OFF else Mode.INJECT,
        "plan": plan,
    }
    values.update(changes)
    return status.CompanionFacts(**values)


def decided(f: status.Facts) -> dict[str, status.Condition]:
    return {c.type.value: c for c in status.decide_conditions(f)}


@pytest.mark.parametrize(
    "companion_facts",
    [None, companion(Plan.RUNTIME)],
    ids=["no-facts", "this-runtime"],
)
def test_this_runtimes_fleets_have_no_companion_condition(
    companion_facts: status.CompanionFacts | None,
) -> None:
    conditions = status.decide_conditions(facts(companion=companion_facts))
    assert [c.type for c in conditions] == [
        status.ConditionType.READY,
        status.ConditionType.PROGRESSING,
        status.ConditionType.DEGRADED,
        status.ConditionType.SCALING_LIMITED,
        status.ConditionType.FLEET_FULL,
    ]


@pytest.mark.parametrize(
    ("facts_", "expected"),
    [
        (companion(Plan.INJECT, serving=3, workers=3), (True, "Serving")),
        (companion(Plan.INSTALLED, mode=Mode.INSTALLED, serving=2, workers=2), (True, "Serving")),
        (companion(Plan.INJECT, serving=1, workers=3), (False, "Waiting")),
        (companion(Plan.INJECT), (False, "Waiting")),
        (companion(Plan.OFF, workers=3), (False, "Disabled")),
        (companion(Plan.FALLBACK, fallback=FALLBACK, workers=3), (False, "UnsupportedVersion")),
    ],
    ids=["serving", "installed-serving", "waiting-for-some", "no-workers-yet", "off", "fallback"],
)
def test_a_command_fleet_has_the_companion_condition_last(
    facts_: status.CompanionFacts, expected: tuple[bool, str]
) -> None:
    conditions = status.decide_conditions(facts(companion=facts_))
    last = conditions[-1]
    assert len(conditions) == 6
    assert last.type is status.ConditionType.COMPANION
    assert (last.status, last.reason) == expected
    words = companions.condition(facts_.plan, facts_.fallback, facts_.serving, facts_.workers)
    assert last.message == words.message  # the decision's words, unchanged


def test_the_companion_condition_does_not_change_the_others() -> None:
    without = decided(facts())
    with_it = decided(facts(companion=companion(Plan.FALLBACK, fallback=FALLBACK)))
    del with_it["Companion"]
    assert with_it == without


@pytest.mark.parametrize(
    ("facts_", "record"),
    [
        (companion(Plan.INJECT), {"mode": "Inject", "state": "Injected"}),
        (
            companion(Plan.INSTALLED, mode=Mode.INSTALLED),
            {"mode": "Installed", "state": "Installed"},
        ),
        (companion(Plan.OFF), {"mode": "Disabled", "state": "Disabled"}),
        (
            companion(Plan.FALLBACK, fallback=FALLBACK),
            {
                "mode": "Inject",
                "state": "Fallback",
                "image": "ghcr.io/acme/agent:1",
                "reason": "UnsupportedVersion",
                "message": "livekit-agents 1.2.0",
            },
        ),
    ],
    ids=["injected", "installed", "off", "fallback"],
)
def test_the_status_records_how_a_command_fleet_gets_the_contract(
    facts_: status.CompanionFacts, record: dict[str, str]
) -> None:
    desired = status.desired_status(facts(companion=facts_), {}, now=NOW)
    assert desired["companion"] == record
    assert companions.recorded_fallback(desired) == facts_.fallback


def test_this_runtimes_fleet_drops_a_record_it_no_longer_needs() -> None:
    command = status.desired_status(facts(companion=companion(Plan.INJECT)), {}, now=NOW)
    runtime = status.desired_status(facts(companion=companion(Plan.RUNTIME)), command, now=LATER)
    assert runtime["companion"] is None
    patch = status.status_patch(command, runtime)
    assert patch is not None
    assert patch["companion"] is None  # a merge patch removes it
    assert "Companion" not in [c["type"] for c in runtime["conditions"]]


def test_a_runtime_fleet_that_never_had_a_record_patches_nothing_for_it() -> None:
    first = status.desired_status(facts(companion=companion(Plan.RUNTIME)), {}, now=NOW)
    stored = {k: v for k, v in first.items() if v is not None}
    again = status.desired_status(facts(companion=companion(Plan.RUNTIME)), stored, now=LATER)
    assert status.status_patch(stored, again) is None


def test_without_companion_facts_the_record_is_left_as_it_is() -> None:
    assert "companion" not in status.desired_status(facts(), {}, now=NOW)


def test_the_companion_condition_keeps_its_time_until_it_flips() -> None:
    waiting = facts(companion=companion(Plan.INJECT, serving=1, workers=2))
    serving = facts(companion=companion(Plan.INJECT, serving=2, workers=2))
    first = status.desired_status(waiting, {}, now=NOW)
    still = status.desired_status(waiting, first, now=LATER)
    flipped = status.desired_status(serving, first, now=LATER)

    def when(s: status.Status) -> str:
        return str(
            next(c for c in s["conditions"] if c["type"] == "Companion")["lastTransitionTime"]
        )

    assert (when(first), when(still), when(flipped)) == (
        "2026-11-23T10:00:00Z",
        "2026-11-23T10:00:00Z",
        "2026-11-23T10:05:00Z",
    )
