"""`helm test`: the AgentWorker API is served, every operator replica answers, and one leads
(with SHARDS above 1: one per shard).

Runs in the operator's image (python3, standard library only) as the release's test
ServiceAccount, through the API server address and token a kubelet gives every pod. It lists
AgentWorkers (the CRD is served), then asks each ready operator pod's /readyz: all must be ready,
exactly one must say it leads, and it must be the holder of the release's Lease. With SHARDS
above 1, each shard's Lease (`<LEASE_NAME>-shard-<i>`) must be held by a pod of its own that says
it leads that shard. It retries until TEST_TIMEOUT_S and exits 1 with what it saw last.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def api_get(path: str) -> Any:
    """GET from the API server as this pod's ServiceAccount."""
    host = bracket(os.environ["KUBERNETES_SERVICE_HOST"])
    port = os.environ["KUBERNETES_SERVICE_PORT"]
    with open(f"{ACCOUNT}/token") as file:
        token = file.read().strip()
    context = ssl.create_default_context(cafile=f"{ACCOUNT}/ca.crt")
    request = urllib.request.Request(
        f"https://{host}:{port}{path}",
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as answer:
        return json.load(answer)


def readyz(ip: str, port: str) -> dict[str, Any]:
    """An operator pod's /readyz answer ({"ready": ..., "leader": ...})."""
    try:
        with urllib.request.urlopen(f"http://{bracket(ip)}:{port}/readyz", timeout=5) as answer:
            found: dict[str, Any] = json.load(answer)
    except urllib.error.HTTPError as error:  # 503 while a new leader starts kopf
        found = json.load(error)
    except OSError as error:
        found = {"ready": False, "error": str(error)}
    return found


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions", [])
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
    return ready and not pod["metadata"].get("deletionTimestamp")


def problem(
    namespace: str, selector: str, lease: str, port: str, shards: int = 1
) -> tuple[str | None, str]:
    """What is wrong (None when nothing) and what was seen."""
    api_get(f"/apis/agentworker.dev/v1alpha1/namespaces/{namespace}/agentworkers?limit=1")
    query = urllib.parse.urlencode({"labelSelector": selector})
    pods = api_get(f"/api/v1/namespaces/{namespace}/pods?{query}")["items"]
    answers = {
        p["metadata"]["name"]: readyz(p["status"]["podIP"], port) for p in pods if is_ready(p)
    }
    leaders = sorted(name for name, answer in answers.items() if answer.get("leader"))
    names = [lease] if shards == 1 else [f"{lease}-shard-{i}" for i in range(shards)]
    holders = [
        api_get(f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}")["spec"].get(
            "holderIdentity"
        )
        for name in names
    ]
    shown = repr(holders[0]) if shards == 1 else json.dumps(dict(zip(names, holders, strict=True)))
    seen = f"pods {json.dumps(answers, sort_keys=True)}, lease holder {shown}"
    if not answers:
        return "no ready operator pod", seen
    if not all(answer.get("ready") for answer in answers.values()):
        return "an operator pod is not ready", seen
    if len(leaders) != shards:
        return f"{len(leaders)} operator pods say they lead, not {shards}", seen
    if shards == 1 and holders[0] != leaders[0]:
        return f"the Lease names {holders[0]!r}, but {leaders[0]!r} leads", seen
    for index, holder in enumerate(holders if shards > 1 else []):
        if holder not in leaders or answers[holder].get("shard") != index:
            return f"shard {index}'s Lease names {holder!r}, which does not lead it", seen
    return None, seen


def main() -> int:
    with open(f"{ACCOUNT}/namespace") as file:
        namespace = file.read().strip()
    selector, lease = os.environ["OPERATOR_SELECTOR"], os.environ["LEASE_NAME"]
    port = os.environ["HEALTH_PORT"]
    shards = int(os.environ.get("SHARDS", "1"))
    deadline = time.monotonic() + float(os.environ.get("TEST_TIMEOUT_S", "60"))
    while True:
        try:
            wrong, seen = problem(namespace, selector, lease, port, shards)
        except (OSError, KeyError, ValueError) as error:
            wrong, seen = "the API server refused or failed", f"{type(error).__name__}: {error}"
        if wrong is None:
            print(f"ok: AgentWorkers are served; {seen}")
            return 0
        if time.monotonic() > deadline:
            print(f"FAILED: {wrong}; {seen}", file=sys.stderr)
            return 1
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
