"""What a kubelet puts in a pod's projected volumes, when it renews tokens, where it mounts them.

Test infrastructure only, and pure: the pod is a plain dict; ConfigMaps and Secrets come in
through a lookup function and service account tokens through a token function, and the clock is
an argument. `volumes.py` does the I/O (TokenRequest calls, files, the per-pod directory).

The ServiceAccount admission plugin of the API server adds the projected volume
`kube-api-access-*` (a serviceAccountToken, the `kube-root-ca.crt` ConfigMap's ca.crt and the
namespace) and its mount at /var/run/secrets/kubernetes.io/serviceaccount, unless the pod or its
ServiceAccount says automountServiceAccountToken: false. So, as a kubelet, the runner only does
what the pod spec says: no volume in the spec, no token.

It also decides which emptyDir volumes the runner emulates (an empty directory per pod, shared by
its containers): only those mounted under EMPTY_DIR_PREFIXES; elsewhere (the operator's /tmp) a
container keeps seeing the host's directory, as before.
"""

from __future__ import annotations

import datetime
import posixpath
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tests.rig import kubelet_env

DEFAULT_MODE = 0o644
"""Mode of projected files when the volume names none (the API's default, 420)."""
DEFAULT_EXPIRATION_S = 3600
"""A serviceAccountToken source's expirationSeconds when it names none (the API's default)."""
MAX_TOKEN_AGE = datetime.timedelta(hours=24)
"""A kubelet renews a token older than this whatever its lifetime (token manager's maxTTL)."""
REFRESH_AT_FRACTION = 0.8
"""A kubelet renews a token once this fraction of its lifetime has passed."""
MOUNT_PREFIXES = ("/var/run/secrets/", "/run/secrets/")
"""Mount paths where the runner emulates projected volumes; it may create an empty mount point on
the host there (a path matches when it is a prefix's directory or lies under it)."""
EMPTY_DIR_PREFIXES = ("/agentworker-companion/",)
"""Mount paths where the runner emulates emptyDir volumes (it may create an empty mount point on
the host there): the operator's companion init container copies a package into one, which the app
container imports. Not /tmp, where the operator's pods also mount an emptyDir: the tests read what
the pods' processes leave in the host's /tmp, and a bind mount over it would hide that."""


@dataclass(frozen=True, slots=True)
class TokenKey:
    """What a token is requested with; the kubelet's token cache key for one pod."""

    audiences: tuple[str, ...]
    """Empty: the API server's own audiences (a source without `audience`)."""
    expiration_s: int


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A TokenRequest's answer."""

    token: str
    expires_at: datetime.datetime
    """status.expirationTimestamp: issued at plus the requested lifetime."""
    expiration_s: int


@dataclass(frozen=True, slots=True)
class ProjectedFile:
    """One file of a projected volume, relative to the volume's root."""

    path: str
    data: bytes
    mode: int


@dataclass(frozen=True, slots=True)
class BindMount:
    """A volume directory on the host and where the container sees it."""

    source: str
    target: str
    read_only: bool


Tokens = Callable[[TokenKey], IssuedToken]


class VolumeError(ValueError):
    """A volume cannot be set up yet (a missing ConfigMap or Secret, a refused token)."""


def projected_volumes(pod: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The pod's projected volumes that some container mounts where the runner can mount them."""
    wanted = {
        mount["name"]
        for container in _all_containers(pod)
        for mount in container.get("volumeMounts", [])
        if emulated_path(mount)
    }
    return {
        v["name"]: v["projected"]
        for v in pod.get("spec", {}).get("volumes", [])
        if "projected" in v and v["name"] in wanted
    }


def empty_dir_volumes(pod: Mapping[str, Any]) -> list[str]:
    """The pod's emptyDir volumes that some container mounts under EMPTY_DIR_PREFIXES.

    medium and sizeLimit are not emulated: the directory is on the runner's disk.
    """
    wanted = {
        mount["name"]
        for container in _all_containers(pod)
        for mount in container.get("volumeMounts", [])
        if emulated_path(mount, EMPTY_DIR_PREFIXES)
    }
    return [
        v["name"]
        for v in pod.get("spec", {}).get("volumes", [])
        if "emptyDir" in v and v["name"] in wanted
    ]


def emulated_path(mount: Mapping[str, Any], prefixes: Sequence[str] = MOUNT_PREFIXES) -> bool:
    """Whether the runner mounts this volumeMount: a whole volume at or under one of `prefixes`."""
    path = posixpath.normpath(str(mount.get("mountPath", "")))
    # "/x/" matches "/x" itself and "/x/y", never "/xy".
    return not mount.get("subPath") and f"{path}/".startswith(tuple(prefixes))


def token_keys(volume: Mapping[str, Any]) -> list[TokenKey]:
    """The tokens one projected volume needs."""
    keys = []
    for source in volume.get("sources", []):
        token = source.get("serviceAccountToken")
        if token is not None:
            audience = token.get("audience") or ""
            expiration = int(token.get("expirationSeconds") or DEFAULT_EXPIRATION_S)
            keys.append(TokenKey((audience,) if audience else (), expiration))
    return keys


def _items(
    data: Mapping[str, bytes], items: Sequence[Mapping[str, Any]] | None, kind: str
) -> list[tuple[str, bytes, int | None]]:
    if not items:
        return [(key, value, None) for key, value in sorted(data.items())]
    chosen = []
    for item in items:
        if item["key"] not in data:
            # The kubelet's messages (configmap.go, secret.go).
            missing = "configmap references non-existent config key"
            if kind == "Secret":
                missing = "references non-existent secret key"
            raise VolumeError(f"{missing}: {item['key']}")
        chosen.append((str(item["path"]), data[item["key"]], item.get("mode")))
    return chosen


def _object_files(
    source: Mapping[str, Any], kind: str, namespace: str, lookup: kubelet_env.Lookup
) -> list[tuple[str, bytes, int | None]]:
    name = str(source.get("name", ""))
    found = lookup(kind, namespace, name)
    if found is None:
        if source.get("optional"):
            return []
        raise VolumeError(f'{kind.lower()} "{name}" not found')
    data = {k: v.encode() for k, v in found.items()}
    return _items(data, source.get("items"), kind)


def _downward_files(
    source: Mapping[str, Any], pod: Mapping[str, Any], pod_ip: str, host_ip: str
) -> list[tuple[str, bytes, int | None]]:
    files = []
    for item in source.get("items", []):
        if "fieldRef" in item:
            value = kubelet_env.field_value(pod, item["fieldRef"]["fieldPath"], pod_ip, host_ip)
        else:
            raise VolumeError(f"downwardAPI item {item.get('path')!r}: only fieldRef is emulated")
        files.append((str(item["path"]), value.encode(), item.get("mode")))
    return files


def project(
    volume: Mapping[str, Any],
    pod: Mapping[str, Any],
    pod_ip: str,
    host_ip: str,
    lookup: kubelet_env.Lookup,
    tokens: Tokens,
) -> list[ProjectedFile]:
    """The files of one projected volume, from its sources in order (a later path wins)."""
    namespace = pod["metadata"]["namespace"]
    default_mode = int(volume.get("defaultMode", DEFAULT_MODE))
    files: dict[str, ProjectedFile] = {}
    for source in volume.get("sources", []):
        entries: list[tuple[str, bytes, int | None]]
        if "serviceAccountToken" in source:
            token_source = source["serviceAccountToken"]
            (key,) = token_keys({"sources": [source]})
            entries = [(str(token_source["path"]), tokens(key).token.encode(), None)]
        elif "configMap" in source:
            entries = _object_files(source["configMap"], "ConfigMap", namespace, lookup)
        elif "secret" in source:
            entries = _object_files(source["secret"], "Secret", namespace, lookup)
        elif "downwardAPI" in source:
            entries = _downward_files(source["downwardAPI"], pod, pod_ip, host_ip)
        else:
            raise VolumeError(f"projected source {sorted(source)} is not emulated")
        for path, data, mode in entries:
            files[path] = ProjectedFile(path, data, default_mode if mode is None else int(mode))
    return list(files.values())


def refresh_due(issued: IssuedToken, now: datetime.datetime, jitter_s: float = 0.0) -> bool:
    """A kubelet's rule: renew past 80 % of the lifetime, or once a day, less a jitter."""
    lifetime = datetime.timedelta(seconds=issued.expiration_s)
    issued_at = issued.expires_at - lifetime
    jitter = datetime.timedelta(seconds=jitter_s)
    if now > issued_at + MAX_TOKEN_AGE - jitter:
        return True
    return now > issued.expires_at - lifetime * (1 - REFRESH_AT_FRACTION) - jitter


def bind_mounts(
    container: Mapping[str, Any],
    volume_dirs: Mapping[str, str],
    empty_dirs: Mapping[str, str] | None = None,
) -> list[BindMount]:
    """Where a container sees the pod's emulated volumes, in the order it lists its mounts.

    `volume_dirs` and `empty_dirs` map the projected and the emptyDir volumes' names to their host
    directories; each kind is mounted only under its own prefixes.
    """
    kinds = ((volume_dirs, MOUNT_PREFIXES), (empty_dirs or {}, EMPTY_DIR_PREFIXES))
    return [
        BindMount(dirs[m["name"]], str(m["mountPath"]), bool(m.get("readOnly", False)))
        for m in container.get("volumeMounts", [])
        for dirs, prefixes in kinds
        if m["name"] in dirs and emulated_path(m, prefixes)
    ]


# Run by `sh -c` inside the new mount namespace: bind each (source, target, ro|rw), then exec.
_MOUNT_SCRIPT = (
    'set -e; while [ "$1" != -- ]; do mount --bind "$1" "$2"; '
    'if [ "$3" = ro ]; then mount -o remount,bind,ro "$2"; fi; shift 3; done; shift; exec "$@"'
)


def in_mount_namespace(mounts: Sequence[BindMount], argv: Sequence[str], unshare: str) -> list[str]:
    """argv run in its own mount namespace (private propagation) with the bind mounts made.

    unshare and sh exec in turn, so the container's process keeps the pid the runner started.
    Without mounts, argv is returned unchanged.
    """
    if not mounts:
        return list(argv)
    triples = [word for m in mounts for word in (m.source, m.target, "ro" if m.read_only else "rw")]
    return [
        unshare, "--mount", "--propagation", "private", "--",
        "/bin/sh", "-c", _MOUNT_SCRIPT, "sh", *triples, "--", *argv,
    ]  # fmt: skip


def _all_containers(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    spec = pod.get("spec", {})
    return [*spec.get("initContainers", []), *spec.get("containers", [])]
