"""A pod's emulated volumes on the host: projected files (TokenRequests, atomic writes, renewal)
and emptyDir directories.

Test infrastructure only. Each volume gets a directory under the runner's root, in the kubelet's
layout: `<root>/pods/<uid>/volumes/kubernetes.io~projected/<volume>` for a projected volume, whose
files are written as a kubelet's AtomicWriter does (a timestamped directory, a `..data` symlink
swapped by rename, and top-level symlinks into `..data`), so a reader never sees half a renewal;
`<root>/pods/<uid>/volumes/kubernetes.io~empty-dir/<volume>` for an emptyDir (only those
`projected.empty_dir_volumes` picks), made empty before the first container and never wiped
while the pod lives, so init and app containers share it and it outlives a container's restart
and a runner's (the next runner adopts the pod and keeps the directory). Everything goes with the
pod. The containers see a directory at its mountPath through a bind mount in their own mount
namespace (`projected.in_mount_namespace`). Tokens come from the TokenRequest API, bound to the pod.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import random
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubernetes import client

from tests.rig import kubelet_env, projected

log = logging.getLogger("rig.volumes")
RESYNC_S = 60.0
"""Seconds between rewrites of ConfigMap and Secret contents (a kubelet's sync period)."""
MAX_JITTER_S = 10.0
"""Jitter subtracted from a token's renewal time (the kubelet's token manager uses 10 s)."""
DATA_LINK = "..data"


def _timestamped_name() -> str:
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("..%Y_%m_%d_%H_%M_%S.") + f"{time.monotonic_ns() % 10**9:09d}"


def write_atomically(directory: Path, files: list[projected.ProjectedFile]) -> bool:
    """Make `directory` hold exactly `files`; False when it already did (nothing written)."""
    directory.mkdir(parents=True, exist_ok=True)
    current = directory / DATA_LINK
    if current.is_symlink() and _holds(current, files):
        return False
    fresh = directory / _timestamped_name()
    fresh.mkdir(mode=0o755)
    for item in files:
        path = fresh / item.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.data)
        path.chmod(item.mode)
    old = os.readlink(current) if current.is_symlink() else None
    staged = directory / "..data_tmp"
    staged.unlink(missing_ok=True)
    staged.symlink_to(fresh.name)
    staged.rename(current)
    tops = {Path(item.path).parts[0] for item in files}
    for top in tops:
        link = directory / top
        if not link.is_symlink():
            link.symlink_to(f"{DATA_LINK}/{top}")
    for entry in directory.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    if old is not None and old != fresh.name:
        shutil.rmtree(directory / old, ignore_errors=True)
    return True


def _holds(data_link: Path, files: list[projected.ProjectedFile]) -> bool:
    wanted = {item.path: item for item in files}
    root = data_link.resolve()
    present = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    if present != set(wanted):
        return False
    for path, item in wanted.items():
        on_disk = data_link / path
        if on_disk.read_bytes() != item.data or on_disk.stat().st_mode & 0o777 != item.mode:
            return False
    return True


class PodVolumes:
    """The emulated volumes of one pod: set up before its first container, renewed, removed."""

    def __init__(self, core: client.CoreV1Api, pod: dict[str, Any], root: Path) -> None:
        self.core = core
        self.pod = pod
        self.root = root / "pods" / str(pod["metadata"]["uid"])
        self.volumes = projected.projected_volumes(pod)
        self.dirs = {
            name: str(self.root / "volumes" / "kubernetes.io~projected" / name)
            for name in self.volumes
        }
        self.empty_dirs = {
            name: str(self.root / "volumes" / "kubernetes.io~empty-dir" / name)
            for name in projected.empty_dir_volumes(pod)
        }
        self.tokens: dict[projected.TokenKey, projected.IssuedToken] = {}
        self.jitter_s = random.uniform(0, MAX_JITTER_S)
        self.ready = False
        self.synced_at = 0.0

    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def mounts(self, container: Mapping[str, Any]) -> list[projected.BindMount]:
        """The bind mounts of one container (empty when it mounts no emulated volume)."""
        return projected.bind_mounts(container, self.dirs, self.empty_dirs)

    def set_up(self, pod_ip: str, host_ip: str, lookup: kubelet_env.Lookup) -> None:
        """Make every emptyDir and write every projected volume (VolumeError when one cannot be).

        Run again on every renewal and adoption: an emptyDir that exists keeps what is in it.
        """
        for path in self.empty_dirs.values():
            directory = Path(path)
            if not directory.is_dir():
                directory.mkdir(parents=True)
                directory.chmod(0o777)  # a kubelet's emptyDir mode, whatever the umask
        for name, volume in self.volumes.items():
            files = projected.project(volume, self.pod, pod_ip, host_ip, lookup, self._token)
            if write_atomically(Path(self.dirs[name]), files):
                log.info("pod %s: volume %s written", self.key, name)
        self.ready = True
        self.synced_at = time.monotonic()

    def renew(self, pod_ip: str, host_ip: str, lookup: kubelet_env.Lookup) -> None:
        """Renew the tokens that are due, and rewrite every RESYNC_S; errors only log."""
        if not self.ready or not self.volumes:
            return
        now = datetime.datetime.now(datetime.UTC)
        due = any(projected.refresh_due(t, now, self.jitter_s) for t in self.tokens.values())
        if not due and time.monotonic() - self.synced_at < RESYNC_S:
            return
        for key, token in list(self.tokens.items()):
            if projected.refresh_due(token, now, self.jitter_s):
                del self.tokens[key]
        try:
            self.set_up(pod_ip, host_ip, lookup)
        except (projected.VolumeError, client.ApiException) as error:
            log.warning("pod %s: volume renewal failed, retrying: %s", self.key, error)
            self.synced_at = time.monotonic() - RESYNC_S + 5.0

    def remove(self) -> None:
        """The pod is gone: remove its directory (its processes have ended)."""
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(self.root)

    def _token(self, key: projected.TokenKey) -> projected.IssuedToken:
        issued = self.tokens.get(key)
        if issued is None:
            issued = self._request(key)
            self.tokens[key] = issued
        return issued

    def _request(self, key: projected.TokenKey) -> projected.IssuedToken:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        account = spec.get("serviceAccountName") or "default"
        body: Any = {  # a plain dict is accepted where the stubs name a model
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": list(key.audiences),
                "expirationSeconds": key.expiration_s,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            },
        }
        try:
            answer = self.core.create_namespaced_service_account_token(
                account, meta["namespace"], body
            )
        except client.ApiException as error:
            raise projected.VolumeError(
                f"failed to fetch token: serviceaccounts {account!r}: {error.status} {error.reason}"
            ) from error
        log.info("pod %s: token of %s issued for %ss", self.key, account, key.expiration_s)
        status = answer.status
        if status is None or not status.token or status.expiration_timestamp is None:
            raise projected.VolumeError(f"the TokenRequest for {account!r} came back empty")
        return projected.IssuedToken(status.token, status.expiration_timestamp, key.expiration_s)
