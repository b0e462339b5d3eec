"""The operator on the whole rig: real API server, controllers, LiveKit, workers as processes.

Each test owns a fresh namespace and an `agent-operator` process watching only it. Waits are
bounded polls that fail with the last state they saw.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Kubectl
from tests.e2e.operator.conftest import (
    EXAMPLE_FILE,
    OperatorProcess,
    condition,
    example,
    free_port,
    get_json,
)
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

logger = logging.getLogger(__name__)
NAME = "basic-agent"
INSTANCE = f"app.kubernetes.io/instance={NAME}"


def apply(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))


def aw(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    return get_json(kubectl, "agentworker", NAME, "-n", namespace)


def ready_is(value: str, reason: str | None = None) -> Any:
    def check(obj: dict[str, Any]) -> bool:
        ready = condition(obj, "Ready")
        return ready.get("status") == value and (reason is None or ready.get("reason") == reason)

    return check


def pods(kubectl: Kubectl, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(kubectl, "pods", "-n", namespace, "-l", INSTANCE)[
        "items"
    ]
    return items


def listed(kubectl: Kubectl, kind: str, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(kubectl, kind, "-n", namespace, "-l", INSTANCE)["items"]
    return items


def is_ready(pod: dict[str, Any]) -> bool:
    return condition(pod, "Ready").get("status") == "True" and not pod["metadata"].get(
        "deletionTimestamp"
    )


def wait_ready(kubectl: Kubectl, namespace: str, replicas: int, timeout_s: float = 120) -> None:
    wait_for(
        f"AgentWorker {NAME} Ready=True with {replicas} ready workers",
        lambda: aw(kubectl, namespace),
        lambda obj: ready_is("True")(obj) and obj["status"].get("readyReplicas") == replicas,
        timeout_s=timeout_s,
        interval_s=0.5,
    )


def test_example_apply_gives_ready_registered_workers(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    started = time.monotonic()
    apply(kubectl, namespace, example(rig))
    wait_ready(kubectl, namespace, replicas=2)
    elapsed_s = round(time.monotonic() - started, 1)
    logger.info("apply to Ready with 2 workers took %.1f s", elapsed_s)
    deployment = get_json(kubectl, "deployment", NAME, "-n", namespace)
    assert deployment["metadata"]["ownerReferences"][0]["kind"] == "AgentWorker"
    assert deployment["status"]["readyReplicas"] == 2
    status = aw(kubectl, namespace)["status"]
    assert (
        status["selector"]
        == "app.kubernetes.io/instance=basic-agent,app.kubernetes.io/name=agent-worker"
    )
    assert condition(aw(kubectl, namespace), "Degraded")["status"] == "False"
    exposition = operator.metrics()
    assert f'agentworker_ready_replicas{{name="{NAME}",namespace="{namespace}"}} 2.0' in exposition
    assert "agentworker_operator_reconcile_duration_seconds_count" in exposition
    assert 'result="ok"' in exposition
    for where in (
        operator.logs(),
        kubectl("get", "events", "-n", namespace, "-o", "json").stdout,
        kubectl("get", "aw,deployments,pods", "-n", namespace, "-o", "json").stdout,
    ):
        assert rig.livekit_api_secret not in where, "the LiveKit secret leaked"
    table = kubectl("get", "aw", "-n", namespace).stdout
    assert table.split()[:7] == ["NAME", "AGENT", "READY", "DESIRED", "JOBS", "LOAD", "AGE"]
    assert "basic-agent" in table.splitlines()[1]


def test_explain_teaches_autoscaling(kubectl: Kubectl, crd: str) -> None:
    text = kubectl("explain", "agentworker.spec.autoscaling").stdout
    for field in ("minReplicas", "maxReplicas", "targetLoad", "minAvailableWorkers", "scaleDown"):
        assert field in text
    assert (
        "How fast workers are removed" in kubectl("explain", "aw.spec.autoscaling.scaleDown").stdout
    )
    assert "WaitForIdle" in kubectl("explain", "aw.spec.autoscaling.scaleDown.busyWorkers").stdout


def test_scale_subresource_drives_replicas_when_autoscaling_is_off(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    apply(kubectl, namespace, example(rig, replicas=1))
    wait_ready(kubectl, namespace, replicas=1)
    kubectl("scale", f"aw/{NAME}", "-n", namespace, "--replicas=3")
    wait_ready(kubectl, namespace, replicas=3, timeout_s=150)
    assert len([p for p in pods(kubectl, namespace) if is_ready(p)]) == 3
    assert aw(kubectl, namespace)["status"]["desiredReplicas"] == 3


def test_spec_change_rolls_out_without_stopping_an_old_pod_first(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    apply(kubectl, namespace, example(rig, replicas=2))
    wait_ready(kubectl, namespace, replicas=2)
    old = {p["metadata"]["name"] for p in pods(kubectl, namespace)}
    changed = example(rig, replicas=2, env=[{"name": "GREETING", "value": "version two"}])
    apply(kubectl, namespace, changed)
    seen_ready: list[int] = []

    def rolled_out() -> bool:
        current = pods(kubectl, namespace)
        seen_ready.append(sum(1 for p in current if is_ready(p)))
        names = {p["metadata"]["name"] for p in current if is_ready(p)}
        return len(names) == 2 and not names & old and len(current) == 2

    wait_for("rollout to two new ready pods", lambda: rolled_out(), bool, timeout_s=180)
    assert min(seen_ready) >= 2, f"ready workers dropped below 2 during the rollout: {seen_ready}"
    wait_ready(kubectl, namespace, replicas=2)


INVALID = [
    ("workerType", {"workerType": "JT_ROOM"}, "spec.workerType"),
    ("loadThreshold", {"loadThreshold": 1.5}, "spec.loadThreshold"),
    ("drainTimeout", {"drainTimeout": "ten"}, "spec.drainTimeout"),
    ("drainTimeout-max", {"drainTimeout": "25h"}, "spec.drainTimeout"),
    ("entrypoint", {"entrypoint": "agent.py"}, "spec.entrypoint"),
    ("livekit-url", {"livekit": {"url": "http://x", "credentialsSecret": {"name": "s"}}},
     "spec.livekit.url"),
    ("livekit-secret", {"livekit": {"url": "ws://127.0.0.1:1"}}, "spec.livekit.credentialsSecret"),
    ("replicas", {"replicas": -1}, "spec.replicas"),
    ("logLevel", {"logLevel": "VERBOSE"}, "spec.logLevel"),
    ("min-above-max", {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
     "spec.autoscaling.minReplicas"),
    ("target-above-threshold", {"loadThreshold": 0.5, "autoscaling": {"targetLoad": 0.8}},
     "spec.autoscaling.targetLoad"),
    ("job-memory", {"jobMemory": {"warnMB": 900, "limitMB": 100}}, "spec.jobMemory.limitMB"),
    ("reserved-env", {"env": [{"name": "LIVEKIT_API_SECRET", "value": "x"}]}, "spec.env"),
    ("reserved-label", {"podTemplate": {"labels": {"app.kubernetes.io/instance": "x"}}},
     "spec.podTemplate.labels"),
    ("numIdleProcesses", {"numIdleProcesses": 1000}, "spec.numIdleProcesses"),
    ("entrypoint-and-command", {"command": ["python", "agent.py", "start"]}, "exactly one"),
    ("args-without-command", {"args": ["start"]}, "spec.args"),
    ("busy-workers", {"autoscaling": {"scaleDown": {"busyWorkers": "Never"}}},
     "spec.autoscaling.scaleDown.busyWorkers"),
    ("tmp-volume", {"podTemplate": {"volumes": [{"name": "tmp", "emptyDir": {}}]}},
     "spec.podTemplate.volumes"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "overrides", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_api_server_refuses_invalid_object_naming_the_field(
    kubectl: Kubectl, rig: rig_env.RigEnv, crd: str, case: str, overrides: dict[str, Any],
    field: str,
) -> None:  # fmt: skip
    manifest = example(rig, **overrides)
    done = kubectl(
        "apply", "--dry-run=server", "-n", "default", "-f", "-",
        stdin=yaml.safe_dump(manifest), check=False,
    )  # fmt: skip
    assert done.returncode != 0, f"{case} was accepted"
    assert field in done.stderr, done.stderr


@pytest.mark.parametrize("name", ["my.agent", "1agent"])
def test_a_name_that_cannot_name_its_children_is_refused(
    kubectl: Kubectl, rig: rig_env.RigEnv, crd: str, name: str
) -> None:
    manifest = example(rig)
    manifest["metadata"]["name"] = name
    done = kubectl(
        "apply", "--dry-run=server", "-n", "default", "-f", "-",
        stdin=yaml.safe_dump(manifest), check=False,
    )  # fmt: skip
    assert done.returncode != 0, f"{name} was accepted"
    assert "DNS-1035" in done.stderr, done.stderr


def test_long_name_is_refused(kubectl: Kubectl, rig: rig_env.RigEnv, crd: str) -> None:
    manifest = example(rig)
    manifest["metadata"]["name"] = "a" * 60
    done = kubectl(
        "apply", "--dry-run=server", "-n", "default", "-f", "-",
        stdin=yaml.safe_dump(manifest), check=False,
    )  # fmt: skip
    assert done.returncode != 0
    assert "metadata.name" in done.stderr


def test_a_child_the_api_server_refuses_is_degraded_apply_failed_with_its_message(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    # the CRD passes tolerations through; the Deployment's own validation refuses this one
    bad = {"tolerations": [{"key": "gpu", "operator": "Sometimes", "effect": "NoSchedule"}]}
    apply(kubectl, namespace, example(rig, podTemplate=bad))
    obj = wait_for(
        "Degraded=True ApplyFailed",
        lambda: aw(kubectl, namespace),
        lambda o: condition(o, "Degraded").get("reason") == "ApplyFailed",
        timeout_s=60,
    )
    message = condition(obj, "Degraded")["message"]
    assert "Deployment basic-agent" in message
    assert "Sometimes" in message, "the API server's own message"
    assert ready_is("False", "ApplyFailed")(obj)
    assert any(
        e.get("reason") == "ApplyFailed"
        for e in get_json(kubectl, "events", "-n", namespace)["items"]
    )


def test_missing_secret_is_degraded_with_an_event_naming_it(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, operator: OperatorProcess
) -> None:
    """The operator does not read the Secret (it may not): the pods' CreateContainerConfigError
    tells it, and it names the Secret and what to do."""
    apply(kubectl, namespace, example(rig, replicas=1))
    obj = wait_for(
        "Degraded=True SecretNotFound",
        lambda: aw(kubectl, namespace),
        lambda o: condition(o, "Degraded").get("reason") == "SecretNotFound",
        timeout_s=60,
    )
    assert condition(obj, "Degraded")["status"] == "True"
    message = condition(obj, "Degraded")["message"]
    assert "livekit-credentials" in message
    assert "LIVEKIT_API_KEY and LIVEKIT_API_SECRET" in message
    assert ready_is("False", "SecretNotFound")(obj)
    events = wait_for(
        "a SecretNotFound Event",
        lambda: get_json(kubectl, "events", "-n", namespace)["items"],
        lambda items: any(e.get("reason") == "SecretNotFound" for e in items),
        timeout_s=30,
    )
    assert any(e["type"] == "Warning" for e in events if e.get("reason") == "SecretNotFound")


def test_a_key_missing_from_the_secret_is_degraded_naming_the_key(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, operator: OperatorProcess
) -> None:
    kubectl(
        "create", "secret", "generic", "livekit-credentials", "-n", namespace,
        f"--from-literal=LIVEKIT_API_KEY={rig.livekit_api_key}",
    )  # fmt: skip
    apply(kubectl, namespace, example(rig, replicas=1))
    obj = wait_for(
        "Degraded=True SecretKeyMissing",
        lambda: aw(kubectl, namespace),
        lambda o: condition(o, "Degraded").get("reason") == "SecretKeyMissing",
        timeout_s=60,
    )
    assert "LIVEKIT_API_SECRET" in condition(obj, "Degraded")["message"]


def test_unreachable_livekit_is_degraded_and_the_deployment_still_applied(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    manifest = example(rig, replicas=1)
    manifest["spec"]["livekit"]["url"] = f"ws://127.0.0.1:{free_port()}"
    apply(kubectl, namespace, manifest)
    obj = wait_for(
        "Degraded=True LiveKitUnreachable",
        lambda: aw(kubectl, namespace),
        lambda o: condition(o, "Degraded").get("reason") == "LiveKitUnreachable",
        timeout_s=60,
    )
    assert manifest["spec"]["livekit"]["url"] in condition(obj, "Degraded")["message"]
    assert condition(obj, "Ready")["status"] == "False"
    assert kubectl("get", "deployment", NAME, "-n", namespace).returncode == 0


def test_secret_created_later_heals_the_fleet(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, operator: OperatorProcess
) -> None:
    apply(kubectl, namespace, example(rig, replicas=1))
    wait_for(
        "Degraded=True SecretNotFound",
        lambda: aw(kubectl, namespace),
        lambda o: condition(o, "Degraded").get("reason") == "SecretNotFound",
        timeout_s=60,
    )
    kubectl(
        "create", "secret", "generic", "livekit-credentials", "-n", namespace,
        f"--from-literal=LIVEKIT_API_KEY={rig.livekit_api_key}",
        f"--from-literal=LIVEKIT_API_SECRET={rig.livekit_api_secret}",
    )  # fmt: skip
    wait_ready(kubectl, namespace, replicas=1, timeout_s=150)


def test_hand_edit_of_the_deployment_is_reverted(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    apply(kubectl, namespace, example(rig, replicas=1))
    wait_ready(kubectl, namespace, replicas=1)
    patch = {"spec": {"template": {"spec": {"terminationGracePeriodSeconds": 1}}}}
    kubectl("patch", "deployment", NAME, "-n", namespace, "--type=merge", "-p", json.dumps(patch))
    expected = 1800 + 60 + 30  # drainTimeout + shutdownProcessTimeout + the 30 s margin
    wait_for(
        "terminationGracePeriodSeconds put back",
        lambda: get_json(kubectl, "deployment", NAME, "-n", namespace),
        lambda d: d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == expected,
        timeout_s=30,
    )
    kubectl("scale", "deployment", NAME, "-n", namespace, "--replicas=4")
    wait_for(
        "Deployment replicas put back to 1",
        lambda: get_json(kubectl, "deployment", NAME, "-n", namespace),
        lambda d: d["spec"]["replicas"] == 1,
        timeout_s=30,
    )
    kubectl("delete", "deployment", NAME, "-n", namespace, "--wait=false")
    wait_for(
        "a deleted Deployment made again",
        lambda: get_json(kubectl, "deployment", NAME, "-n", namespace, "--ignore-not-found"),
        lambda d: bool(d) and not d["metadata"].get("deletionTimestamp"),
        timeout_s=60,
    )


def test_invalid_update_keeps_the_last_good_deployment(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    apply(kubectl, namespace, example(rig, replicas=1))
    wait_ready(kubectl, namespace, replicas=1)
    before = get_json(kubectl, "deployment", NAME, "-n", namespace)["metadata"]["generation"]
    # Valid for the schema, refused by the operator: a scale-down period longer than 24h.
    bad = example(rig, replicas=1, autoscaling={"scaleDown": {"period": "48h"}})
    apply(kubectl, namespace, bad)
    obj = wait_for(
        "Degraded=True InvalidSpec",
        lambda: aw(kubectl, namespace),
        lambda o: condition(o, "Degraded").get("reason") == "InvalidSpec",
        timeout_s=60,
    )
    assert "spec.autoscaling.scaleDown.period" in condition(obj, "Degraded")["message"]
    wait_for(
        "an InvalidSpec Warning Event",
        lambda: get_json(kubectl, "events", "-n", namespace)["items"],
        lambda items: any(
            e.get("reason") == "InvalidSpec" and e.get("type") == "Warning" for e in items
        ),
        timeout_s=30,
    )
    deployment = get_json(kubectl, "deployment", NAME, "-n", namespace)
    assert deployment["metadata"]["generation"] == before
    assert deployment["status"]["readyReplicas"] == 1
    assert operator.health() is not None


def test_entrypoint_that_cannot_start_is_degraded_and_old_workers_keep_serving(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    apply(kubectl, namespace, example(rig, replicas=1))
    wait_ready(kubectl, namespace, replicas=1)
    old = {p["metadata"]["name"] for p in pods(kubectl, namespace)}
    apply(kubectl, namespace, example(rig, replicas=1, entrypoint="examples.agents.nope:main"))
    obj = wait_for(
        "Degraded=True WorkersFailing",
        lambda: aw(kubectl, namespace),
        lambda o: condition(o, "Degraded").get("reason") == "WorkersFailing",
        timeout_s=90,
        interval_s=0.5,
    )
    assert "CrashLoopBackOff" in condition(obj, "Degraded")["message"]
    serving = {p["metadata"]["name"] for p in pods(kubectl, namespace) if is_ready(p)}
    assert serving == old, "the old worker must keep serving while the new one cannot start"


def test_deleting_the_agentworker_removes_what_it_made(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    apply(kubectl, namespace, example(rig, replicas=1))
    wait_for(
        "the Deployment",
        lambda: kubectl("get", "deployment", NAME, "-n", namespace, check=False).returncode,
        lambda code: code == 0,
        timeout_s=60,
    )
    kubectl("delete", "-n", namespace, "-f", str(EXAMPLE_FILE), "--wait=true")
    for kind in ("deployment", "poddisruptionbudget", "service"):
        wait_for(
            f"every {kind} gone",
            functools.partial(listed, kubectl, kind, namespace),
            lambda items: items == [],
            timeout_s=90,
        )


def test_operator_killed_mid_reconcile_converges_without_duplicates(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, credentials: str,
    operator: OperatorProcess,
) -> None:  # fmt: skip
    apply(kubectl, namespace, example(rig, replicas=2))
    wait_for(
        "the Deployment",
        lambda: kubectl("get", "deployment", NAME, "-n", namespace, check=False).returncode,
        lambda code: code == 0,
        timeout_s=60,
        interval_s=0.05,
    )
    operator.kill()
    operator.start()
    wait_ready(kubectl, namespace, replicas=2, timeout_s=150)
    for kind in ("deployment", "poddisruptionbudget", "service", "replicaset"):
        items = listed(kubectl, kind, namespace)
        assert len(items) == 1, f"{kind}: {[i['metadata']['name'] for i in items]}"
