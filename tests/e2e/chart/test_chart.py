"""The chart renders, lints and is accepted by the rig's API server for every value set users set.

Each case is rendered with `helm template` into a fresh namespace and applied with
`kubectl apply --dry-run=server`, so the API server's own validation (schemas, the monitoring
CRDs, the PriorityClass, RBAC) judges it; `helm lint --strict` runs with the same values. Each
case also checks what its values are for in the rendered objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.chart.conftest import CHART, PRIORITY_CLASS, Helm, documents, find, write_values
from tests.e2e.conftest import Kubectl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DIGEST = "sha256:" + "0123456789abcdef" * 4
APP_VERSION = str(yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"])
Objects = list[dict[str, Any]]


def release_of(namespace: str) -> str:
    return f"aw-{namespace[-6:]}"


def container(objects: Objects, release: str) -> dict[str, Any]:
    (deployment,) = find(objects, "Deployment", release)
    found: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return found


def pod_spec(objects: Objects, release: str) -> dict[str, Any]:
    (deployment,) = find(objects, "Deployment", release)
    found: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return found


def check_defaults(objects: Objects, release: str, namespace: str) -> None:
    operator = container(objects, release)
    assert operator["command"] == ["agent-operator"]
    assert f"--lease-name={release}" in operator["args"]
    assert not [arg for arg in operator["args"] if arg.startswith("--shards")], "one shard"
    assert operator["image"] == f"ghcr.io/agentworker/agent-operator:{APP_VERSION}"
    assert f"--companion-image={operator['image']}" in operator["args"]
    assert pod_spec(objects, release)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ], "soft anti-affinity by default"
    assert find(objects, "Deployment", release)[0]["spec"]["replicas"] == 2
    (budget,) = find(objects, "PodDisruptionBudget", release)
    assert budget["spec"]["minAvailable"] == 1
    (role,) = find(objects, "ClusterRole", release)
    assert any("secrets" in rule["resources"] for rule in role["rules"])
    assert find(objects, "CustomResourceDefinition")[0]["metadata"]["annotations"] == {
        "helm.sh/resource-policy": "keep"
    }
    edit, view = (
        find(objects, "ClusterRole", f"{release}-edit"),
        find(objects, "ClusterRole", f"{release}-view"),
    )
    assert edit[0]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "create" in edit[0]["rules"][0]["verbs"]
    assert view[0]["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert (
        find(objects, "Service", f"{release}-metrics")[0]["spec"]["ports"][0]["name"] == "metrics"
    )
    assert find(objects, "Pod", f"{release}-test"), "the helm test pod"
    assert not find(objects, "Service", f"{release}-webhook"), "webhooks are opted into"
    assert not [arg for arg in operator["args"] if arg.startswith("--webhook")]
    (role,) = find(objects, "Role", f"{release}-leader-election")
    assert not [rule for rule in role["rules"] if "pods" in rule["resources"]], "no pod patch"
    assert not find(objects, "ServiceMonitor")
    assert not find(objects, "PodMonitor")
    assert not find(objects, "PrometheusRule")


def check_watch_namespaces(objects: Objects, release: str, namespace: str) -> None:
    args = container(objects, release)["args"]
    assert f"--namespace={namespace}" in args
    assert "--namespace=default" in args
    (cluster_role,) = find(objects, "ClusterRole", release)
    cluster_resources = {r for rule in cluster_role["rules"] for r in rule["resources"]}
    assert cluster_resources == {"customresourcedefinitions", "namespaces"}, (
        "no Secret cluster-wide"
    )
    roles = find(objects, "Role", release)
    assert sorted(r["metadata"]["namespace"] for r in roles) == sorted([namespace, "default"])
    assert all(any("secrets" in rule["resources"] for rule in r["rules"]) for r in roles)
    assert len(find(objects, "RoleBinding", release)) == 2


def check_monitoring(objects: Objects, release: str, namespace: str) -> None:
    (service_monitor,) = find(objects, "ServiceMonitor", release)
    assert service_monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert service_monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (pod_monitor,) = find(objects, "PodMonitor", f"{release}-workers")
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert pod_monitor["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/managed-by": "agentworker-operator"
    }
    # workers that serve no metrics (the official worker without the companion) are left out
    assert pod_monitor["spec"]["selector"]["matchExpressions"] == [
        {"key": "agentworker.dev/metrics", "operator": "NotIn", "values": ["false"]}
    ]
    (dashboard,) = find(objects, "ConfigMap", f"{release}-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dashboard["data"]["agentworker-fleet.json"])
    queries = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
    for metric in (
        "agentworker_desired_replicas",
        "agentworker_replicas",
        "agentworker_ready_replicas",
        "agentworker_workers",
        "agentworker_active_jobs",
        "agentworker_load",
        "agentworker_scale_events_total",
    ):
        assert metric in queries, metric


def check_alerts(objects: Objects, release: str, namespace: str) -> None:
    (rules,) = find(objects, "PrometheusRule", release)
    assert rules["metadata"]["labels"]["release"] == "kube-prometheus-stack", "ruleSelector"
    names = [rule["alert"] for group in rules["spec"]["groups"] for rule in group["rules"]]
    assert names == [
        "AgentWorkerFleetFull",
        "AgentWorkerWorkersUnreadable",
        "AgentWorkerDegraded",
        "AgentWorkerCallsRecovered",
        "AgentWorkerOperatorDown",
    ]


def check_digest(objects: Objects, release: str, namespace: str) -> None:
    image = container(objects, release)["image"]
    assert image == f"ghcr.io/agentworker/agent-operator@{DIGEST}", "the digest overrides the tag"
    assert find(objects, "Pod", f"{release}-test")[0]["spec"]["containers"][0]["image"] == image


def check_everything(objects: Objects, release: str, namespace: str) -> None:
    name = "fleet-operator"
    spec = pod_spec(objects, name)
    operator = spec["containers"][0]
    assert operator["image"] == f"mirror.example.com/agentworker/agent-operator@{DIGEST}"
    assert f"--companion-image={operator['image']}" in operator["args"], "the mirror serves both"
    assert spec["priorityClassName"] == PRIORITY_CLASS
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux", "node-role/system": "true"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert set(spec["affinity"]) == {"nodeAffinity"}, "users' affinity replaces the default"
    spread = spec["topologySpreadConstraints"][0]
    assert spread["labelSelector"]["matchLabels"]["app.kubernetes.io/instance"] == release
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert {e["name"] for e in operator["env"]} >= {"POD_NAME", "HTTPS_PROXY"}
    mounts = {m["name"]: m["mountPath"] for m in operator["volumeMounts"]}
    assert mounts["tmp"] == "/tmp", "the read-only root filesystem needs a writable /tmp"
    assert "/etc/ssl/extra" in mounts.values()
    assert [v["name"] for v in spec["volumes"]] == ["tmp", "ca-bundle"]
    assert operator["resources"] == {"requests": {"cpu": "100m", "memory": "160Mi"},
                                     "limits": {"memory": "320Mi"}}  # fmt: skip
    assert "--health-host=$(POD_IP)" in operator["args"]
    assert "--lease-name=fleet-operator" in operator["args"]
    assert "--log-format=text" in operator["args"]
    (deployment,) = find(objects, "Deployment", name)
    assert deployment["spec"]["replicas"] == 3
    template = deployment["spec"]["template"]["metadata"]
    assert template["annotations"] == {"example.com/team": "voice"}
    assert template["labels"]["example.com/tier"] == "platform"
    (account,) = find(objects, "ServiceAccount", "fleet-bot")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("fleet")
    assert find(objects, "PodDisruptionBudget", name)[0]["spec"]["maxUnavailable"] == 1
    assert find(objects, "ServiceMonitor", name)
    assert find(objects, "PodMonitor", f"{name}-workers")
    assert not find(objects, "CustomResourceDefinition")


def check_webhook(objects: Objects, release: str, namespace: str) -> None:
    operator = container(objects, release)
    assert "--webhook-port=18082" in operator["args"]
    assert "--webhook-host=0.0.0.0" in operator["args"]
    assert {"name": "webhook", "containerPort": 18082, "protocol": "TCP"} in operator["ports"]
    (service,) = find(objects, "Service", f"{release}-webhook")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["ports"] == [
        {"name": "webhook", "port": 18082, "targetPort": "webhook", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == {  # the Lease holders only (they label their pods)
        "app.kubernetes.io/name": "agentworker-operator",
        "app.kubernetes.io/instance": release,
        "agentworker.dev/lease-holder": "true",
    }
    (role,) = find(objects, "Role", f"{release}-leader-election")
    assert {"apiGroups": [""], "resources": ["pods"], "verbs": ["patch"]} in role["rules"]


def check_sharded(objects: Objects, release: str, namespace: str) -> None:
    assert "--shards=3" in container(objects, release)["args"]
    assert find(objects, "Deployment", release)[0]["spec"]["replicas"] == 4, "one standby"
    shards = [f"{release}-shard-{i}" for i in range(3)]
    (role,) = find(objects, "Role", f"{release}-leader-election")
    assert {"resourceNames": shards, "verbs": ["get", "update"]}.items() <= role["rules"][1].items()
    (test_role,) = find(objects, "Role", f"{release}-test")
    leases = [r["resourceNames"] for r in test_role["rules"] if "leases" in r["resources"]]
    assert leases == [shards], "helm test reads every shard's Lease"
    (test_pod,) = find(objects, "Pod", f"{release}-test")
    env = {e["name"]: e["value"] for e in test_pod["spec"]["containers"][0]["env"]}
    assert (env["LEASE_NAME"], env["SHARDS"]) == (release, "3")


def check_single_replica(objects: Objects, release: str, namespace: str) -> None:
    assert find(objects, "Deployment", release)[0]["spec"]["replicas"] == 1
    assert not find(objects, "PodDisruptionBudget")


def check_existing_service_account(objects: Objects, release: str, namespace: str) -> None:
    assert not [o for o in find(objects, "ServiceAccount") if o["metadata"]["name"] == release]
    assert pod_spec(objects, release)["serviceAccountName"] == "ops-bot"
    (binding,) = find(objects, "ClusterRoleBinding", release)
    assert binding["subjects"][0]["name"] == "ops-bot"


EVERYTHING = """
fullnameOverride: fleet-operator
crds: {enabled: false}
replicaCount: 3
image:
  registry: mirror.example.com
  repository: agentworker/agent-operator
  tag: 9.9.9
  digest: DIGEST
  pullPolicy: Always
imagePullSecrets: [{name: registry}]
serviceAccount:
  create: true
  name: fleet-bot
  automountServiceAccountToken: false
  annotations: {eks.amazonaws.com/role-arn: "arn:aws:iam::1:role/fleet"}
rbac: {aggregateClusterRoles: true}
watchNamespaces: [NAMESPACE]
leaderElection: {leaseDuration: 20}
syncPeriod: 3
resyncPeriod: 60
scrapeTimeout: 1.5
logFormat: text
logLevel: DEBUG
extraArgs: ["--identity=$(POD_NAME)"]
bindAddress: $(POD_IP)
healthPort: 18080
metrics:
  port: 19090
  service: {enabled: true, annotations: {prometheus.io/scrape: "true"}}
prometheus:
  serviceMonitor:
    enabled: true
    labels: {release: prom}
    annotations: {a: b}
    interval: 1m
    scrapeTimeout: 20s
  podMonitor: {enabled: true, namespace: NAMESPACE, interval: 30s}
grafana:
  dashboard: {enabled: true, annotations: {grafana_folder: LiveKit}}
podAnnotations: {example.com/team: voice}
podLabels: {example.com/tier: platform}
nodeSelector: {node-role/system: "true"}
tolerations:
  - {key: dedicated, operator: Equal, value: system, effect: NoSchedule}
affinity:
  nodeAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 10
        preference:
          matchExpressions: [{key: topology.kubernetes.io/zone, operator: In, values: [a]}]
podAntiAffinity: hard
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
priorityClassName: PRIORITY_CLASS
terminationGracePeriodSeconds: 45
extraEnv:
  - {name: HTTPS_PROXY, value: "http://proxy:3128"}
  - {name: NODE, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
extraVolumes: [{name: ca-bundle, configMap: {name: ca-bundle}}]
extraVolumeMounts: [{name: ca-bundle, mountPath: /etc/ssl/extra, readOnly: true}]
resources:
  requests: {cpu: 100m, memory: 160Mi}
  limits: {memory: 320Mi}
podSecurityContext:
  runAsNonRoot: true
  runAsUser: 10001
  fsGroup: 10001
  seccompProfile: {type: RuntimeDefault}
securityContext:
  allowPrivilegeEscalation: false
  capabilities: {drop: [ALL]}
  readOnlyRootFilesystem: true
  runAsNonRoot: true
podDisruptionBudget: {enabled: true, maxUnavailable: 1, unhealthyPodEvictionPolicy: IfHealthyBudget}
"""


def everything(namespace: str) -> dict[str, Any]:
    """Every value users commonly set, at once."""
    text = EVERYTHING.replace("NAMESPACE", namespace).replace("PRIORITY_CLASS", PRIORITY_CLASS)
    values: dict[str, Any] = yaml.safe_load(text.replace("DIGEST", DIGEST))
    return values


Check = Callable[[Objects, str, str], None]
CASES: dict[str, tuple[Callable[[str], dict[str, Any]], Check]] = {
    "defaults": (lambda ns: {}, check_defaults),
    "watch-namespaces": (lambda ns: {"watchNamespaces": [ns, "default"]}, check_watch_namespaces),
    "monitoring-and-dashboard": (
        lambda ns: {
            "prometheus": {
                "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
                "podMonitor": {"enabled": True},
            },
            "grafana": {"dashboard": {"enabled": True}},
        },
        check_monitoring,
    ),
    "alerts": (
        lambda ns: {
            "prometheus": {
                "serviceMonitor": {"enabled": True},
                "prometheusRule": {
                    "enabled": True,
                    "labels": {"release": "kube-prometheus-stack"},
                    "runbookUrl": "https://docs.example.com/troubleshooting.md",
                },
            },
        },
        check_alerts,
    ),
    "image-digest": (lambda ns: {"image": {"tag": "ignored", "digest": DIGEST}}, check_digest),
    "everything-at-once": (everything, check_everything),
    "webhook": (
        lambda ns: {
            "webhook": {"enabled": True, "port": 18082, "service": {"type": "LoadBalancer"}},
            "rbac": {"readCredentialSecrets": True},
        },
        check_webhook,
    ),
    "sharded": (lambda ns: {"sharding": {"shards": 3}}, check_sharded),
    "one-replica-no-pdb": (
        lambda ns: {"replicaCount": 1, "podDisruptionBudget": {"enabled": False}},
        check_single_replica,
    ),
    "existing-service-account": (
        lambda ns: {"serviceAccount": {"create": False, "name": "ops-bot"}},
        check_existing_service_account,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_values_render_lint_and_pass_server_side_dry_run(
    case: str, helm: Helm, kubectl: Kubectl, namespace: str, tmp_path: Path,
    monitoring_crds: list[str], priority_class: str,
) -> None:  # fmt: skip
    make_values, check = CASES[case]
    values = write_values(tmp_path / "values.yaml", make_values(namespace))
    release = release_of(namespace)
    lint = helm("lint", "--strict", str(CHART), "-f", str(values), "-n", namespace)
    assert "0 chart(s) failed" in lint.stdout
    rendered = helm("template", release, str(CHART), "-n", namespace, "-f", str(values)).stdout
    objects = documents(rendered)
    check(objects, release, namespace)
    # Helm creates the test hook's ServiceAccount before its pod; a dry run creates nothing, and
    # the ServiceAccount admission plugin refuses a pod whose account is missing: make it for real
    # (the namespace is the test's own).
    for pod in find(objects, "Pod"):
        account = pod["spec"]["serviceAccountName"]
        kubectl("create", "serviceaccount", account, "-n", namespace)
    applied = kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered, check=False)
    assert applied.returncode == 0, f"{case}: the API server refused: {applied.stderr}"
    assert applied.stdout.count("(server dry run)") == len(objects), applied.stdout


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2}, "additional properties 'replicas' not allowed"),
        ({"resources": {"request": {"cpu": "1"}}}, "additional properties 'request' not allowed"),
        ({"resources": {"limits": {"memory": ["1Gi"]}}}, "got array, want number or string"),
        ({"image": {"digest": "latest"}}, "does not match pattern"),
        ({"podAntiAffinity": "sometimes"}, "value must be one of"),
        ({"prometheus": {"serviceMonitor": {"interval": "often"}}}, "does not match pattern"),
        ({"serviceAccount": {"create": False}}, "serviceAccount.name is required"),
        (
            {"prometheus": {"serviceMonitor": {"enabled": True}},
             "metrics": {"service": {"enabled": False}}},
            "needs metrics.service.enabled",
        ),
        ({"webhook": {"enabled": True, "port": 8080}}, "webhook.port 8080 is taken"),
        ({"webhook": {"service": {"type": "ExternalName"}}}, "value must be one of"),
        ({"sharding": {"shards": 3}, "replicaCount": 2}, "replicaCount 2 is below sharding.shards"),
        ({"sharding": {"shards": 0}}, "minimum: got 0, want 1"),
    ],
    ids=["old-replicas-key", "resources-typo", "quantity-list", "bad-digest", "anti-affinity-enum",
         "bad-interval", "account-without-name", "monitor-without-service",
         "webhook-on-health-port", "webhook-service-type-enum", "fewer-replicas-than-shards",
         "no-shards"],
)  # fmt: skip
def test_invalid_values_are_refused_with_a_message_naming_them(
    values: dict[str, Any], message: str, helm: Helm, tmp_path: Path
) -> None:
    path = write_values(tmp_path / "values.yaml", values)
    done = helm("template", "aw", str(CHART), "-f", str(path), check=False)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr


def test_notes_say_what_to_do_next_and_warn_about_autoscaler_grace_caps(
    helm: Helm, tmp_path: Path
) -> None:
    # `helm template` leaves NOTES.txt out; a client-side dry run prints it (and creates nothing).
    values = write_values(
        tmp_path / "values.yaml",
        {"podDisruptionBudget": {"enabled": False}, "crds": {"enabled": False}},
    )
    notes = helm(
        "install", "aw", str(CHART), "-n", "ops", "-f", str(values), "--dry-run=client"
    ).stdout.partition("NOTES:")[2]
    for expected in (
        "kubectl create secret generic livekit-credentials",
        "kubectl apply -n NS -f agentworker.yaml",
        "kubectl get aw -n NS",
        "helm test aw -n ops",
        "600 s",
        "karpenter.sh/do-not-disrupt",
        'cluster-autoscaler.kubernetes.io/safe-to-evict: "false"',
        "no PodDisruptionBudget",
    ):
        assert expected in notes, expected


def test_notes_tell_livekit_where_to_send_webhooks_and_with_which_key(
    helm: Helm, tmp_path: Path
) -> None:
    # the CRD left out, as above: the cluster may have it from another test already
    values = write_values(
        tmp_path / "values.yaml", {"webhook": {"enabled": True}, "crds": {"enabled": False}}
    )
    notes = helm(
        "install", "aw", str(CHART), "-n", "ops", "-f", str(values), "--dry-run=client"
    ).stdout.partition("NOTES:")[2]
    for expected in (
        "- http://aw-webhook.ops.svc:8082/livekit/webhook",
        "api_key: <the LIVEKIT_API_KEY of your AgentWorkers' credentials Secret>",
        "WARNING: webhook.enabled without rbac.readCredentialSecrets",
    ):
        assert expected in notes, expected
