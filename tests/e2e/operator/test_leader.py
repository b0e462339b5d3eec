"""Two operator replicas: one Lease holder acts, the standby takes over when it stops."""

from __future__ import annotations

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
