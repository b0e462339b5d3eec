"""What a kubelet computes for a container before it starts it: env, command line, probes' target.

Test infrastructure only, and pure: the pod is a plain dict; Secrets and ConfigMaps come in through
a lookup function, so this module does no I/O of its own.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

# (kind, namespace, name) -> the object's decoded data, or None when it does not exist.
Lookup = Callable[[str, str, str], Mapping[str, str] | None]
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class ContainerConfigError(ValueError):
    """The container cannot start yet: a referenced Secret, ConfigMap or key is missing."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: known names are replaced, $$ escapes, unknown stay."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(replace, text)


def field_value(pod: Mapping[str, Any], path: str, pod_ip: str, host_ip: str) -> str:
    meta = pod.get("metadata", {})
    spec = pod.get("spec", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str(meta.get(match.group(1), {}).get(match.group(2), ""))
    raise ContainerConfigError(f"unsupported fieldRef.fieldPath {path!r}")


def _key_ref(ref: Mapping[str, Any], kind: str, namespace: str, lookup: Lookup) -> str | None:
    data = lookup(kind, namespace, ref["name"])
    optional = bool(ref.get("optional", False))
    if data is None:
        if optional:
            return None
        # the kubelet's own words (pkg/kubelet/kubelet_pods.go)
        raise ContainerConfigError(f'{kind.lower()} "{ref["name"]}" not found')
    if ref["key"] not in data:
        if optional:
            return None
        raise ContainerConfigError(
            f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}"
        )
    return data[ref["key"]]


_DECIMAL = {"": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_SUFFIXES: dict[str, Fraction] = {
    "m": Fraction(1, 1000),
    **{suffix: Fraction(10**power) for suffix, power in _DECIMAL.items()},
    **{suffix: Fraction(2**power) for suffix, power in _BINARY.items()},
}
_QUANTITY = re.compile(r"([0-9.]+)([a-zA-Z]*)")


def parse_quantity(text: object) -> Fraction:
    """A Kubernetes quantity ("100m", "1.5", "256Mi") as an exact number."""
    found = _QUANTITY.fullmatch(str(text).strip())
    if found is None or found.group(2) not in _SUFFIXES:
        raise ValueError(f"{text!r} is not a quantity")
    return Fraction(found.group(1)) * _SUFFIXES[found.group(2)]


def _resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    """As the kubelet: the quantity divided by the divisor, rounded up (no request: 0)."""
    kind, _, resource = str(ref["resource"]).partition(".")
    value = container.get("resources", {}).get(kind, {}).get(resource)
    if value is None:
        return "0"
    divisor = parse_quantity(ref.get("divisor") or "1")
    return str(math.ceil(parse_quantity(value) / divisor))


def _env_from(container: Mapping[str, Any], namespace: str, lookup: Lookup) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(key)
            if ref is None:
                continue
            data = lookup(kind, namespace, ref["name"])
            if data is None and not ref.get("optional", False):
                raise ContainerConfigError(f'{kind} "{ref["name"]}" not found')
            env.update({prefix + k: v for k, v in (data or {}).items()})
    return env


def service_env(host: str, port: int) -> dict[str, str]:
    """The variables a kubelet gives every container for the `kubernetes` Service of `default`.

    A kubelet sets them even with enableServiceLinks false and even without a service account
    token (kubelet_pods.go: "We always want to add environment variables for master services").
    They name the Service's cluster IP and port 443 there; the rig has no kube-proxy to route a
    cluster IP, so here they name the API server's own address and port.
    """
    prefix = f"KUBERNETES_PORT_{port}_TCP"
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": str(port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(port),
        "KUBERNETES_PORT": f"tcp://{host}:{port}",
        prefix: f"tcp://{host}:{port}",
        f"{prefix}_PROTO": "tcp",
        f"{prefix}_PORT": str(port),
        f"{prefix}_ADDR": host,
    }


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_ip: str,
    host_ip: str,
    lookup: Lookup,
    services: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container's environment as a kubelet resolves it, in declaration order.

    `services` (see `service_env`) can be referred to as $(VAR) and fill in the names the
    container does not set itself, as a kubelet does.
    """
    namespace = pod["metadata"]["namespace"]
    services = services or {}
    env = _env_from(container, namespace, lookup)
    for var in container.get("env", []):
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), {**services, **env})
            continue
        source = var["valueFrom"]
        value: str | None
        if "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"], pod_ip, host_ip)
        elif "secretKeyRef" in source:
            value = _key_ref(source["secretKeyRef"], "Secret", namespace, lookup)
        elif "configMapKeyRef" in source:
            value = _key_ref(source["configMapKeyRef"], "ConfigMap", namespace, lookup)
        elif "resourceFieldRef" in source:
            value = _resource_value(container, source["resourceFieldRef"])
        else:
            raise ContainerConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
        if value is not None:
            env[name] = value
    return {**services, **env}


def command_line(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args with $(VAR) expanded; the image is ignored, so a command is required."""
    argv = [expand(str(a), env) for a in container.get("command", []) + container.get("args", [])]
    if not container.get("command"):
        raise ContainerConfigError(
            f'container "{container["name"]}" has no command: the process runner ignores images'
        )
    return argv


def resolve_port(container: Mapping[str, Any], port: int | str) -> int:
    """A probe's port, which may name one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports", []):
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ContainerConfigError(f"probe port {port!r} is not a named port of the container")
