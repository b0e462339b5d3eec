"""Builders: each spec field lands where the runtime and Kubernetes expect it."""

from __future__ import annotations

import base64
import json
from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from agentworker_operator import builders
from agentworker_operator import spec as specs
from tests.unit.operator.test_spec import JSONS, MINIMAL, SIDECAR, SPREAD, with_

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

OWNER = builders.Owner(name="support", namespace="team-a", uid="0000-1111")


def deployment(raw: dict[str, Any] | None = None, *, replicas: int = 2) -> dict[str, Any]:
    return builders.build_deployment(OWNER, specs.parse_spec(raw or MINIMAL), replicas=replicas)


def pod_spec(raw: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = deployment(raw)["spec"]["template"]["spec"]
    return spec


def container(raw: dict[str, Any] | None = None) -> dict[str, Any]:
    first: dict[str, Any] = pod_spec(raw)["containers"][0]
    return first


def env(raw: dict[str, Any] | None = None) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in container(raw)["env"]}


def test_container_runs_agent_worker_start_with_the_entrypoint() -> None:
    c = container()
    assert c["command"] == ["agent-worker"]
    assert c["args"] == ["start", "my_agent.main:entrypoint"]
    assert c["image"] == "ghcr.io/acme/agent:1"
    assert c["ports"] == [{"name": "http", "containerPort": 8081, "protocol": "TCP"}]


def test_image_pull_policy_is_set_only_when_given() -> None:
    assert "imagePullPolicy" not in container()
    assert container(with_("imagePullPolicy", "Always"))["imagePullPolicy"] == "Always"


def test_credentials_come_from_the_secret_by_reference_only() -> None:
    values = env()
    for key in ("LIVEKIT_API_KEY", "LIVEKIT_API_SECRET"):
        assert values[key] == {"secretKeyRef": {"name": "lk", "key": key}}


@pytest.mark.parametrize(
    ("path", "value", "var", "expected"),
    [
        ("livekit.url", "wss://lk.example.com", "LIVEKIT_URL", "wss://lk.example.com"),
        ("agentName", "support", "AGENT_NAME", "support"),
        ("workerType", "PUBLISHER", "AGENT_WORKER_TYPE", "PUBLISHER"),
        ("loadThreshold", 0.85, "AGENT_LOAD_THRESHOLD", "0.85"),
        ("loadThreshold", 1, "AGENT_LOAD_THRESHOLD", "1"),
        ("drainTimeout", "1h30m", "AGENT_DRAIN_TIMEOUT_S", "5400"),
        ("drainTimeout", "1500ms", "AGENT_DRAIN_TIMEOUT_S", "1.5"),
        ("numIdleProcesses", 0, "AGENT_NUM_IDLE_PROCESSES", "0"),
        ("shutdownProcessTimeout", "2m", "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S", "120"),
        ("initializeProcessTimeout", "45s", "AGENT_INITIALIZE_PROCESS_TIMEOUT_S", "45"),
        ("maxRetry", 40, "AGENT_MAX_RETRY", "40"),
        ("jobMemory.warnMB", 300, "AGENT_JOB_MEMORY_WARN_MB", "300"),
        ("jobMemory.limitMB", 900, "AGENT_JOB_MEMORY_LIMIT_MB", "900"),
        ("logLevel", "DEBUG", "AGENT_LOG_LEVEL", "DEBUG"),
    ],
    ids=lambda v: v if isinstance(v, str) and v.isupper() else None,
)
def test_spec_field_becomes_runtime_env(path: str, value: object, var: str, expected: str) -> None:
    assert env(with_(path, value))[var] == expected


def test_port_and_pod_ip_are_in_the_env() -> None:
    values = env()
    assert values["AGENT_PORT"] == "8081"
    assert values["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}


def test_permissions_are_json_with_snake_case_keys() -> None:
    raw = with_("permissions", {"canPublish": False, "hidden": True})
    assert json.loads(env(raw)["AGENT_PERMISSIONS"]) == {
        "can_publish": False,
        "can_subscribe": True,
        "can_publish_data": True,
        "can_update_metadata": True,
        "hidden": True,
    }


def test_user_env_is_appended_after_the_operators() -> None:
    user = [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"configMapKeyRef": {}}}]
    names = [var["name"] for var in container(with_("env", user))["env"]]
    assert names[-2:] == ["A", "B"]
    assert names.index("POD_IP") < names.index("A")


def test_grace_period_is_drain_plus_shutdown_plus_margin() -> None:
    raw = with_("drainTimeout", "10m")
    raw["shutdownProcessTimeout"] = "30s"
    assert pod_spec(raw)["terminationGracePeriodSeconds"] == 600 + 30 + 30


def test_probes_hit_readyz_and_healthz_on_the_http_port() -> None:
    c = container()
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_resources_are_passed_through() -> None:
    resources = {"requests": {"cpu": "500m"}, "limits": {"memory": "1Gi"}}
    assert container(with_("resources", resources))["resources"] == resources
    assert "resources" not in container()


def test_restricted_security_profile_by_default() -> None:
    assert pod_spec()["securityContext"] == builders.RESTRICTED_POD_SECURITY
    assert container()["securityContext"] == builders.RESTRICTED_CONTAINER_SECURITY
    assert container()["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]


def test_pod_template_security_context_overrides_the_defaults() -> None:
    raw = with_("podTemplate.securityContext", {"runAsNonRoot": False, "runAsUser": 0})
    raw["podTemplate"]["containerSecurityContext"] = {"readOnlyRootFilesystem": False}
    pod = pod_spec(raw)
    assert pod["securityContext"]["runAsNonRoot"] is False
    assert pod["securityContext"]["runAsUser"] == 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is False
    assert pod["containers"][0]["securityContext"]["capabilities"] == {"drop": ["ALL"]}


@pytest.mark.parametrize(
    ("field", "value", "key", "expected"),
    [
        ("nodeSelector", {"pool": "gpu"}, "nodeSelector", {"pool": "gpu"}),
        ("tolerations", [{"key": "gpu", "operator": "Exists"}], "tolerations", None),
        ("affinity", {"nodeAffinity": {}}, "affinity", None),
        ("priorityClassName", "calls", "priorityClassName", "calls"),
        ("imagePullSecrets", [{"name": "ghcr"}], "imagePullSecrets", [{"name": "ghcr"}]),
        ("serviceAccountName", "agent", "serviceAccountName", "agent"),
        ("runtimeClassName", "gvisor", "runtimeClassName", "gvisor"),
        ("dnsPolicy", "Default", "dnsPolicy", "Default"),
        ("dnsConfig", {"options": [{"name": "ndots", "value": "1"}]}, "dnsConfig", None),
    ],
    ids=lambda v: v if isinstance(v, str) and v[0].islower() and " " not in v else None,
)
def test_pod_template_field_lands_on_the_pod(
    field: str, value: object, key: str, expected: object
) -> None:
    assert pod_spec(with_(f"podTemplate.{field}", value))[key] == (expected or value)


def test_no_api_token_unless_a_service_account_is_named() -> None:
    assert pod_spec()["automountServiceAccountToken"] is False
    named = pod_spec(with_("podTemplate.serviceAccountName", "agent"))
    assert "automountServiceAccountToken" not in named


def test_pod_labels_and_annotations_merge_with_the_operators_labels_winning() -> None:
    raw = with_("podTemplate.labels", {"team": "a", builders.LABEL_INSTANCE: "hijack"})
    raw["podTemplate"]["annotations"] = {"note": "x"}
    metadata = deployment(raw)["spec"]["template"]["metadata"]
    assert metadata["labels"]["team"] == "a"
    assert metadata["labels"][builders.LABEL_INSTANCE] == "support"
    assert metadata["annotations"]["note"] == "x"
    assert set(metadata["annotations"]) == {
        "note",
        builders.TEMPLATE_HASH_ANNOTATION,
        builders.SAFE_TO_EVICT_LOCAL_VOLUMES,
    }


@pytest.mark.parametrize(
    ("listed", "expected"),
    [(None, "tmp"), ("cache", "cache,tmp"), ("tmp, cache", "tmp,cache")],
)
def test_the_cluster_autoscaler_may_evict_an_idle_worker_despite_its_tmp(
    listed: str | None, expected: str
) -> None:
    raw = with_("podTemplate.annotations", {} if listed is None else {
        builders.SAFE_TO_EVICT_LOCAL_VOLUMES: listed
    })  # fmt: skip
    annotations = deployment(raw)["spec"]["template"]["metadata"]["annotations"]
    assert annotations[builders.SAFE_TO_EVICT_LOCAL_VOLUMES] == expected


@pytest.mark.parametrize("key", sorted(specs.PROTECTION_ANNOTATIONS))
def test_a_template_may_not_switch_off_the_protection_of_busy_workers(key: str) -> None:
    raw = with_("podTemplate.annotations", {key: "true"})
    with pytest.raises(specs.InvalidSpecError, match="set by the operator on busy workers"):
        deployment(raw)


def test_recommended_labels_are_on_every_object() -> None:
    built = [
        deployment(),
        builders.build_pod_disruption_budget(OWNER),
        builders.build_metrics_service(OWNER),
    ]
    for manifest in built:
        assert manifest["metadata"]["labels"] == {
            "app.kubernetes.io/name": "agent-worker",
            "app.kubernetes.io/instance": "support",
            "app.kubernetes.io/component": "worker",
            "app.kubernetes.io/managed-by": "agentworker-operator",
            "app.kubernetes.io/part-of": "agentworker",
        }
        assert manifest["metadata"]["namespace"] == "team-a"
        assert manifest["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "agentworker.dev/v1alpha1",
                "kind": "AgentWorker",
                "name": "support",
                "uid": "0000-1111",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_rolling_update_never_removes_a_worker_before_its_replacement() -> None:
    strategy = deployment()["spec"]["strategy"]
    assert strategy == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},
    }


@pytest.mark.parametrize("surge", [2, "50%"], ids=repr)
def test_the_rollout_surge_is_the_specs_and_max_unavailable_stays_zero(surge: int | str) -> None:
    rolling = deployment(with_("rollout.maxSurge", surge))["spec"]["strategy"]["rollingUpdate"]
    assert rolling == {"maxUnavailable": 0, "maxSurge": surge}


def test_a_new_surge_or_budget_rolls_no_worker() -> None:
    # neither is in the pod template: a change must not give the pods a new template hash
    changed = with_("rollout.maxSurge", 3)
    changed["disruptionBudget"] = {"minAvailable": "50%"}
    assert builders.template_hash(OWNER, specs.parse_spec(changed)) == builders.template_hash(
        OWNER, specs.parse_spec(MINIMAL)
    )


def test_explicit_defaults_build_the_same_objects_as_none() -> None:
    explicit = with_("rollout", {"maxSurge": "25%"})
    explicit["disruptionBudget"] = {"enabled": True, "maxUnavailable": 1}
    explicit["ports"] = []
    explicit["podTemplate"] = {"initContainers": [], "topologySpreadConstraints": []}
    spec = specs.parse_spec(explicit)
    assert deployment(explicit) == deployment()
    assert builders.build_pod_disruption_budget(
        OWNER, spec.disruption_budget
    ) == builders.build_pod_disruption_budget(OWNER)


def test_selector_is_name_and_instance_only() -> None:
    assert deployment()["spec"]["selector"] == {
        "matchLabels": {
            "app.kubernetes.io/name": "agent-worker",
            "app.kubernetes.io/instance": "support",
        }
    }
    assert builders.selector_string(OWNER) == (
        "app.kubernetes.io/instance=support,app.kubernetes.io/name=agent-worker"
    )


def test_replicas_argument_sets_the_deployment_replicas() -> None:
    assert deployment(replicas=7)["spec"]["replicas"] == 7


@pytest.mark.parametrize(
    ("autoscaling", "replicas", "recommended", "expected"),
    [
        ({"enabled": False}, 3, 9, 3),
        ({"enabled": True, "minReplicas": 2, "maxReplicas": 5}, 3, None, 3),
        ({"enabled": True, "minReplicas": 2, "maxReplicas": 5}, 9, None, 5),
        ({"enabled": True, "minReplicas": 2, "maxReplicas": 5}, 0, None, 2),
        ({"enabled": True, "minReplicas": 2, "maxReplicas": 5}, 3, 9, 9),
        ({"enabled": True, "minReplicas": 2, "maxReplicas": 5}, 3, 1, 2),
    ],
    ids=[
        "disabled-uses-spec",
        "new-fleet-starts-at-spec",
        "new-fleet-within-max",
        "new-fleet-within-min",
        "never-lowered-here-only-by-the-autoscaler",
        "raised-to-min-at-once",
    ],
)
def test_desired_replicas(
    autoscaling: dict[str, Any], replicas: int, recommended: int | None, expected: int
) -> None:
    raw = with_("autoscaling", autoscaling)
    raw["replicas"] = replicas
    assert builders.desired_replicas(specs.parse_spec(raw), recommended=recommended) == expected


def test_pdb_allows_one_eviction_at_a_time() -> None:
    pdb = builders.build_pod_disruption_budget(OWNER)
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == deployment()["spec"]["selector"]


@pytest.mark.parametrize(
    ("budget", "limit"),
    [
        pytest.param({"maxUnavailable": "10%"}, {"maxUnavailable": "10%"}, id="max-unavailable"),
        pytest.param({"minAvailable": 2}, {"minAvailable": 2}, id="min-available-alone"),
    ],
)
def test_the_pdb_limit_is_the_specs(budget: dict[str, Any], limit: dict[str, Any]) -> None:
    spec = specs.parse_spec(with_("disruptionBudget", budget))
    pdb = builders.build_pod_disruption_budget(OWNER, spec.disruption_budget)
    assert pdb["spec"] == {**limit, "selector": deployment()["spec"]["selector"]}


def test_a_disabled_budget_has_no_pdb_to_build() -> None:
    spec = specs.parse_spec(with_("disruptionBudget.enabled", False))
    with pytest.raises(ValueError, match="enabled is false"):
        builders.build_pod_disruption_budget(OWNER, spec.disruption_budget)


def test_metrics_service_is_headless_and_includes_draining_pods() -> None:
    service = builders.build_metrics_service(OWNER)
    assert service["metadata"]["name"] == "support-metrics"
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["ports"][0]["targetPort"] == "http"


OFFICIAL = {
    **{k: v for k, v in MINIMAL.items() if k != "entrypoint"},
    "command": ["python", "agent.py"],
    "args": ["start"],
}


@pytest.mark.parametrize(
    ("companion", "readiness", "liveness"),
    [(None, "/readyz", "/healthz"), ({"mode": "Disabled"}, "/", "/")],
    ids=["the-companion-by-default", "companion-off-livekit-agents-own"],
)
def test_a_command_runs_as_given_and_is_probed_where_its_worker_answers(
    companion: dict[str, str] | None, readiness: str, liveness: str
) -> None:
    raw = OFFICIAL if companion is None else {**OFFICIAL, "companion": companion}
    c = container(raw)
    assert (c["command"], c["args"]) == (["python", "agent.py"], ["start"])
    assert c["readinessProbe"]["httpGet"]["path"] == readiness
    assert c["livenessProbe"]["httpGet"]["path"] == liveness
    assert c["ports"][0]["containerPort"] == 8081


def test_a_working_directory_is_set_only_when_given() -> None:
    assert "workingDir" not in container()
    assert container({**OFFICIAL, "workingDir": "/app"})["workingDir"] == "/app"


def test_a_command_without_args_has_no_args() -> None:
    assert "args" not in container({**OFFICIAL, "args": []})


def test_this_runtime_is_probed_on_readyz_and_healthz() -> None:
    c = container()
    assert (c["readinessProbe"]["httpGet"]["path"], c["livenessProbe"]["httpGet"]["path"]) == (
        "/readyz",
        "/healthz",
    )


def test_volumes_mounts_env_sources_and_a_startup_probe_pass_through() -> None:
    raw = {
        **MINIMAL,
        "envFrom": [{"secretRef": {"name": "openai"}}],
        "volumeMounts": [{"name": "models", "mountPath": "/models", "readOnly": True}],
        "startupProbe": {"httpGet": {"path": "/", "port": "http"}, "failureThreshold": 60},
        "podTemplate": {
            "volumes": [{"name": "models", "persistentVolumeClaim": {"claimName": "m"}}]
        },
    }
    c = container(raw)
    assert c["envFrom"] == [{"secretRef": {"name": "openai"}}]
    assert c["volumeMounts"][1] == {"name": "models", "mountPath": "/models", "readOnly": True}
    assert c["startupProbe"]["failureThreshold"] == 60
    volumes = pod_spec(raw)["volumes"]
    assert [v["name"] for v in volumes] == ["tmp", "models"]


def test_pods_run_as_a_numeric_non_root_user_so_named_users_in_images_start() -> None:
    security = pod_spec()["securityContext"]
    assert security["runAsNonRoot"] is True
    assert (security["runAsUser"], security["runAsGroup"], security["fsGroup"]) == (
        10001,
        10001,
        10001,
    )


def test_control_token_is_the_same_for_the_same_key_and_agentworker_and_differs_otherwise() -> None:
    key = b"k" * 32
    token = builders.control_token(key, OWNER)
    assert token == builders.control_token(key, OWNER)
    assert len(token) >= 40  # 256 bits, base64 without padding
    recreated = builders.Owner(name=OWNER.name, namespace=OWNER.namespace, uid="2222")
    assert builders.control_token(key, recreated) != token, "a new AgentWorker, a new token"
    assert builders.control_token(b"j" * 32, OWNER) != token, "a new key, new tokens"
    secret = builders.build_control_secret(OWNER, token)
    assert secret["stringData"] == {builders.CONTROL_TOKEN_KEY: token}


class PatchTestFailed(Exception):
    """What the API server answers with 422: a `test` op of a JSON patch failed."""


def json_patch(document: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """RFC 6902's `test` and `add` as the API server applies them, on a copy, all or nothing."""
    patched: dict[str, Any] = json.loads(json.dumps(document))
    for op in ops:
        *parents, last = op["path"].split("/")[1:]
        target: Any = patched
        try:
            for part in parents:
                target = target[int(part)] if isinstance(target, list) else target[part]
            if op["op"] == "test":
                found = target[int(last)] if isinstance(target, list) else target[last]
                if found != op["value"]:
                    raise PatchTestFailed(op["path"])
            else:
                assert op["op"] == "add", op
                target[last] = op["value"]
        except (KeyError, IndexError, TypeError) as missing:
            raise PatchTestFailed(op["path"]) from missing
    return patched


def stored_control_secret(owner: builders.Owner, token: str) -> dict[str, Any]:
    """The control Secret as the API server keeps it: stringData folded into data."""
    stored = builders.build_control_secret(owner, token)
    string_data = stored.pop("stringData")
    stored["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in string_data.items()}
    stored["metadata"] |= {"uid": "secret-uid", "resourceVersion": "7"}
    return stored


def test_the_control_secret_patch_puts_the_new_token_over_the_agentworkers_own_secret() -> None:
    stored = stored_control_secret(OWNER, "old-token")
    stored["data"]["stray"] = "eA=="
    stored["metadata"]["labels"] = {"stray": "label"}
    manifest = builders.build_control_secret(OWNER, "new-token")
    patched = json_patch(stored, builders.build_owned_secret_patch(manifest, OWNER.uid))
    assert patched["data"] == {builders.CONTROL_TOKEN_KEY: base64.b64encode(b"new-token").decode()}
    assert patched["metadata"]["labels"] == builders.labels(OWNER)
    assert patched["metadata"]["ownerReferences"] == [builders.owner_reference(OWNER)]
    assert patched["metadata"]["uid"] == "secret-uid", "the same Secret, written over"


def test_the_control_secret_patch_is_refused_for_a_users_secret_of_that_name() -> None:
    users = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": builders.control_secret_name(OWNER), "namespace": OWNER.namespace},
        "data": {"password": "aHVudGVyMg=="},
    }
    manifest = builders.build_control_secret(OWNER, "token")
    with pytest.raises(PatchTestFailed, match="ownerReferences"):
        json_patch(users, builders.build_owned_secret_patch(manifest, OWNER.uid))


def test_the_control_secret_patch_is_refused_for_another_owners_secret_of_that_name() -> None:
    other = builders.Owner(name="billing-deployer", namespace=OWNER.namespace, uid="9999")
    stored = stored_control_secret(other, "theirs")
    stored["metadata"]["name"] = builders.control_secret_name(OWNER)
    manifest = builders.build_control_secret(OWNER, "token")
    with pytest.raises(PatchTestFailed, match="ownerReferences"):
        json_patch(stored, builders.build_owned_secret_patch(manifest, OWNER.uid))


def test_the_patch_tests_the_owner_first_and_writes_annotations_only_when_given() -> None:
    manifest = builders.build_control_secret(OWNER, "token")
    ops = builders.build_owned_secret_patch(manifest, OWNER.uid)
    assert ops[0] == {"op": "test", "path": "/metadata/ownerReferences/0/uid", "value": OWNER.uid}
    assert [op["path"] for op in ops[1:]] == ["/data", "/metadata/labels"]
    manifest["metadata"]["annotations"] = {"note": "x"}
    ops = builders.build_owned_secret_patch(manifest, OWNER.uid)
    assert ops[-1] == {"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}}


SCALED = {"enabled": True, "minReplicas": 2, "maxReplicas": 8}


@pytest.mark.parametrize(
    ("deployment", "status", "expected"),
    [
        pytest.param({"spec": {"replicas": 5}}, {"desiredReplicas": 3}, 5, id="deployment-wins"),
        pytest.param({"spec": {"replicas": 1}}, {"desiredReplicas": 3}, 2, id="raised-to-min"),
        pytest.param({"spec": {}}, {"desiredReplicas": 6}, 4, id="deployment-without-replicas"),
        pytest.param(None, {"desiredReplicas": 6}, 6, id="no-deployment-status-then"),
        pytest.param(None, {}, 4, id="new-fleet-starts-at-spec"),
    ],
)
def test_current_replicas_is_read_from_the_deployment_before_the_status(
    deployment: dict[str, Any] | None, status: dict[str, Any], expected: int
) -> None:
    # a status can lag the Deployment (a restart between the two writes): applying it would
    # undo a scale that was under way
    raw = with_("autoscaling", SCALED)
    raw["replicas"] = 4
    spec = specs.parse_spec(raw)
    assert builders.current_replicas(spec, deployment=deployment, status=status) == expected


def test_extra_ports_follow_the_workers_own() -> None:
    raw = with_(
        "ports",
        [{"containerPort": 9090, "name": "debug"}, {"containerPort": 5353, "protocol": "UDP"}],
    )
    assert container(raw)["ports"] == [
        {"name": "http", "containerPort": 8081, "protocol": "TCP"},
        {"name": "debug", "containerPort": 9090, "protocol": "TCP"},
        {"containerPort": 5353, "protocol": "UDP"},
    ]  # fmt: skip


def test_a_spread_constraint_without_a_selector_spreads_this_fleet() -> None:
    constraints = pod_spec(with_("podTemplate.topologySpreadConstraints", [SPREAD]))[
        "topologySpreadConstraints"
    ]
    assert constraints == [{**SPREAD, "labelSelector": deployment()["spec"]["selector"]}]


@pytest.mark.parametrize(
    "selector",
    [{}, {"matchLabels": {"team": "a"}}],
    ids=["empty-means-every-pod", "their-own"],
)
def test_a_spread_constraints_own_selector_is_kept(selector: dict[str, Any]) -> None:
    constraint = {**SPREAD, "labelSelector": selector, "matchLabelKeys": ["pod-template-hash"]}
    built = pod_spec(with_("podTemplate.topologySpreadConstraints", [constraint]))
    assert built["topologySpreadConstraints"] == [constraint]


def test_init_containers_run_in_their_order_under_the_restricted_defaults() -> None:
    migrate = {"name": "migrate", "image": "ghcr.io/acme/migrate:1", "args": ["up"]}
    built = pod_spec(with_("podTemplate.initContainers", [migrate, SIDECAR]))["initContainers"]
    assert built == [
        {**migrate, "securityContext": builders.RESTRICTED_CONTAINER_SECURITY},
        {**SIDECAR, "securityContext": builders.RESTRICTED_CONTAINER_SECURITY},
    ]


def test_no_container_shares_its_security_context_with_another_or_the_defaults() -> None:
    raw = {**OFFICIAL, "podTemplate": {"initContainers": [SIDECAR]}}
    pod = pod_spec(raw)
    contexts = [c["securityContext"] for c in pod["containers"] + pod["initContainers"]]
    contexts[0]["capabilities"]["drop"].append("NET_RAW")
    assert [c["capabilities"]["drop"] for c in contexts[1:]] == [["ALL"], ["ALL"]]
    assert builders.RESTRICTED_CONTAINER_SECURITY["capabilities"] == {"drop": ["ALL"]}


def test_a_native_sidecar_keeps_restart_policy_always() -> None:
    (built,) = pod_spec(with_("podTemplate.initContainers", [SIDECAR]))["initContainers"]
    assert built["restartPolicy"] == "Always"


def test_an_init_containers_own_security_keys_replace_the_defaults() -> None:
    own = {"readOnlyRootFilesystem": False, "capabilities": {"add": ["NET_ADMIN"]}}
    (built,) = pod_spec(with_("podTemplate.initContainers", [{**SIDECAR, "securityContext": own}]))[
        "initContainers"
    ]
    assert built["securityContext"] == {**builders.RESTRICTED_CONTAINER_SECURITY, **own}
    assert built["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_worker_keeps_its_security_context_whatever_the_init_containers_say() -> None:
    raw = with_("podTemplate.initContainers", [{**SIDECAR, "securityContext": {"runAsUser": 0}}])
    assert container(raw)["securityContext"] == builders.RESTRICTED_CONTAINER_SECURITY


def test_no_init_containers_nor_spread_constraints_unless_given() -> None:
    built = pod_spec()
    for key in (
        "initContainers",
        "topologySpreadConstraints",
        "runtimeClassName",
        "dnsPolicy",
        "dnsConfig",
    ):
        assert key not in built, key
    assert len(container()["ports"]) == 1


POD_KEYS = st.sampled_from(
    ["topologySpreadConstraints", "initContainers", "runtimeClassName", "dnsPolicy", "dnsConfig"]
)
ITEM_KEYS = st.sampled_from(
    ["name", "image", "restartPolicy", "securityContext", "maxSkew", "topologyKey",
     "whenUnsatisfiable", "labelSelector", "nameservers", "searches", "options"]
)  # fmt: skip
ITEMS = st.lists(st.dictionaries(ITEM_KEYS, JSONS, max_size=5), max_size=3)


@pytest.mark.timeout(10)  # a property test: many examples, on a shared machine
@settings(max_examples=150, deadline=None)
@given(
    template=st.dictionaries(POD_KEYS, JSONS | ITEMS | st.dictionaries(ITEM_KEYS, JSONS)),
    ports=st.none() | st.lists(st.dictionaries(
        st.sampled_from(["name", "containerPort", "protocol"]), JSONS | st.integers(1, 65535)
    ), max_size=3),
)  # fmt: skip
def test_a_spec_that_parses_always_builds(template: dict[str, Any], ports: object) -> None:
    raw = {**MINIMAL, "podTemplate": template, "ports": ports}
    try:
        spec = specs.parse_spec(raw)
    except specs.InvalidSpecError:
        return  # refused, naming the field (test_spec's property)
    built = builders.build_deployment(OWNER, spec, replicas=1)
    json.dumps(built)  # plain JSON data all the way down
