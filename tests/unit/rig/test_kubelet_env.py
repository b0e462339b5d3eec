"""The process runner resolves a container's env and command the way a kubelet does."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from tests.rig import kubelet_env

POD: dict[str, Any] = {
    "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {"nodeName": "rig-node", "serviceAccountName": "default"},
}
OBJECTS: dict[tuple[str, str, str], dict[str, str]] = {
    ("Secret", "shop", "creds"): {"LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "s3cret"},
    ("ConfigMap", "shop", "settings"): {"mode": "fast", "level": "debug"},
}


def lookup(kind: str, namespace: str, name: str) -> Mapping[str, str] | None:
    return OBJECTS.get((kind, namespace, name))


def resolve(env: list[dict[str, Any]], **container: Any) -> dict[str, str]:
    spec = {"name": "app", "env": env, **container}
    return kubelet_env.container_env(POD, spec, "127.0.1.7", "127.0.0.1", lookup)


@pytest.mark.parametrize(
    ("field_path", "expected"),
    [
        ("metadata.name", "web-1"),
        ("metadata.namespace", "shop"),
        ("status.podIP", "127.0.1.7"),
        ("status.hostIP", "127.0.0.1"),
        ("spec.nodeName", "rig-node"),
        ("metadata.labels['app']", "web"),
    ],
    ids=lambda v: str(v),
)
def test_field_ref_resolves_from_the_pod(field_path: str, expected: str) -> None:
    env = resolve([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": field_path}}}])
    assert env == {"X": expected}


def test_secret_and_config_map_key_refs_resolve() -> None:
    env = resolve(
        [
            {
                "name": "K",
                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "LIVEKIT_API_KEY"}},
            },
            {"name": "M", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        ]
    )
    assert env == {"K": "key", "M": "fast"}


def test_missing_secret_is_a_config_error_naming_it() -> None:
    with pytest.raises(kubelet_env.ContainerConfigError, match='secret "nope" not found'):
        resolve([{"name": "K", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}])


def test_missing_key_is_a_config_error_unless_optional() -> None:
    ref = {"name": "creds", "key": "absent"}
    with pytest.raises(kubelet_env.ContainerConfigError, match="couldn't find key absent"):
        resolve([{"name": "K", "valueFrom": {"secretKeyRef": ref}}])
    optional = {**ref, "optional": True}
    assert resolve([{"name": "K", "valueFrom": {"secretKeyRef": optional}}]) == {}


def test_env_from_applies_prefix_and_later_env_wins() -> None:
    env = resolve(
        [{"name": "CFG_mode", "value": "slow"}],
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
    )
    assert env == {"CFG_mode": "slow", "CFG_level": "debug"}


def test_values_expand_earlier_variables_and_keep_unknown_ones() -> None:
    env = resolve(
        [
            {"name": "HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "URL", "value": "http://$(HOST):8081/$(NOPE)/$$(HOST)"},
        ]
    )
    assert env["URL"] == "http://127.0.1.7:8081/$(NOPE)/$(HOST)"


def test_command_line_expands_variables_in_command_and_args() -> None:
    container = {"name": "app", "command": ["serve"], "args": ["--bind", "$(POD_IP)"]}
    assert kubelet_env.command_line(container, {"POD_IP": "127.0.1.7"}) == [
        "serve",
        "--bind",
        "127.0.1.7",
    ]


def test_a_container_without_command_cannot_run_because_images_are_ignored() -> None:
    with pytest.raises(kubelet_env.ContainerConfigError, match="has no command"):
        kubelet_env.command_line({"name": "app", "args": ["x"]}, {})


@pytest.mark.parametrize(("port", "expected"), [(8081, 8081), ("8081", 8081), ("http", 9000)])
def test_probe_port_may_name_a_container_port(port: int | str, expected: int) -> None:
    container = {"name": "app", "ports": [{"name": "http", "containerPort": 9000}]}
    assert kubelet_env.resolve_port(container, port) == expected


def test_unknown_named_port_is_an_error() -> None:
    with pytest.raises(kubelet_env.ContainerConfigError, match="not a named port"):
        kubelet_env.resolve_port({"name": "app"}, "metrics")


def test_every_container_gets_the_api_servers_address_and_its_own_env_wins() -> None:
    services = kubelet_env.service_env("127.0.0.1", 6443)
    assert services["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert services["KUBERNETES_SERVICE_PORT"] == "6443"
    assert services["KUBERNETES_PORT_6443_TCP"] == "tcp://127.0.0.1:6443"
    spec = {
        "name": "app",
        "env": [
            {
                "name": "API",
                "value": "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)",
            },
            {"name": "KUBERNETES_SERVICE_PORT", "value": "443"},
        ],
    }
    env = kubelet_env.container_env(POD, spec, "127.0.1.7", "127.0.0.1", lookup, services)
    assert env["API"] == "https://127.0.0.1:6443"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("resources", "ref", "expected"),
    [
        pytest.param({"requests": {"cpu": "100m"}}, {"resource": "requests.cpu", "divisor": "1m"},
                     "100", id="millicores"),
        pytest.param({"requests": {"cpu": "1.5"}}, {"resource": "requests.cpu", "divisor": "1m"},
                     "1500", id="cores-in-millicores"),
        pytest.param({"requests": {"cpu": "100m"}}, {"resource": "requests.cpu"}, "1",
                     id="rounded-up-to-whole-cores"),
        pytest.param({"limits": {"memory": "1Gi"}}, {"resource": "limits.memory", "divisor": "1Mi"},
                     "1024", id="mebibytes"),
        pytest.param({}, {"resource": "requests.cpu", "divisor": "1m"}, "0", id="no-request"),
    ],
)  # fmt: skip
def test_resource_field_refs_divide_by_the_divisor_and_round_up(
    resources: dict[str, object], ref: dict[str, object], expected: str
) -> None:
    spec = {
        "name": "c",
        "resources": resources,
        "env": [{"name": "X", "valueFrom": {"resourceFieldRef": ref}}],
    }
    assert kubelet_env.container_env(POD, spec, "127.0.1.7", "127.0.0.1", lookup)["X"] == expected
