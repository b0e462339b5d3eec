"""No secret anywhere but its Secret, searched after the e2e suite (`make e2e` runs this last).

What is looked for: the rig's LiveKit API secret, every control token and control key still in a
Secret on the rig, and those the e2e tests wrote down before their namespaces went
(`tests.leaks`): each raw, in hex, and in base64 at any alignment. Where: every file under the rig's
logs (its components' and every pod's), every file the e2e suite wrote under its basetemp (the
operator processes' logs among them), every object of every listable API resource but Secrets
(Events and AgentWorker statuses among them) as the API server returns it, and the /metrics of
every running pod that has a metrics or http port (operators and workers).

Not searched: what left with a deleted namespace (its Events, its objects), processes' memory and
environment, and etcd's files (the Secrets themselves are there).

The controls: the search finds the LiveKit secret in the rig's LiveKit config file, and in base64 in
a Secret listed the same way as the objects searched; the discovered resources are kubectl's.
"""

from __future__ import annotations

import json
import logging
import subprocess
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests import leaks
from tests.e2e.conftest import Kubectl
from tests.rig import env as rig_env

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

logger = logging.getLogger(__name__)
METRICS_PORTS = {"metrics", "http"}


@dataclass(frozen=True, slots=True)
class Hit:
    """Where a secret was found; never the secret itself."""

    path: Path
    line: int
    secret: str
    form: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.secret} ({self.form})"


class Search:
    """The secrets by name, their needles, and a search of files for them (grep -F)."""

    def __init__(self, secrets: dict[str, bytes]) -> None:
        self.forms: dict[bytes, tuple[str, str]] = {}
        for name, secret in secrets.items():
            for needle in leaks.needles(secret):
                form = (
                    "raw"
                    if needle == secret
                    else "hex"
                    if needle == secret.hex().encode()
                    else "base64"
                )
                self.forms.setdefault(needle, (name, form))
        # grep -F takes one pattern a line: a binary secret's raw form is not a text pattern
        self.patterns = [n for n in self.forms if b"\n" not in n and b"\0" not in n]

    def files(self, roots: Iterable[Path]) -> list[Hit]:
        """Every line of the files under `roots` holding a needle."""
        existing = [str(r) for r in roots if r.exists()]
        if not existing:
            return []
        found = subprocess.run(
            ["grep", "-rFlas", "-f", "-", *existing],
            input=b"\n".join(self.patterns),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert found.returncode in (0, 1, 2), found.stderr  # 2: a file went while it read
        return [hit for name in found.stdout.decode().splitlines() for hit in self.hits(Path(name))]

    def hits(self, path: Path) -> list[Hit]:
        lines = path.read_bytes().splitlines()
        return [
            Hit(path, number, *self.forms[needle])
            for number, line in enumerate(lines, 1)
            for needle in self.patterns
            if needle in line
        ]


def api_get(api: client.ApiClient, path: str) -> bytes:
    response = api.call_api("GET", api.configuration.host + path, _request_timeout=60)
    assert response.status == 200, f"GET {path}: {response.status}"
    body: bytes = response.read()  # type: ignore[no-untyped-call]  # the client is untyped
    return body


def listable_resources(api: client.ApiClient) -> dict[str, str]:
    """kubectl's names of every listable resource (preferred versions) and their list paths."""
    bases = [("", "/api/v1")] + [
        (group["name"], f"/apis/{group['preferredVersion']['groupVersion']}")
        for group in json.loads(api_get(api, "/apis"))["groups"]
    ]
    paths = {}
    for group, base in bases:
        for resource in json.loads(api_get(api, base))["resources"]:
            if "/" not in resource["name"] and "list" in resource["verbs"]:
                name = f"{resource['name']}.{group}" if group else resource["name"]
                paths[name] = f"{base}/{resource['name']}"
    return paths


def secrets_to_find(api: client.ApiClient, rig: rig_env.RigEnv) -> dict[str, bytes]:
    """The LiveKit secret, the live Secrets' control tokens and keys, and those written down."""
    found = {"the LiveKit API secret": rig.livekit_api_secret.encode()}
    live = json.loads(api_get(api, "/api/v1/secrets"))["items"]
    for secret in live:
        meta = secret["metadata"]
        for i, value in enumerate(leaks.secret_values(secret)):
            found.setdefault(f"secret {meta['namespace']}/{meta['name']}#{i}", value)
    for i, value in enumerate(sorted(leaks.recorded() - set(found.values()))):
        found[f"a secret written down by an e2e test #{i}"] = value
    return found


def dump_objects(api: client.ApiClient, paths: dict[str, str], into: Path) -> None:
    into.mkdir()
    for name, path in paths.items():
        (into / f"{name}.json").write_bytes(api_get(api, path))


def scrape_metrics(api: client.ApiClient, into: Path) -> int:
    """Write each running pod's /metrics (ports named metrics or http); how many answered."""
    into.mkdir()
    answered = 0
    for pod in json.loads(api_get(api, "/api/v1/pods"))["items"]:
        status: dict[str, Any] = pod.get("status") or {}
        if status.get("phase") != "Running" or not status.get("podIP"):
            continue
        for container in pod["spec"]["containers"]:
            for port in container.get("ports") or []:
                if port.get("name") not in METRICS_PORTS:
                    continue
                url = f"http://{status['podIP']}:{port['containerPort']}/metrics"
                try:
                    with urllib.request.urlopen(url, timeout=2) as answer:  # loopback: 127.0.x.y
                        text = answer.read()
                except OSError:
                    continue  # not every http port serves /metrics; a pod may be going
                name = f"{pod['metadata']['namespace']}_{pod['metadata']['name']}_{port['name']}"
                (into / name).write_bytes(text)
                answered += 1
    return answered


def test_no_secret_in_any_log_event_status_metric_or_object_but_its_secret(
    api_client: client.ApiClient, core: client.CoreV1Api, kubectl: Kubectl,
    rig: rig_env.RigEnv, namespace: str, tmp_path: Path,
) -> None:  # fmt: skip
    secrets = secrets_to_find(api_client, rig)
    search = Search(secrets)
    logger.info("looking for %d secrets (%d patterns)", len(secrets), len(search.patterns))

    # Controls: the search finds the secret where it must be, raw in a file, base64 in a Secret.
    config = rig_env.RIG_DIR / "livekit.yaml"
    assert [h.form for h in search.files([config])] == ["raw"], f"not found in {config}"
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="leak-check-control"),
        string_data={"LIVEKIT_API_SECRET": rig.livekit_api_secret},
    ))  # fmt: skip
    listed = tmp_path / "control-secrets.json"
    listed.write_bytes(api_get(api_client, f"/api/v1/namespaces/{namespace}/secrets"))
    assert {h.form for h in search.files([listed])} == {"base64"}, "not found in its Secret"
    listed.unlink()
    paths = listable_resources(api_client)
    names = kubectl("api-resources", "--verbs=list", "-o", "name").stdout.split()
    assert set(paths) == set(names), "the discovery is kubectl's"

    del paths["secrets"]
    dump_objects(api_client, paths, tmp_path / "objects")
    scraped = scrape_metrics(api_client, tmp_path / "metrics")
    roots = [rig.logs_dir, leaks.E2E_BASETEMP, tmp_path / "objects", tmp_path / "metrics"]
    logger.info("searching %s; %d /metrics answered", roots, scraped)
    hits = search.files(roots)
    assert not hits, "secrets found outside their Secrets:\n" + "\n".join(map(str, hits[:50]))
