"""Three operator processes, two shards: each AgentWorker is handled by its shard's holder only,
the third process stands by, and takes a killed holder's shard once its Lease expires."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from agentworker_operator import sharding
from tests.e2e.conftest import Kubectl
from tests.e2e.operator.conftest import OperatorProcess, condition, example, get_json
from tests.e2e.operator.test_agentworker import apply
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SHARDS = 2
LEASE = "agentworker-operator"
LEASE_DURATION_S = 6
FLAGS = (f"--shards={SHARDS}", f"--lease-duration={LEASE_DURATION_S}")


def fleets_by_shard(namespace: str) -> dict[int, list[str]]:
    """Two AgentWorker names per shard (the namespace is new each run: picked by `shard_of`)."""
    found: dict[int, list[str]] = {index: [] for index in range(SHARDS)}
    for i in range(100):
        name = f"voice-{i}"
        mine = found[sharding.shard_of(namespace, name, SHARDS)]
        if len(mine) < 2:
            mine.append(name)
    assert all(len(names) == 2 for names in found.values()), found
    return found


def holders(kubectl: Kubectl, namespace: str) -> dict[int, str]:
    """Each shard's Lease holder ("" when free or missing)."""
    leases = get_json(kubectl, "leases", "-n", namespace)["items"]
    by_name = {
        item["metadata"]["name"]: item["spec"].get("holderIdentity") or "" for item in leases
    }
    return {i: by_name.get(sharding.lease_name(LEASE, i, SHARDS), "") for i in range(SHARDS)}


def readyz(process: OperatorProcess) -> dict[str, Any]:
    url = f"http://127.0.0.1:{process.health_port}/readyz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # loopback
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:  # 503 while kopf starts: the body still says
        answer = json.loads(error.read())
    return answer


def handled(process: OperatorProcess, namespace: str, names: list[str]) -> set[str]:
    """Which of `names` the process's log lines name: as their AgentWorker (`logs.about`, kopf's
    per-object lines), their Deployment (kopf's `object`) or one of their pods."""
    found = set()
    for line in process.logs().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        named = [str(record.get(field) or "") for field in ("agentworker", "object")]
        pod = str(record.get("pod") or "")
        found |= {
            name
            for name in names
            if any(text.endswith(f"{namespace}/{name}") for text in named)
            or pod.startswith(f"{name}-")
        }
    return found


def is_reconciled(kubectl: Kubectl, namespace: str, name: str, replicas: int) -> bool:
    found = get_json(kubectl, "agentworker", name, "-n", namespace)
    made = get_json(kubectl, "deployments", "-n", namespace)["items"]
    return (
        condition(found, "Ready").get("status") == "True"
        and found["status"].get("readyReplicas") == replicas
        and any(d["metadata"]["name"] == name for d in made)
    )


def fleet(rig: rig_env.RigEnv, namespace: str, name: str) -> dict[str, Any]:
    manifest = example(rig, replicas=1, agentName=f"{namespace}-{name}"[:100])
    manifest["metadata"]["name"] = name
    return manifest


def test_each_shard_has_one_holder_and_a_standby_takes_a_killed_holders_shard(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str, crd: str,
    tmp_path: Path,
) -> None:  # fmt: skip
    processes = {
        identity: OperatorProcess(
            rig, namespace, tmp_path / f"{identity}.log", identity=identity, extra_args=FLAGS
        )
        for identity in ("shard-a", "shard-b", "shard-c")
    }
    a, b, c = processes.values()
    try:
        a.start()
        b.start()
        by_shard = wait_for(
            "both shards held, by shard-a and shard-b",
            lambda: holders(kubectl, namespace),
            lambda held: set(held.values()) == {"shard-a", "shard-b"},
        )
        c.start(leader=False)
        wait_for(
            "shard-c says it stands by for both shards",
            c.logs,
            lambda text: "standing by: other replicas hold every shard's lease" in text,
        )
        assert readyz(c) == {"ready": True, "leader": False, "holder": "", "shard": None}
        holder_of = {index: processes[identity] for index, identity in by_shard.items()}
        for index, process in holder_of.items():
            assert readyz(process)["shard"] == index

        names = fleets_by_shard(namespace)
        every = [name for shard_names in names.values() for name in shard_names]
        for name in every:
            apply(kubectl, namespace, fleet(rig, namespace, name))
        wait_for(
            "every AgentWorker Ready with its Deployment and 1 ready worker",
            lambda: [n for n in every if not is_reconciled(kubectl, namespace, n, replicas=1)],
            lambda waiting: not waiting,
            timeout_s=150,
        )
        for index, process in holder_of.items():
            assert handled(process, namespace, every) == set(names[index]), f"shard {index}"
        assert handled(c, namespace, every) == set(), "the standby handles nothing"

        # SIGKILL shard 0's holder: no release; the standby waits for the Lease to expire
        lost, kept = holder_of[0], holder_of[1]
        lost.kill()
        killed = time.monotonic()
        wait_for(
            "shard-c takes shard 0's expired Lease",
            lambda: holders(kubectl, namespace)[0],
            "shard-c".__eq__,
            timeout_s=30,
        )
        took_s = time.monotonic() - killed
        # counted from the last renewal the standby saw, at most one renewal period (2 s)
        # before the kill; then the standby's next attempt (every 2 s)
        assert took_s <= LEASE_DURATION_S + 8, f"taken {took_s:.1f} s after the kill"
        wait_for("shard-c leads shard 0", lambda: readyz(c), lambda r: r["shard"] == 0)
        assert holders(kubectl, namespace)[1] == kept.identity, "shard 1 is left alone"

        moved = names[0][0]
        kubectl("scale", f"aw/{moved}", "-n", namespace, "--replicas=2")
        wait_for(
            f"AgentWorker {moved} synced to 2 ready workers by its new holder",
            lambda: is_reconciled(kubectl, namespace, moved, replicas=2),
            bool,
            timeout_s=120,
        )
        assert handled(c, namespace, every) == set(names[0]), "shard 0's fleets, and only those"
        assert handled(kept, namespace, every) == set(names[1]), "the other holder: its own only"
        assert 'agentworker_operator_shard{shard="0"} 1.0' in c.metrics()
        series = [line for line in kept.metrics().splitlines() if line.startswith("agentworker_")]
        assert not [line for line in series if any(f'"{n}"' in line for n in names[0])]
        assert (kept.stop(), c.stop()) == (0, 0)
        for process in (kept, c):
            process.assert_no_access_errors()
    finally:
        for process in processes.values():
            process.stop()
