"""The operator hears a worker change on its long poll of /worker and decides at once, not at
the next sync period (issue 15, item 3).

The sync period here is 30 s, so a scale-up within a few seconds of the worker turning full can
only come from the change stream; the operator's own metric of change-to-decision confirms it.
"""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import Kubectl
from tests.e2e.operator.calls import Calls
from tests.e2e.operator.conftest import OperatorProcess, get_json
from tests.e2e.operator.test_agentworker import NAME, apply, wait_ready
from tests.e2e.operator.test_autoscaling import fleet, sync_rounds, wait_calls_started
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PERIOD_S = 30.0
HEARD_WITHIN_S = 5.0
"""A scale-up this soon after the worker turned full did not wait for a periodic round (one
comes every PERIOD_S: by chance within HEARD_WITHIN_S one time in six, and the metric below
says which it was)."""


@pytest.fixture
def operator_args() -> tuple[str, ...]:
    return (f"--sync-period={PERIOD_S:g}", "--resync-period=60")


def decisions_on_change(operator: OperatorProcess) -> float:
    for line in operator.metrics().splitlines():
        if line.startswith("agentworker_operator_change_to_decision_seconds_count"):
            return float(line.split()[-1])
    return 0.0


def test_a_worker_that_turns_full_is_heard_at_once_and_the_fleet_scales_up(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess, phone: Calls,
) -> None:  # fmt: skip
    apply(kubectl, namespace, fleet(rig, namespace))
    wait_ready(kubectl, namespace, replicas=1)
    # the first periodic round starts following the worker (its first answer is news too)
    wait_for("a sync round", lambda: sync_rounds(operator), lambda n: n >= 1, timeout_s=60)
    wait_for(
        "the worker's first long-poll answer",
        lambda: decisions_on_change(operator),
        lambda n: n >= 1,
        timeout_s=10,
    )
    heard_before = decisions_on_change(operator)
    calls = phone.start(3, hold_s=60)  # 3 of 4 calls: load 0.75, above loadThreshold 0.7
    started = wait_calls_started(phone, calls)
    full_at = max(float(c["t"]) for c in started.values())

    def replicas() -> int:
        deployment = get_json(kubectl, "deployment", NAME, "-n", namespace)
        return int(deployment["spec"]["replicas"])

    wait_for("the scale-up", replicas, lambda n: n == 2, timeout_s=PERIOD_S + 10, interval_s=0.1)
    decided_after_s = time.time() - full_at
    assert decided_after_s < HEARD_WITHIN_S, f"scaled up {decided_after_s:.1f} s after the fill"
    assert decisions_on_change(operator) > heard_before, "no decision came from a change"
    wait_ready(kubectl, namespace, replicas=2)
