"""Desired objects of an AgentWorker: the Deployment, PodDisruptionBudget and metrics Service.

This module owns what the operator asks Kubernetes for: labels, the pod template (command,
environment contract with the runtime, probes, restricted security defaults, grace period), the
rollout strategy, and the control Secret with the JSON patch that rewrites it only while it is
the AgentWorker's. Every function is pure: it takes the parsed spec and the owner and returns
plain dicts ready for server-side apply (or that patch). It does no I/O and imports no kopf,
kubernetes, aiohttp or prometheus_client; it never reads a Secret's value (credentials go by
secretKeyRef only).
"""

from __future__ import annotations

import base64
import copy
import enum
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from agentworker_operator import companion as companions
from agentworker_operator import podtemplate as podtemplates
from agentworker_operator import spec as specs
from agentworker_operator import version

Manifest: TypeAlias = dict[str, Any]
"""A Kubernetes object as sent to the API server (the wire boundary: loosely typed values)."""

GROUP = "agentworker.dev"
VERSION = "v1alpha1"
KIND = "AgentWorker"
PLURAL = "agentworkers"
FIELD_MANAGER = "agentworker-operator"
APP_NAME = "agent-worker"
CONTAINER_NAME = podtemplates.WORKER_CONTAINER
TMP_VOLUME = "tmp"  # the emptyDir at /tmp (the root filesystem is read-only)
HTTP_PORT = podtemplates.WORKER_PORT
HTTP_PORT_NAME = podtemplates.WORKER_PORT_NAME
CREDENTIALS_KEYS = ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
CONTROL_TOKEN_KEY = "token"
"""Key of the control token in the AgentWorker's control Secret (the victim handshake)."""
CONTROL_TOKEN_HASH_ANNOTATION = "agentworker.dev/control-token-hash"
"""A digest of the control token the pods were started with: a new token (a new control key)
rolls the workers, which read the token from their environment only when they start."""
OPERATOR_ANNOTATION = "agentworker.dev/operator"
"""On an AgentWorker: which operator installation manages it (the namespace/name of its control
key Secret). Two installations would each put their own token in the pod template and roll
the fleet back and forth; the one that did not claim it leaves it alone."""
TEMPLATE_HASH_ANNOTATION = "agentworker.dev/template-hash"
"""Which version of the pod template a pod runs: the rollout status counts old workers by it."""
SPEC_REPLICAS_ANNOTATION = "agentworker.dev/spec-replicas"
"""On the Deployment: the AgentWorker's spec.replicas when the operator applied the
Deployment's replicas. Written in the same apply, so the pair tells an operator that restarts
whether spec.replicas changed since (`sizing.hold`: a fleet the autoscaler does not size keeps
its replicas until then)."""
GRACE_MARGIN_S = 30
"""Seconds added to drainTimeout + shutdownProcessTimeout for the pod's grace period: the
worst shutdown path adds a job offer in flight (up to 8.5 s), the kill wait after the shutdown
hooks (5 s) and time to report each job's end to LiveKit."""

LEASE_HOLDER_LABEL = "agentworker.dev/lease-holder"
"""On an operator pod while it holds a Lease (its installation's, or a shard's): "true". The
chart's webhook Service selects it, so LiveKit's webhooks reach a replica that acts on them."""

METRICS_LABEL = "agentworker.dev/metrics"
"""On worker pods that serve the agentworker_worker_* metrics at :8081/metrics ("true"): the
chart's PodMonitor selects them, and no pod that would fail its scrape."""
DEFAULT_COMPANION_IMAGE = f"ghcr.io/agentworker/agent-operator:{version.__version__}"
"""An image with Python and the companion package: the operator's own release, which holds it.
The chart passes its own operator image (or `companionImage`) as --companion-image."""
COMPANION_RESOURCES: Manifest = {
    "requests": {"cpu": "10m", "memory": "32Mi"},
    "limits": {"memory": "64Mi"},
}
"""The init container copies some 60 kB of Python files; this is ample."""

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
RESERVED_LABELS = frozenset({LABEL_NAME, LABEL_INSTANCE, LABEL_COMPONENT, LABEL_MANAGED_BY})

WORKER_UID = 10001
"""The user of LiveKit's agent starter images (`adduser --uid 10001 appuser`) and of ours: a
numeric runAsUser lets the kubelet verify runAsNonRoot for an image whose USER is a name."""
RESTRICTED_POD_SECURITY: Manifest = {
    "runAsNonRoot": True,
    "runAsUser": WORKER_UID,
    "runAsGroup": WORKER_UID,
    "fsGroup": WORKER_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
RESTRICTED_CONTAINER_SECURITY: Manifest = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Injection:
    """How a pod template gets the worker contract (the companion), and from which image."""

    plan: companions.Plan
    image: str = DEFAULT_COMPANION_IMAGE
    """The image the init container copies the companion from (Plan.INJECT only; with
    Plan.INSTALLED the worker's image has its own)."""


def injection_for(
    spec: specs.AgentWorkerSpec,
    *,
    image: str = DEFAULT_COMPANION_IMAGE,
    fallback: companions.Fallback | None = None,
) -> Injection:
    """The Injection of a spec, given the companion image and any fallback found so far."""
    plan = companions.plan(
        entrypoint=bool(spec.entrypoint),
        mode=spec.companion_mode,
        image=spec.image,
        fallback=fallback,
    )
    return Injection(plan=plan, image=image)


@dataclass(frozen=True, slots=True, kw_only=True)
class Owner:
    """The AgentWorker that owns the built objects."""

    name: str
    namespace: str
    uid: str


def selector_labels(owner: Owner) -> dict[str, str]:
    """Labels that pick this AgentWorker's pods: stable for the Deployment's lifetime."""
    return {LABEL_NAME: APP_NAME, LABEL_INSTANCE: owner.name}


def selector_string(owner: Owner) -> str:
    """The pod selector as a label query, for status.selector (the scale subresource)."""
    return ",".join(f"{k}={v}" for k, v in sorted(selector_labels(owner).items()))


def labels(owner: Owner) -> dict[str, str]:
    """The recommended app.kubernetes.io labels on everything the operator makes."""
    return {
        **selector_labels(owner),
        LABEL_COMPONENT: "worker",
        LABEL_MANAGED_BY: FIELD_MANAGER,
        LABEL_PART_OF: "agentworker",
    }


def owner_reference(owner: Owner) -> Manifest:
    """Controller reference so garbage collection removes children with the AgentWorker."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "name": owner.name,
        "uid": owner.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _metadata(owner: Owner, name: str) -> Manifest:
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner),
        "ownerReferences": [owner_reference(owner)],
    }


def grace_period_s(spec: specs.AgentWorkerSpec) -> int:
    """terminationGracePeriodSeconds: the drain, then job shutdown hooks, then a margin."""
    return int(spec.drain_timeout_s + spec.shutdown_process_timeout_s + 0.999) + GRACE_MARGIN_S


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _permissions_json(perms: specs.Permissions) -> str:
    return json.dumps(
        {
            "can_publish": perms.can_publish,
            "can_subscribe": perms.can_subscribe,
            "can_publish_data": perms.can_publish_data,
            "can_update_metadata": perms.can_update_metadata,
            "hidden": perms.hidden,
        },
        separators=(",", ":"),
    )


def _secret_env(name: str, secret: str, *, key: str = "") -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key or name}}}


class Claim(enum.Enum):
    """Whose an AgentWorker is, by its OPERATOR_ANNOTATION."""

    FREE = "free"
    OURS = "ours"
    THEIRS = "theirs"


def claim(annotations: Mapping[str, Any], operator_id: str) -> Claim:
    """Whether the AgentWorker is this operator's, another's, or nobody's yet."""
    holder = annotations.get(OPERATOR_ANNOTATION)
    if not holder:
        return Claim.FREE
    return Claim.OURS if holder == operator_id else Claim.THEIRS


def control_secret_name(owner: Owner) -> str:
    """The Secret holding the token the operator retires workers with (POST /retire)."""
    return f"{owner.name}-control"


def control_token(key: bytes, owner: Owner) -> str:
    """The token of an AgentWorker's victim handshake, derived from the operator's control key
    and the AgentWorker's identity: the operator can always compute it again, so it never needs
    to read a Secret outside its own namespace (HMAC-SHA256 over namespace, name and uid)."""
    message = f"{owner.namespace}/{owner.name}/{owner.uid}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def build_control_secret(owner: Owner, token: str) -> Manifest:
    """The control Secret, holding the AgentWorker's control token, owned by the AgentWorker."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(owner, control_secret_name(owner)),
        "type": "Opaque",
        "stringData": {CONTROL_TOKEN_KEY: token},
    }


def build_owned_secret_patch(manifest: Mapping[str, Any], owner_uid: str) -> list[Manifest]:
    """A JSON patch (RFC 6902) that writes the Secret `manifest` over the stored one of its name
    only while `owner_uid` owns that one: its first op tests the first owner reference's uid, and
    the API server refuses the whole patch (422) when the test fails. So the operator never
    overwrites a Secret it did not make, nor adopts one (which garbage collection would then
    delete with the AgentWorker). The rest puts the manifest's data (`stringData` folded into
    `data`, base64, as the API server would), labels and annotations, whole."""
    meta = manifest["metadata"]
    data = dict(manifest.get("data") or {})
    for key, value in (manifest.get("stringData") or {}).items():
        data[key] = base64.b64encode(value.encode()).decode()
    ops: list[Manifest] = [
        {"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": owner_uid},
        # "add" sets a member whether or not it is there; "replace" fails on a missing one
        {"op": "add", "path": "/data", "value": data},
    ]
    for field in ("labels", "annotations"):
        if field in meta:
            ops.append({"op": "add", "path": f"/metadata/{field}", "value": dict(meta[field])})
    return ops


def container_env(
    spec: specs.AgentWorkerSpec, owner: Owner, injection: Injection | None = None
) -> list[Manifest]:
    """The runtime's environment contract, then the user's env appended.

    With the companion (injected or installed): AGENTWORKER_COMPANION=1, and when injected, its
    directory first on PYTHONPATH (before the user's own PYTHONPATH from spec.env, when that is
    a plain value).
    """
    injection = injection or injection_for(spec)
    plain = {
        "LIVEKIT_URL": spec.livekit.url,
        "AGENT_NAME": spec.agent_name,
        "AGENT_WORKER_TYPE": spec.worker_type.value,
        "AGENT_LOAD_THRESHOLD": _number(spec.load_threshold),
        "AGENT_DRAIN_TIMEOUT_S": _number(spec.drain_timeout_s),
        "AGENT_NUM_IDLE_PROCESSES": str(spec.num_idle_processes),
        "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S": _number(spec.shutdown_process_timeout_s),
        "AGENT_INITIALIZE_PROCESS_TIMEOUT_S": _number(spec.initialize_process_timeout_s),
        "AGENT_MAX_RETRY": str(spec.max_retry),
        "AGENT_JOB_MEMORY_WARN_MB": str(spec.job_memory.warn_mb),
        "AGENT_JOB_MEMORY_LIMIT_MB": str(spec.job_memory.limit_mb),
        "AGENT_PERMISSIONS": _permissions_json(spec.permissions),
        "AGENT_LOG_LEVEL": spec.log_level.value,
        "AGENT_PORT": str(HTTP_PORT),
        # the runtime's log lines name their AgentWorker and pod, as the operator's do
        "AGENT_AGENTWORKER": f"{owner.namespace}/{owner.name}",
    }
    env: list[Manifest] = [{"name": "LIVEKIT_URL", "value": plain.pop("LIVEKIT_URL")}]
    env += [_secret_env(key, spec.livekit.credentials_secret) for key in CREDENTIALS_KEYS]
    env += [{"name": name, "value": value} for name, value in plain.items()]
    env.append({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    env.append(
        {"name": "AGENT_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    )
    # The load is CPU use over the CPU request: without a limit the cgroup has no quota, and a
    # share of the whole node would never read as full.
    cpu_request = {"containerName": CONTAINER_NAME, "resource": "requests.cpu", "divisor": "1m"}
    env.append(
        {"name": "AGENT_CPU_REQUEST_MILLICORES", "valueFrom": {"resourceFieldRef": cpu_request}}
    )
    env.append(
        _secret_env("AGENT_CONTROL_TOKEN", control_secret_name(owner), key=CONTROL_TOKEN_KEY)
    )
    user_env = [dict(var) for var in spec.env]
    if injection.plan.loads_companion:
        env.append({"name": companions.ENABLE_VARIABLE, "value": "1"})
    if injection.plan is companions.Plan.INJECT:
        theirs = next((var for var in user_env if var.get("name") == "PYTHONPATH"), None)
        if theirs is None or isinstance(theirs.get("value"), str):
            # a PYTHONPATH from valueFrom cannot be joined: the worker then does not load the
            # companion, and the fleet falls back (NotLoaded)
            paths = [companions.MOUNT_PATH, str((theirs or {}).get("value") or "")]
            env.append({"name": "PYTHONPATH", "value": ":".join(p for p in paths if p)})
            user_env = [var for var in user_env if var is not theirs]
    return env + user_env


def container_security(overrides: Mapping[str, Any]) -> Manifest:
    """A container's securityContext: the restricted defaults with `overrides`' keys replacing
    theirs, copied whole (no manifest shares a nested value with another, or with the
    defaults)."""
    return copy.deepcopy({**RESTRICTED_CONTAINER_SECURITY, **overrides})


def _probe(path: str, *, period_s: int, failures: int) -> Manifest:
    return {
        "httpGet": {"path": path, "port": HTTP_PORT_NAME},
        "periodSeconds": period_s,
        "timeoutSeconds": 2,
        "failureThreshold": failures,
    }


def _ports(spec: specs.AgentWorkerSpec) -> list[Manifest]:
    """The worker's own port, then spec.ports (the parser refused any that clash with it)."""
    ports: list[Manifest] = [
        {"name": HTTP_PORT_NAME, "containerPort": HTTP_PORT, "protocol": "TCP"}
    ]
    for port in spec.ports:
        extra: Manifest = {"name": port.name} if port.name else {}
        extra |= {"containerPort": port.container_port, "protocol": port.protocol.value}
        ports.append(extra)
    return ports


def build_container(
    spec: specs.AgentWorkerSpec, owner: Owner, injection: Injection | None = None
) -> Manifest:
    """The one worker container on port 8081 ("http"), with spec.ports after it.

    With `entrypoint`: `agent-worker start <entrypoint>`. With `command` (the official
    livekit-agents worker): that command. Probed at /readyz (registered and not draining) and
    /healthz when the worker serves the contract (this runtime, or the companion); otherwise at
    / (livekit-agents' own health server answers there, on the same port).
    """
    injection = injection or injection_for(spec)
    runtime = not spec.command
    contract = injection.plan.serves_contract
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "command": ["agent-worker"] if runtime else list(spec.command),
        "args": ["start", spec.entrypoint] if runtime else list(spec.args),
        "ports": _ports(spec),
        "env": container_env(spec, owner, injection),
        # Readiness is "registered and not draining": a draining pod leaves the endpoints
        # while it finishes its calls; it must never drop because a worker is merely full.
        "readinessProbe": _probe("/readyz" if contract else "/", period_s=2, failures=2),
        "livenessProbe": _probe("/healthz" if contract else "/", period_s=10, failures=3),
        "securityContext": container_security(spec.pod_template.container_security_context),
        "volumeMounts": [
            {"name": TMP_VOLUME, "mountPath": "/tmp"},
            *(dict(mount) for mount in spec.volume_mounts),
        ],
    }
    if injection.plan is companions.Plan.INJECT:
        container["volumeMounts"].append(
            {"name": companions.VOLUME, "mountPath": companions.MOUNT_PATH, "readOnly": True}
        )
    if not container["args"]:
        del container["args"]
    if spec.working_dir:
        container["workingDir"] = spec.working_dir
    if spec.env_from:
        container["envFrom"] = [dict(source) for source in spec.env_from]
    if spec.startup_probe:
        container["startupProbe"] = dict(spec.startup_probe)
    if spec.image_pull_policy is not None:
        container["imagePullPolicy"] = spec.image_pull_policy
    if spec.resources:
        container["resources"] = dict(spec.resources)
    return container


SAFE_TO_EVICT_LOCAL_VOLUMES = "cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes"


def build_companion_init_container(spec: specs.AgentWorkerSpec, image: str) -> Manifest:
    """Copies the companion into the emptyDir the worker loads it from (Plan.INJECT), under the
    worker container's security context (a fleet that runs as root runs this as root too)."""
    security = container_security(spec.pod_template.container_security_context)
    return {
        "name": companions.INIT_CONTAINER,
        "image": image,
        "command": ["python", "-m", "agentworker_companion", "install", companions.MOUNT_PATH],
        "securityContext": security,
        "resources": {key: dict(value) for key, value in COMPANION_RESOURCES.items()},
        "volumeMounts": [{"name": companions.VOLUME, "mountPath": companions.MOUNT_PATH}],
    }


def build_init_containers(spec: specs.AgentWorkerSpec, injection: Injection) -> list[Manifest]:
    """The pod's init containers: the companion's copy first (Plan.INJECT), then the user's in
    their order, each under the restricted container defaults with its own keys winning.

    The copy needs no network and none of the user's volumes and takes a second, so it goes
    first: a sidecar of the user's (restartPolicy Always) then starts after it, and whatever the
    order, Kubernetes starts the worker only once every init container has completed and every
    sidecar has started. Sidecars stop after the worker has exited, in reverse order.
    """
    containers = []
    if injection.plan is companions.Plan.INJECT:
        containers.append(build_companion_init_container(spec, injection.image))
    for theirs in spec.pod_template.init_containers:
        container: Manifest = dict(theirs)
        own = theirs.get("securityContext")
        container["securityContext"] = container_security(own if isinstance(own, Mapping) else {})
        containers.append(container)
    return containers


def spread_constraints(owner: Owner, spec: specs.AgentWorkerSpec) -> list[Manifest]:
    """spec.podTemplate.topologySpreadConstraints; one without a labelSelector spreads this
    fleet's pods (its selector: every revision's, so a rollout's old and new pods count alike).
    Without a selector Kubernetes would count no pod and spread nothing."""
    constraints = []
    for theirs in spec.pod_template.topology_spread_constraints:
        constraint: Manifest = dict(theirs)
        if constraint.get("labelSelector") is None:
            constraint["labelSelector"] = {"matchLabels": selector_labels(owner)}
        constraints.append(constraint)
    return constraints


def build_pod_template(
    owner: Owner,
    spec: specs.AgentWorkerSpec,
    *,
    control_token: str = "",
    injection: Injection | None = None,
) -> Manifest:
    """The pod: user overlay first, the operator's labels and restricted defaults win or merge."""
    injection = injection or injection_for(spec)
    overlay = spec.pod_template
    pod_spec: Manifest = {
        "containers": [build_container(spec, owner, injection)],
        "terminationGracePeriodSeconds": grace_period_s(spec),
        "securityContext": {**RESTRICTED_POD_SECURITY, **overlay.security_context},
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {}}, *(dict(v) for v in overlay.volumes)],
        "enableServiceLinks": False,
    }
    if overlay.service_account_name is None:
        pod_spec["automountServiceAccountToken"] = False
    else:
        pod_spec["serviceAccountName"] = overlay.service_account_name
    optional: Mapping[str, object] = {
        "initContainers": build_init_containers(spec, injection),
        "nodeSelector": dict(overlay.node_selector),
        "tolerations": list(overlay.tolerations),
        "affinity": overlay.affinity,
        "topologySpreadConstraints": spread_constraints(owner, spec),
        "imagePullSecrets": [{"name": name} for name in overlay.image_pull_secrets],
        "priorityClassName": overlay.priority_class_name,
        "runtimeClassName": overlay.runtime_class_name,
        "dnsPolicy": overlay.dns_policy and overlay.dns_policy.value,
        "dnsConfig": overlay.dns_config,
    }
    pod_spec.update({key: value for key, value in optional.items() if value})
    local_volumes = [TMP_VOLUME]
    if injection.plan is companions.Plan.INJECT:
        pod_spec["volumes"].append({"name": companions.VOLUME, "emptyDir": {"sizeLimit": "16Mi"}})
        local_volumes.append(companions.VOLUME)
    metadata: Manifest = {"labels": {**overlay.labels, **labels(owner)}}
    if injection.plan is not companions.Plan.RUNTIME:  # this runtime's pods keep their labels
        serves = "true" if injection.plan.serves_contract else "false"
        metadata["labels"][METRICS_LABEL] = serves
    metadata["annotations"] = dict(overlay.annotations)
    # The Cluster Autoscaler keeps a node whose pods have an emptyDir unless they say it may go:
    # an idle worker's /tmp and the companion's copy hold nothing (a busy worker carries
    # safe-to-evict "false")
    listed = metadata["annotations"].get(SAFE_TO_EVICT_LOCAL_VOLUMES, "")
    local = [name.strip() for name in listed.split(",") if name.strip()]
    local += [name for name in local_volumes if name not in local]
    metadata["annotations"][SAFE_TO_EVICT_LOCAL_VOLUMES] = ",".join(local)
    if control_token:
        digest = hashlib.sha256(control_token.encode()).hexdigest()[:16]
        metadata["annotations"][CONTROL_TOKEN_HASH_ANNOTATION] = digest
    template = {"metadata": metadata, "spec": pod_spec}
    metadata["annotations"][TEMPLATE_HASH_ANNOTATION] = _hash(template)
    return template


def _hash(template: Manifest) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:16]


def template_hash(
    owner: Owner,
    spec: specs.AgentWorkerSpec,
    *,
    control_token: str = "",
    injection: Injection | None = None,
) -> str:
    """The version of the pod template the spec gives (TEMPLATE_HASH_ANNOTATION)."""
    template = build_pod_template(owner, spec, control_token=control_token, injection=injection)
    return str(template["metadata"]["annotations"][TEMPLATE_HASH_ANNOTATION])


def build_deployment(
    owner: Owner,
    spec: specs.AgentWorkerSpec,
    *,
    replicas: int,
    control_token: str = "",
    injection: Injection | None = None,
) -> Manifest:
    """The Deployment: `replicas` pods, rolled with maxUnavailable 0 and spec.rollout's surge
    so old pods drain last; it records the spec.replicas they were applied with
    (SPEC_REPLICAS_ANNOTATION)."""
    metadata = _metadata(owner, owner.name)
    metadata["annotations"] = {SPEC_REPLICAS_ANNOTATION: str(spec.replicas)}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector_labels(owner)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": spec.rollout.max_surge},
            },
            "template": build_pod_template(
                owner, spec, control_token=control_token, injection=injection
            ),
        },
    }


DEFAULT_DISRUPTION_BUDGET = specs.DisruptionBudget()


def build_pod_disruption_budget(
    owner: Owner, budget: specs.DisruptionBudget = DEFAULT_DISRUPTION_BUDGET
) -> Manifest:
    """The PodDisruptionBudget of an enabled spec.disruptionBudget (by default at most one
    worker evicted at a time); evicted workers still drain through the grace period. A
    disabled budget has none: the caller applies this only when `budget.enabled` (and deletes
    the one it made before), and a disabled budget here is a ValueError."""
    if not budget.enabled:
        raise ValueError("spec.disruptionBudget.enabled is false: there is no budget to build")
    limit = (
        {"maxUnavailable": budget.max_unavailable}
        if budget.min_available is None
        else {"minAvailable": budget.min_available}
    )
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(owner, owner.name),
        "spec": {**limit, "selector": {"matchLabels": selector_labels(owner)}},
    }


def metrics_service_name(owner: Owner) -> str:
    """Name of the headless Service that lists every worker pod for metrics scraping."""
    return f"{owner.name}-metrics"


def build_metrics_service(owner: Owner) -> Manifest:
    """Headless Service over all pods, draining ones included, for /metrics and /worker."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(owner, metrics_service_name(owner)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(owner),
            "ports": [
                {
                    "name": HTTP_PORT_NAME,
                    "port": HTTP_PORT,
                    "targetPort": HTTP_PORT_NAME,
                    "protocol": "TCP",
                }
            ],
        },
    }


def current_replicas(
    spec: specs.AgentWorkerSpec,
    *,
    deployment: Mapping[str, Any] | None,
    status: Mapping[str, Any] | None,
) -> int:
    """The replicas an autoscaled fleet runs now, as the cluster says, for an operator that has
    decided nothing yet (a restart, a new leader): the Deployment's spec.replicas, which the
    operator wrote last; the status's desiredReplicas only when there is no Deployment (it can
    lag: applying it would undo a scale that was under way); then `desired_replicas`' rules."""
    replicas = ((deployment or {}).get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        replicas = (status or {}).get("desiredReplicas") if deployment is None else None
    return desired_replicas(spec, recommended=replicas if isinstance(replicas, int) else None)


def desired_replicas(spec: specs.AgentWorkerSpec, *, recommended: int | None = None) -> int:
    """Replicas for the Deployment: spec.replicas, or the autoscaler's value.

    With autoscaling, a new fleet starts at spec.replicas within [min, max]; after that the
    autoscaler's value is raised to minReplicas at once but never lowered here, not even below a
    lowered maxReplicas: every scale-down goes through the autoscaler, which retires idle
    workers first and honours scaleDown's window, steps and busyWorkers.
    """
    low, high = spec.autoscaling.min_replicas, spec.autoscaling.max_replicas
    if not spec.autoscaling.enabled:
        return spec.replicas
    if recommended is None:
        return max(low, min(high, spec.replicas))
    return max(low, recommended)
