"""The operator's per-AgentWorker series of its conditions, and the counters alerts read.

`agentworker_condition` follows kube-state-metrics' convention for conditions (one series per
status, 1 on the current one) and `agentworker_condition_reason` holds the current reason
alone, so that alerts can select `type="Degraded", status="true"` and name the reason. The
reconcile's status publication (`handlers._publish`) records them from the conditions it wrote.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any, cast

import pytest
from prometheus_client import REGISTRY

from agentworker_operator import handlers, kube, metrics, status, store
from agentworker_operator.observation import FleetSummary, WorkerState

KEY = ("voice", "support")


@pytest.fixture(autouse=True)
def forget_the_series() -> Iterator[None]:
    """The registry is the process's: each test leaves no series of KEY behind."""
    yield
    metrics.forget(*KEY)


def condition(kind: str, state: str, reason: str) -> dict[str, str]:
    return {"type": kind, "status": state, "reason": reason, "message": "words for a person"}


def statuses(kind: str, key: tuple[str, str] = KEY) -> dict[str, float | None]:
    """`agentworker_condition` of one condition type, by status (None: not exported)."""
    return {
        state: REGISTRY.get_sample_value(
            "agentworker_condition",
            {"namespace": key[0], "name": key[1], "type": kind, "status": state},
        )
        for state in metrics.CONDITION_STATUSES
    }


def reasons(kind: str, key: tuple[str, str] = KEY) -> dict[str, float]:
    """`agentworker_condition_reason` of one condition type: reason -> value."""
    found = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            labels = sample.labels
            mine = (labels.get("namespace"), labels.get("name"), labels.get("type"))
            if sample.name == "agentworker_condition_reason" and mine == (*key, kind):
                found[labels["reason"]] = sample.value
    return found


def series_of(key: tuple[str, str]) -> list[str]:
    return [
        sample.name
        for family in REGISTRY.collect()
        for sample in family.samples
        if (sample.labels.get("namespace"), sample.labels.get("name")) == key
    ]


def test_each_condition_has_a_series_per_status_with_1_on_the_current_one() -> None:
    metrics.record_conditions(
        KEY,
        [
            condition("Ready", "True", "WorkersReady"),
            condition("Degraded", "False", "AsExpected"),
            condition("FleetFull", "Unknown", "WaitingForObservation"),
        ],
    )
    assert statuses("Ready") == {"true": 1.0, "false": 0.0, "unknown": 0.0}
    assert statuses("Degraded") == {"true": 0.0, "false": 1.0, "unknown": 0.0}
    assert statuses("FleetFull") == {"true": 0.0, "false": 0.0, "unknown": 1.0}
    assert reasons("Ready") == {"WorkersReady": 1.0}
    assert reasons("Degraded") == {"AsExpected": 1.0}


def test_a_flipped_condition_moves_its_1_and_keeps_only_the_current_reason() -> None:
    metrics.record_conditions(KEY, [condition("Degraded", "False", "AsExpected")])
    metrics.record_conditions(KEY, [condition("Degraded", "True", "WorkersUnreadable")])
    assert statuses("Degraded") == {"true": 1.0, "false": 0.0, "unknown": 0.0}
    assert reasons("Degraded") == {"WorkersUnreadable": 1.0}
    metrics.record_conditions(KEY, [condition("Degraded", "True", "RolloutStuck")])
    assert reasons("Degraded") == {"RolloutStuck": 1.0}


def test_a_condition_no_longer_written_loses_its_series() -> None:
    companion = condition("Companion", "True", "Serving")
    metrics.record_conditions(KEY, [condition("Ready", "True", "WorkersReady"), companion])
    metrics.record_conditions(KEY, [condition("Ready", "True", "WorkersReady")])
    assert statuses("Companion") == {"true": None, "false": None, "unknown": None}
    assert reasons("Companion") == {}
    assert statuses("Ready")["true"] == 1.0


@pytest.mark.parametrize(
    "reason",
    ["room sip_+15551234567 has no agent", "lowerCamel", "", "A" * 65, "Has-Dash"],
    ids=["text-with-a-room-name", "lower-camel", "empty", "too-long", "punctuation"],
)
def test_a_reason_that_is_not_a_camelcase_word_is_exported_as_other(reason: str) -> None:
    metrics.record_conditions(KEY, [condition("Companion", "False", reason)])
    assert reasons("Companion") == {metrics.OTHER_REASON: 1.0}


def test_the_messages_never_become_labels() -> None:
    metrics.record_conditions(KEY, [condition("Ready", "True", "WorkersReady")])
    labels = {
        key
        for family in REGISTRY.collect()
        for sample in family.samples
        if sample.name.startswith("agentworker_condition")
        for key in sample.labels
    }
    assert labels == {"namespace", "name", "type", "status", "reason"}


def test_a_deleted_agentworker_loses_its_condition_series_and_others_keep_theirs() -> None:
    kept = ("voice", "kept")
    metrics.record_conditions(KEY, [condition("Degraded", "True", "InvalidSpec")])
    metrics.record_conditions(kept, [condition("Degraded", "False", "AsExpected")])
    metrics.forget(*KEY)
    assert series_of(KEY) == []
    assert statuses("Degraded", kept)["false"] == 1.0
    # recorded again after the forget (the same name made anew): no stale reason is removed
    metrics.record_conditions(KEY, [condition("Degraded", "False", "AsExpected")])
    assert reasons("Degraded") == {"AsExpected": 1.0}
    metrics.forget(*kept)


def test_the_counters_of_recovered_and_abandoned_calls_start_at_zero_with_the_fleet() -> None:
    by_state = dict.fromkeys(WorkerState, 0) | {WorkerState.AVAILABLE: 2}
    fleet = FleetSummary(
        by_state=by_state, active_jobs=0, load=0.1, unknown_pods=(), old_worker_jobs=0
    )
    metrics.record_fleet(KEY, fleet)
    labels = {"namespace": KEY[0], "name": KEY[1]}
    # a series that appears at 1 has no increase() in Prometheus: the first call would be missed
    assert REGISTRY.get_sample_value("agentworker_calls_redispatched_total", labels) == 0.0
    assert REGISTRY.get_sample_value("agentworker_dispatches_abandoned_total", labels) == 0.0


class FakeKube:
    """The two calls `_publish` makes: the status patch answers the object as patched."""

    def __init__(self) -> None:
        self.patched: list[Mapping[str, Any]] = []

    async def patch_status(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        self.patched.append(patch)
        return {"metadata": {"namespace": KEY[0], "name": KEY[1]}, "status": dict(patch)}

    async def post_event(self, involved: Mapping[str, Any], **_: str) -> None:
        return None


async def test_a_reconcile_exports_the_conditions_it_wrote_even_when_the_status_is_current() -> (
    None
):
    client, seen = FakeKube(), store.Store()
    body: dict[str, Any] = {"metadata": {"namespace": KEY[0], "name": KEY[1]}, "status": {}}
    facts = status.Facts(generation=1, selector="app=support", desired_replicas=2)
    logger = logging.getLogger(__name__)
    await handlers._publish(cast(kube.Kube, client), seen, body, facts, logger)
    (patch,) = client.patched
    written = {c["type"]: c for c in patch["conditions"]}
    for kind, stored in written.items():
        current = {s: v for s, v in statuses(kind).items() if v == 1.0}
        assert current == {stored["status"].lower(): 1.0}, kind
        assert reasons(kind) == {stored["reason"]: 1.0}, kind
    assert statuses("Progressing")["true"] == 1.0  # no Deployment yet: Creating
    # a later reconcile with nothing new patches nothing, and the series stay
    metrics.forget(*KEY)
    body["status"] = dict(patch)
    await handlers._publish(cast(kube.Kube, client), seen, body, facts, logger)
    assert len(client.patched) == 1
    assert statuses("Progressing")["true"] == 1.0
