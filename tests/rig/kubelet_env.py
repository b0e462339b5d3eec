"""What a kubelet computes for a container before it starts it: env, command line, probes' target.

Test infrastructure only, and pure: the pod is a plain dict; Secrets and ConfigMaps come in through
a lookup function, so this module does no I/O of its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
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
        raise ContainerConfigError(f'{kind} "{ref["name"]}" not found')
    if ref["key"] not in data:
        if optional:
            return None
        raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {ref['name']}")
    return data[ref["key"]]


def _resource_value(container: Mapping[str, Any], ref: Mapping[str, Any]) -> str:
    kind, _, resource = str(ref["resource"]).partition(".")
    value = container.get("resources", {}).get(kind, {}).get(resource)
    return str(value) if value is not None else "0"


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


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    pod_ip: str,
    host_ip: str,
    lookup: Lookup,
) -> dict[str, str]:
    """The container's environment as a kubelet resolves it, in declaration order."""
    namespace = pod["metadata"]["namespace"]
    env = _env_from(container, namespace, lookup)
    for var in container.get("env", []):
        name = var["name"]
        if "valueFrom" not in var:
            env[name] = expand(str(var.get("value", "")), env)
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
    return env


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
