"""Containers that outlive the runner: a restarted runner adopts them, as a restarted kubelet does.

Test infrastructure only. `python -m tests.rig restart-runner` stops the runner with SIGUSR1,
which ends it without touching its pods' processes (each runs in its own session, so they live
on, re-parented). The next runner reads each pod's status: a running container's
`containerID: process://<pid>` whose process is alive and still carries HOSTNAME=<pod name> (so a
reused pid is never taken for it) is adopted instead of started again; its restart count, start
time and readiness are carried over, so the pod stays Ready. An adopted process is not the new
runner's child: when it exits by itself its exit code is lost, and it is reported as a kubelet
reports a container it lost track of (ContainerStatusUnknown, 137). The pod's volume directories
stay where they were (the runner removes only those of pods no longer on the node), so an emptyDir
keeps what a completed init container put in it for the app containers still to start.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXIT_UNKNOWN = 137
"""Exit code reported for an adopted process that ended (a kubelet's ContainerStatusUnknown)."""
PROC = Path("/proc")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class AdoptedProcess:
    """The part of subprocess.Popen the runner uses, for a process it did not start."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not alive(self.pid):
            self.returncode = EXIT_UNKNOWN
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout or 0.0)
            time.sleep(0.05)
        assert self.returncode is not None
        return self.returncode


def pid_of(status: Mapping[str, Any]) -> int | None:
    """The pid in a running container status' containerID (process://<pid>), else None."""
    container_id = str(status.get("containerID") or "")
    if "running" not in (status.get("state") or {}) or not container_id.startswith("process://"):
        return None
    pid = container_id.removeprefix("process://")
    return int(pid) if pid.isdigit() else None


def adoptable(pid: int, pod_name: str) -> bool:
    """The process is alive and is this pod's (the runner gives every container HOSTNAME)."""
    if not alive(pid):
        return False
    try:
        environ = (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"HOSTNAME={pod_name}".encode() in environ


def statuses(pod: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The pod's last published container statuses by container name (init containers too)."""
    status = pod.get("status") or {}
    listed = [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]
    return {str(s["name"]): s for s in listed}


def environment(pid: int) -> dict[str, str]:
    """The process' environment (what exec probes run with)."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {key: value for key, _, value in pairs}


def own_mount_namespace(pid: int) -> bool:
    """The process runs in a mount namespace other than the runner's (it mounts a volume)."""
    try:
        return (PROC / str(pid) / "ns" / "mnt").readlink() != (
            PROC / "self" / "ns" / "mnt"
        ).readlink()
    except OSError:
        return False
