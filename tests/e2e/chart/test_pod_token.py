"""What the chart's pods rely on from the rig: a kubelet's service account token and API address.

The process runner gives each container KUBERNETES_SERVICE_HOST/PORT and the projected volumes
the ServiceAccount admission plugin put in the pod (a token from the TokenRequest API bound to the
pod, the cluster CA, the namespace) at /var/run/secrets/kubernetes.io/serviceaccount, in the
container's own mount namespace. These pods look at what they got and report it as one JSON line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Kubectl
from tests.e2e.operator.conftest import get_json
from tests.rig import env as rig_env
from tests.waiting import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
# Runs in the pod: what a client of in-cluster config would find, and who the API server says it is.
REPORT = r"""
import base64, json, os, ssl, sys, urllib.request
from pathlib import Path

def claims(token):
    body = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return {"aud": body["aud"], "sub": body["sub"], "pod": body["kubernetes.io"]["pod"]["name"],
            "lifetime_s": body["exp"] - body["iat"]}

account = Path(sys.argv[1])
report = {k: v for k, v in os.environ.items() if k.startswith("KUBERNETES_SERVICE")}
report["files"] = sorted(p.name for p in account.glob("[!.]*")) if account.is_dir() else None
for extra in sys.argv[2:]:
    report[extra] = claims(Path(extra).read_text())
if (account / "token").exists():
    token = (account / "token").read_text()
    report["claims"] = claims(token)
    report["namespace"] = (account / "namespace").read_text()
    url = "https://%s:%s/apis/authentication.k8s.io/v1/selfsubjectreviews" % (
        os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
    request = urllib.request.Request(url, data=json.dumps(review).encode(), method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    context = ssl.create_default_context(cafile=str(account / "ca.crt"))
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        report["user"] = json.load(answer)["status"]["userInfo"]["username"]
print(json.dumps(report))
"""


def run_pod(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str, name: str, *extra_paths: str,
    **spec: Any,
) -> dict[str, Any]:  # fmt: skip
    """Run REPORT in a pod until it succeeds; its report."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 5,
            "containers": [
                {
                    "name": "main",
                    "image": "rig.invalid/ignored",
                    "command": [sys.executable, "-c", REPORT, SA_DIR, *extra_paths],
                    "volumeMounts": spec.pop("volumeMounts", []),
                }
            ],
            **spec,
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(manifest))
    log = rig.logs_dir / "pods" / f"{namespace}_{name}_main.log"
    wait_for(
        f"pod {name} to succeed ({log})",
        lambda: get_json(kubectl, "pod", name, "-n", namespace)["status"].get("phase"),
        lambda phase: phase == "Succeeded",
        timeout_s=60,
    )
    report: dict[str, Any] = json.loads(log.read_text().strip().splitlines()[-1])
    return report


def test_default_pod_gets_a_pod_bound_token_the_ca_and_its_namespace(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str
) -> None:
    report = run_pod(kubectl, rig, namespace, "default-account")
    assert report["files"] == ["ca.crt", "namespace", "token"]
    assert report["namespace"] == namespace
    assert report["user"] == f"system:serviceaccount:{namespace}:default", "ca.crt verified it"
    assert report["claims"]["pod"] == "default-account", "bound to the pod (boundObjectRef)"
    assert report["claims"]["aud"] == ["https://kubernetes.default.svc"]
    assert report["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    server = json.loads(rig.kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    assert server.endswith(f":{report['KUBERNETES_SERVICE_PORT']}")


def test_automount_false_on_the_pod_gives_no_token(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str
) -> None:
    report = run_pod(kubectl, rig, namespace, "no-token", automountServiceAccountToken=False)
    assert not report["files"], "nothing is mounted at the service account path"
    assert "claims" not in report
    # A kubelet gives every container the API server's address, token or not.
    assert report["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"


def test_service_account_automount_false_is_honoured_unless_the_pod_asks(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str
) -> None:
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "quiet"},
        "automountServiceAccountToken": False,
    }
    kubectl("apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(account))
    quiet = run_pod(kubectl, rig, namespace, "quiet", serviceAccountName="quiet")
    assert not quiet["files"]
    asks = run_pod(
        kubectl, rig, namespace, "asks", serviceAccountName="quiet",
        automountServiceAccountToken=True,
    )  # fmt: skip
    assert asks["user"] == f"system:serviceaccount:{namespace}:quiet"


def test_a_projected_token_with_its_own_audience_and_lifetime(
    kubectl: Kubectl, rig: rig_env.RigEnv, namespace: str
) -> None:
    volume = {
        "name": "vault-token",
        "projected": {
            "sources": [
                {
                    "serviceAccountToken": {
                        "path": "token",
                        "audience": "vault",
                        "expirationSeconds": 600,
                    }
                }
            ]
        },
    }
    mount = {"name": "vault-token", "mountPath": "/var/run/secrets/tokens", "readOnly": True}
    report = run_pod(
        kubectl, rig, namespace, "audience", "/var/run/secrets/tokens/token",
        volumes=[volume], volumeMounts=[mount],
    )  # fmt: skip
    vault = report["/var/run/secrets/tokens/token"]
    assert vault["aud"] == ["vault"]
    assert vault["lifetime_s"] == 600
    assert vault["pod"] == "audience"
    assert report["claims"]["aud"] == ["https://kubernetes.default.svc"], "the default one too"
