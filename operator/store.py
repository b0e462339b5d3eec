"""The operator's in-memory view of AgentWorkers and their pods, fed by kopf's watch events.

This module owns the latest copy of every watched AgentWorker, owned Deployment and worker pod
(grouped by the AgentWorker that owns them), so the periodic loop and each sync round's
reconcile read memory instead of sending a GET and a LIST to the API server. It is filled by the
handlers' watch-event callbacks and read by `sync` and `handlers`; it does no I/O and decides
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentworker_operator import builders

Key = tuple[str, str]
"""(namespace, name) of an AgentWorker."""


class Store:
    """Latest AgentWorker and pod objects seen on the watch streams."""

    def __init__(self) -> None:
        self._agentworkers: dict[Key, dict[str, Any]] = {}
        self._pods: dict[Key, dict[str, dict[str, Any]]] = {}
        self._deployments: dict[Key, dict[str, Any]] = {}

    def put_agentworker(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Remember (or, for DELETED, forget) an AgentWorker."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event_type == "DELETED":
            self._agentworkers.pop(key, None)
        else:
            self._agentworkers[key] = dict(body)

    def put_deployment(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """Remember (or, for DELETED, forget) an owned Deployment (named as its AgentWorker)."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        if event_type == "DELETED":
            self._deployments.pop(key, None)
        else:
            self._deployments[key] = dict(body)

    def deployment(self, key: Key) -> dict[str, Any] | None:
        return self._deployments.get(key)

    def put_pod(self, event_type: str | None, body: Mapping[str, Any]) -> Key | None:
        """Remember (or, for DELETED, forget) a worker pod under the AgentWorker it belongs to;
        that AgentWorker's key (None for a pod of none)."""
        meta = body.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(builders.LABEL_INSTANCE)
        if not owner:
            return None
        key = (str(meta.get("namespace") or ""), str(owner))
        name = str(meta.get("name") or "")
        if event_type == "DELETED":
            pods = self._pods.get(key)
            if pods is not None:
                pods.pop(name, None)
                if not pods:
                    del self._pods[key]
        else:
            self._pods.setdefault(key, {})[name] = dict(body)
        return key

    def replace_pods(self, key: Key, pods: list[dict[str, Any]]) -> None:
        """Put a fresh listing of the AgentWorker's pods in place of the watched ones."""
        self._pods[key] = {str((pod.get("metadata") or {}).get("name") or ""): pod for pod in pods}
        if not self._pods[key]:
            del self._pods[key]

    def agentworkers(self) -> list[Key]:
        """Every AgentWorker seen and not deleted, sorted."""
        return sorted(self._agentworkers)

    def agentworker(self, key: Key) -> dict[str, Any] | None:
        return self._agentworkers.get(key)

    def pods(self, key: Key) -> list[dict[str, Any]]:
        """The AgentWorker's worker pods (terminating ones included), by name."""
        return [pod for _, pod in sorted((self._pods.get(key) or {}).items())]
