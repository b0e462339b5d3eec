"""What the demo installs: the chart's values and the AgentWorker, as plain dicts.

Owns the few changes the demo makes to what ships, each with its reason: the chart watches the
demo's namespace only and leaves the rig's shared CRD alone; the example autoscaled fleet is
pointed at the rig's LiveKit server and runs an agent that holds real calls. Pure: no I/O.
"""

from __future__ import annotations

import copy
from typing import Any

Manifest = dict[str, Any]

NAMESPACE = "agentworker-demo"
"""The demo's own namespace: the operator release, its fleet and their Events live there."""
RELEASE = "agentworker-demo"
"""The chart's release name (and its Lease's): distinct from the tests' `aw-*` releases."""
AGENTWORKER = "calls-agent"


def build_values(namespace: str) -> Manifest:
    """The chart's values for the rig: one operator pod watching `namespace` only."""
    return {
        # The rig's CRD is shared with the tests and the benchmarks, which apply crds/ directly;
        # on a cluster of your own keep the default (true) and the chart installs it.
        "crds": {"enabled": False},
        "replicaCount": 1,  # the rig has two cores; the chart's default is 2 (a standby)
        "watchNamespaces": [namespace],
        "bindAddress": "$(POD_IP)",  # the rig's pods share the host's network namespace
    }


def build_agentworker(
    example: Manifest, *, namespace: str, livekit_url: str, entrypoint: str
) -> Manifest:
    """examples/agentworker-autoscaled.yaml for the demo: the rig's LiveKit server, an agent
    that joins each call's room and holds it as its dispatch says, and the resting size."""
    manifest = copy.deepcopy(example)
    manifest["metadata"] = {**manifest["metadata"], "namespace": namespace}
    spec = manifest["spec"]
    spec["livekit"] = {**spec["livekit"], "url": livekit_url}
    spec["entrypoint"] = entrypoint
    # a new fleet starts at spec.replicas (1 by default), and the warm headroom would scale it
    # up at once: start where it rests, so that the first scale event is the calls' doing
    spec["replicas"] = resting_replicas(manifest)
    return manifest


def resting_replicas(manifest: Manifest) -> int:
    """Workers the fleet keeps without calls: minReplicas, or more for the warm headroom
    (minAvailableWorkers idle workers); the defaults are the CRD's."""
    autoscaling = manifest["spec"].get("autoscaling") or {}
    return max(
        int(autoscaling.get("minReplicas", 1)), int(autoscaling.get("minAvailableWorkers", 1))
    )


def autoscaling_number(manifest: Manifest, key: str, default: float) -> float:
    """A number of the AgentWorker's spec.autoscaling (`default`, the CRD's, when unset)."""
    return float((manifest["spec"].get("autoscaling") or {}).get(key, default))
