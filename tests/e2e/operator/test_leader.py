"""Two operator replicas: one Lease holder acts, the standby takes over when it stops."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Kubectl
from tests.e2e.operator.conftest import OperatorProcess, example, get_json
from tests.e2e.operator.test_agentworker import NAME, apply, wait_ready
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def holder(kubectl: Kubectl, namespace: str) -> str:
    lease: dict[str, Any] = get_json(kubectl, "lease", "agentworker-operator", "-n", namespace)
    return str(lease["spec"].get("holderIdentity") or "")


def test_only_the_lease_holder_acts_and_the_standby_takes_over(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str, crd: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    first = OperatorProcess(rig, namespace, tmp_path / "first.log", identity="replica-a")
    second = OperatorProcess(rig, namespace, tmp_path / "second.log", identity="replica-b")
    first.start()
    wait_for("replica-a holds the Lease", lambda: holder(kubectl, namespace), "replica-a".__eq__)
    second.start(leader=False)
    try:
        assert second.health() == {"ok": True, "leader": False}
        apply(kubectl, namespace, example(rig, replicas=1))
        wait_ready(kubectl, namespace, replicas=1)
        assert "on_change" not in second.logs()
        assert holder(kubectl, namespace) == "replica-a"
        assert first.stop() == 0
        wait_for(
            "replica-b takes the Lease",
            lambda: holder(kubectl, namespace),
            "replica-b".__eq__,
            timeout_s=30,
        )
        kubectl("scale", f"aw/{NAME}", "-n", namespace, "--replicas=2")
        wait_ready(kubectl, namespace, replicas=2, timeout_s=120)
        assert second.health() == {"ok": True, "leader": True}
    finally:
        first.stop()
        second.stop()


def test_a_killed_leader_is_replaced_once_its_lease_expires_by_the_standbys_clock(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str, crd: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    fast = ("--lease-duration=6",)
    first = OperatorProcess(
        rig, namespace, tmp_path / "first.log", identity="replica-a", extra_args=fast
    )
    second = OperatorProcess(
        rig, namespace, tmp_path / "second.log", identity="replica-b", extra_args=fast
    )
    first.start()
    wait_for("replica-a holds the Lease", lambda: holder(kubectl, namespace), "replica-a".__eq__)
    second.start(leader=False)
    try:
        wait_for(
            "the standby says who leads",
            second.logs,
            lambda text: (
                "standing by: another replica holds the leader lease" in text
                and "replica-a" in text
            ),
        )
        first.kill()  # no release: the standby must wait for the Lease to expire
        killed = time.monotonic()
        wait_for(
            "replica-b takes the expired Lease",
            lambda: holder(kubectl, namespace),
            "replica-b".__eq__,
            timeout_s=30,
        )
        took_s = time.monotonic() - killed
        # expiry counts from the last renewal the standby saw: at most one renewal period
        # (2 s) before the kill, so never sooner than 6 - 2 s after it
        assert 4 <= took_s <= 20, f"taken {took_s:.1f} s after the kill (Lease of 6 s)"
        wait_for("replica-b leads", second.health, lambda h: bool(h and h["leader"]))
        apply(kubectl, namespace, example(rig, replicas=1))
        wait_ready(kubectl, namespace, replicas=1)
    finally:
        first.stop()
        second.stop()
