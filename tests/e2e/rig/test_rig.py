"""The rig is real: each test fails if its component is missing or faked."""

from __future__ import annotations

import json
import ssl
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from livekit import api as lkapi

from tests.e2e.conftest import Kubectl
from tests.rig import env as rig_env
from tests.waiting import async_wait_for, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.rig.agentworker.dev"},
    "spec": {
        "group": "rig.agentworker.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["size"],
                                "properties": {
                                    "size": {"type": "integer", "minimum": 1, "maximum": 10}
                                },
                            }
                        },
                    }
                },
            }
        ],
    },
}


def api_port(rig: rig_env.RigEnv) -> int:
    server = json.loads(rig.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return int(server.rsplit(":", 1)[1])


def test_api_server_is_the_pinned_release(api_client: client.ApiClient) -> None:
    version = client.VersionApi(api_client).get_code()
    assert version.git_version == "v1.37.2"


def test_crd_schema_refuses_an_invalid_object_with_the_servers_message(
    api_client: client.ApiClient,
    namespace: str,
) -> None:
    extensions = client.ApiextensionsV1Api(api_client)
    existing = [c.metadata.name for c in extensions.list_custom_resource_definition().items]
    if WIDGET_CRD["metadata"]["name"] not in existing:  # type: ignore[index]
        extensions.create_custom_resource_definition(WIDGET_CRD)  # type: ignore[arg-type]
    wait_for(
        "the Widget CRD to be Established",
        lambda: extensions.read_custom_resource_definition(WIDGET_CRD["metadata"]["name"]),  # type: ignore[index]
        lambda crd: any(
            c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])
        ),
    )
    custom = client.CustomObjectsApi(api_client)
    good = {
        "apiVersion": "rig.agentworker.dev/v1",
        "kind": "Widget",
        "metadata": {"name": "good"},
        "spec": {"size": 3},
    }
    wait_for(
        "the Widget endpoint to serve",
        lambda: custom.create_namespaced_custom_object(
            "rig.agentworker.dev", "v1", namespace, "widgets", good
        ),
        lambda _: True,
    )
    bad = {**good, "metadata": {"name": "bad"}, "spec": {"size": 99}}
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(
            "rig.agentworker.dev", "v1", namespace, "widgets", bad
        )
    assert refused.value.status == 422
    assert (
        "spec.size: Invalid value: 99: spec.size in body should be less than or equal to 10"
        in str(refused.value.body)
    )


def echo_deployment(name: str, marks: Path, replicas: int, exit_delay_s: float) -> Any:
    """A Deployment manifest (a plain dict, which the client accepts for a model)."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": "echo",
                            "image": "rig.invalid/echo:ignored",
                            "command": [
                                sys.executable,
                                str(Path(__file__).with_name("echo_server.py")),
                            ],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "env": [
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                },
                                {"name": "MARK_DIR", "value": str(marks)},
                                {"name": "EXIT_DELAY_S", "value": str(exit_delay_s)},
                            ],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }


def ready_pods(core: client.CoreV1Api, namespace: str, app: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (p.status.conditions or []))
    ]


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        result: dict[str, Any] = json.load(resp)
        return result


def test_deployment_pods_are_scheduled_run_and_answer_on_their_own_ip(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    rig: rig_env.RigEnv,
    tmp_path: Path,
) -> None:
    apps.create_namespaced_deployment(namespace, echo_deployment("echo", tmp_path, 3, 0))
    replica_sets = wait_for(
        "a ReplicaSet made by kube-controller-manager",
        lambda: apps.list_namespaced_replica_set(namespace).items,
        lambda items: len(items) == 1,
    )
    owners = replica_sets[0].metadata.owner_references or []
    assert [o.kind for o in owners] == ["Deployment"]
    pods = wait_for(
        "3 Ready pods",
        lambda: ready_pods(core, namespace, "echo"),
        lambda pods: len(pods) == 3,
        timeout_s=90,
    )
    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 3
    assert all(ip.startswith("127.") and ip != "127.0.0.1" for ip in ips)
    for pod in pods:
        assert pod.spec.node_name == rig.node_name  # bound by kube-scheduler
        answer = get_json(f"http://{pod.status.pod_ip}:8080/")
        assert answer["pod"] == pod.metadata.name


def test_scale_down_sends_sigterm_to_exactly_the_removed_pods_and_honours_grace(
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
) -> None:
    apps.create_namespaced_deployment(namespace, echo_deployment("slow", tmp_path, 3, 3.0))
    wait_for(
        "3 Ready pods",
        lambda: ready_pods(core, namespace, "slow"),
        lambda pods: len(pods) == 3,
        timeout_s=90,
    )
    apps.patch_namespaced_deployment_scale("slow", namespace, {"spec": {"replicas": 1}})
    wait_for(
        "2 pods to get SIGTERM and exit",
        lambda: sorted(p.name for p in tmp_path.iterdir()),
        lambda names: len([n for n in names if n.endswith(".exit")]) == 2,
        timeout_s=60,
    )
    remaining = wait_for(
        "the 2 pods to be removed",
        lambda: core.list_namespaced_pod(namespace, label_selector="app=slow").items,
        lambda pods: len(pods) == 1,
    )
    # checked once the pods are gone: a third SIGTERM would have come with the first two
    terms = sorted(tmp_path.glob("*.term"))
    assert len(terms) == 2
    for term in terms:
        given = float(term.with_suffix(".exit").read_text()) - float(term.read_text())
        assert given >= 3.0, f"{term.stem} was killed {given:.1f}s after SIGTERM"
    assert str(remaining[0].metadata.name) not in {t.stem for t in terms}


def test_deleting_an_owner_removes_its_dependents(core: client.CoreV1Api, namespace: str) -> None:
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    reference = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=str(owner.metadata.uid)
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="dependent", owner_references=[reference])
        ),
    )
    core.delete_namespaced_config_map("owner", namespace)
    wait_for(
        "the garbage collector to delete the dependent",
        lambda: [c.metadata.name for c in core.list_namespaced_config_map(namespace).items],
        lambda names: "dependent" not in names,
        timeout_s=60,
    )


def test_anonymous_request_is_refused(rig: rig_env.RigEnv) -> None:
    context = ssl.create_default_context(cafile=str(rig_env.RIG_DIR / "pki" / "ca.crt"))
    url = f"https://127.0.0.1:{api_port(rig)}/api/v1/namespaces"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=5, context=context)
    refused.value.close()
    assert refused.value.code == 401


def test_kubectl_and_helm_are_on_the_rigs_path(kubectl: Kubectl, rig: rig_env.RigEnv) -> None:
    assert "v1.37" in kubectl("version", "-o", "json").stdout
    assert (Path(rig.bin_path) / "helm").exists()


async def test_livekit_answers_list_rooms_with_the_rigs_keys_and_refuses_a_wrong_secret(
    rig: rig_env.RigEnv,
) -> None:
    http_url = rig.livekit_url.replace("ws://", "http://")
    room = f"rig-{uuid.uuid4().hex[:6]}"
    async with lkapi.LiveKitAPI(http_url, rig.livekit_api_key, rig.livekit_api_secret) as good:
        await good.room.create_room(lkapi.CreateRoomRequest(name=room))
        rooms = await async_wait_for(
            "the new room to be listed",
            lambda: good.room.list_rooms(lkapi.ListRoomsRequest()),
            lambda listing: room in [r.name for r in listing.rooms],
        )
        assert room in [r.name for r in rooms.rooms]
        await good.room.delete_room(lkapi.DeleteRoomRequest(room=room))
    async with lkapi.LiveKitAPI(http_url, rig.livekit_api_key, "wrong" * 8) as bad:
        with pytest.raises(lkapi.TwirpError) as refused:
            await bad.room.list_rooms(lkapi.ListRoomsRequest())
    assert refused.value.status == 401


def bare_pod(
    name: str, code: str, restart_policy: str, env: list[dict[str, Any]] | None = None
) -> Any:
    """A Pod manifest running a line of Python (a plain dict, which the client accepts)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart_policy,
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "main",
                    "image": "rig.invalid/ignored",
                    "command": [sys.executable, "-c", code],
                    "env": env or [],
                }
            ],
        },
    }


def container_status(core: client.CoreV1Api, namespace: str, name: str) -> Any:
    statuses = core.read_namespaced_pod(name, namespace).status.container_statuses or []
    return statuses[0] if statuses else None


def test_runner_restarts_a_crashing_container_with_backoff(
    core: client.CoreV1Api,
    namespace: str,
) -> None:
    core.create_namespaced_pod(namespace, bare_pod("crash", "raise SystemExit(3)", "Always"))
    status = wait_for(
        "two restarts",
        lambda: container_status(core, namespace, "crash"),
        lambda s: s is not None and s.restart_count >= 2,
        timeout_s=60,
    )
    assert status.last_state.terminated.exit_code == 3


def test_runner_completes_a_never_restarted_pod(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, bare_pod("once", "print('done')", "Never"))
    wait_for(
        "phase Succeeded",
        lambda: core.read_namespaced_pod("once", namespace).status.phase,
        lambda phase: phase == "Succeeded",
        timeout_s=60,
    )


def test_runner_waits_for_a_missing_secret_then_starts(
    core: client.CoreV1Api, namespace: str
) -> None:
    env = [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "late", "key": "token"}}}]
    code = "import os, time; assert os.environ['TOKEN'] == 'abc'; time.sleep(60)"
    core.create_namespaced_pod(namespace, bare_pod("waits", code, "Always", env))
    waiting = wait_for(
        "CreateContainerConfigError",
        lambda: container_status(core, namespace, "waits"),
        lambda s: (
            s is not None
            and s.state.waiting is not None
            and s.state.waiting.reason == "CreateContainerConfigError"
        ),
    )
    assert 'secret "late" not found' in waiting.state.waiting.message
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="late"), string_data={"token": "abc"}),
    )
    running = wait_for(
        "the container to run",
        lambda: container_status(core, namespace, "waits"),
        lambda s: s is not None and s.state.running is not None,
        timeout_s=30,
    )
    assert running.restart_count == 0
