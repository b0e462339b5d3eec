"""Golden manifests: the whole Deployment, PDB and Service for the shipped example, a spec
with every pod template field of the first release (`full`), and a `command` fleet with the
companion injected and the later pod, port, rollout and disruption budget fields (`extended`).

Regenerate after an intended change with `UPDATE_GOLDEN=1 pytest tests/unit/operator/test_golden.py`
and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentworker_operator import builders
from agentworker_operator import spec as specs

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

REPO_ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden"
OWNER = builders.Owner(
    name="basic-agent", namespace="default", uid="11111111-2222-3333-4444-555555555555"
)

FULL_SPEC: dict[str, Any] = {
    "agentName": "support",
    "image": "ghcr.io/acme/support:1.4.2",
    "imagePullPolicy": "IfNotPresent",
    "entrypoint": "support.agent:entrypoint",
    "workerType": "PUBLISHER",
    "livekit": {"url": "wss://lk.example.com", "credentialsSecret": {"name": "lk-creds"}},
    "loadThreshold": 0.8,
    "drainTimeout": "45m",
    "numIdleProcesses": 2,
    "shutdownProcessTimeout": "30s",
    "jobMemory": {"warnMB": 700, "limitMB": 1500},
    "permissions": {"canUpdateMetadata": False},
    "logLevel": "DEBUG",
    "replicas": 3,
    "resources": {"requests": {"cpu": "1", "memory": "2Gi"}},
    "env": [{"name": "MODEL", "value": "small"}],
    "podTemplate": {
        "labels": {"team": "support"},
        "annotations": {"prometheus.io/scrape": "true"},
        "nodeSelector": {"pool": "agents"},
        "tolerations": [{"key": "agents", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {}},
        "serviceAccountName": "support-agent",
        "priorityClassName": "calls",
        "imagePullSecrets": [{"name": "ghcr"}],
        "securityContext": {"runAsUser": 1000},
        "containerSecurityContext": {"readOnlyRootFilesystem": False},
    },
}


EXTENDED_SPEC: dict[str, Any] = {
    "image": "ghcr.io/acme/support:2.0.0",
    "command": ["python", "agent.py", "start"],
    "livekit": {"url": "wss://lk.example.com", "credentialsSecret": {"name": "lk-creds"}},
    "replicas": 4,
    "ports": [
        {"name": "debug", "containerPort": 9090},
        {"containerPort": 5353, "protocol": "UDP"},
    ],
    "rollout": {"maxSurge": 2},
    "disruptionBudget": {"minAvailable": "50%"},
    "podTemplate": {
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "ScheduleAnyway"},
            {"maxSkew": 2, "topologyKey": "kubernetes.io/hostname",
             "whenUnsatisfiable": "DoNotSchedule", "matchLabelKeys": ["pod-template-hash"],
             "labelSelector": {"matchLabels": {"app.kubernetes.io/instance": "basic-agent"}}},
        ],
        "initContainers": [
            {"name": "fetch-model", "image": "ghcr.io/acme/fetch:1", "args": ["/models"],
             "volumeMounts": [{"name": "models", "mountPath": "/models"}]},
            {"name": "log-shipper", "image": "ghcr.io/acme/shipper:3", "restartPolicy": "Always",
             "securityContext": {"readOnlyRootFilesystem": False}},
        ],
        "volumes": [{"name": "models", "emptyDir": {}}],
        "runtimeClassName": "gvisor",
        "dnsPolicy": "ClusterFirst",
        "dnsConfig": {"options": [{"name": "ndots", "value": "1"}]},
    },
}  # fmt: skip


def _spec(name: str) -> specs.AgentWorkerSpec:
    if name == "example":
        example = yaml.safe_load((REPO_ROOT / "examples" / "agentworker.yaml").read_text())
        return specs.parse_spec(example["spec"])
    return specs.parse_spec(FULL_SPEC if name == "full" else EXTENDED_SPEC)


def _manifests(name: str) -> list[dict[str, Any]]:
    spec = _spec(name)
    return [
        builders.build_deployment(OWNER, spec, replicas=builders.desired_replicas(spec)),
        builders.build_pod_disruption_budget(OWNER, spec.disruption_budget),
        builders.build_metrics_service(OWNER),
    ]


@pytest.mark.parametrize("name", ["example", "full", "extended"])
def test_manifests_match_golden_file(name: str) -> None:
    rendered = yaml.safe_dump_all(_manifests(name), sort_keys=True)
    path = GOLDEN / f"{name}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(rendered)
    assert path.read_text() == rendered, f"{path} is stale: UPDATE_GOLDEN=1 and review the diff"
