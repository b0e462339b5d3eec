"""What the kubelet says about a pod's containers, read the same way for app and init containers.

Pure: it reads pod objects as the API returns them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STUCK_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)
"""Waiting reasons of a container that will not start without a change by a person."""


def stuck(container_status: Mapping[str, Any]) -> tuple[str, str]:
    """(reason, message) when the container waits for one of STUCK_REASONS, else ("", "")."""
    waiting = (container_status.get("state") or {}).get("waiting") or {}
    reason = waiting.get("reason")
    if reason not in STUCK_REASONS:
        return "", ""
    return str(reason), str(waiting.get("message") or "")
