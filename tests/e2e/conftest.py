"""Fixtures for tests against the rig: its address book, an API client, a fresh namespace."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from tests.rig import env as rig_env
from tests.waiting import wait_for

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

ACCESS_STATUS = re.compile(r"\(40[13]\)|\b(?:status|code)\W{0,3}40[13]\b", re.IGNORECASE)
"""A 401 or 403 as the clients write one: kubernetes' "(403)", "status=403", '"code": 403'.
Not any 401 or 403: a log line's "pid": 401 or a traceback's "line 403" is none."""


def access_refusal(log_text: str) -> str:
    """The first sign in an operator's log that the API server refused it something (401,
    403), or ""."""
    for sign in ("Unauthorized", "Forbidden"):
        if sign in log_text:
            return sign
    status = ACCESS_STATUS.search(log_text)
    return status.group() if status else ""


@pytest.fixture(scope="session")
def rig() -> rig_env.RigEnv:
    """The running rig; fails (never skips) when `make rig` has not been run."""
    return rig_env.load()


@pytest.fixture(scope="session")
def api_client(rig: rig_env.RigEnv) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(str(rig.kubeconfig))  # type: ignore[no-untyped-call]
    yield api
    api.close()


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def namespace(core: client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, with its default ServiceAccount made by the controllers."""
    stem = request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(
        f"serviceaccount default in {name}",
        lambda: core.list_namespaced_service_account(name).items,
        lambda items: any(sa.metadata.name == "default" for sa in items),
        timeout_s=60,
    )
    yield name
    try:
        core.delete_namespace(name)
    except client.ApiException as error:
        if error.status != 404:  # a test may delete its namespace itself
            raise


@pytest.fixture(scope="session")
def kubectl(rig: rig_env.RigEnv) -> Kubectl:
    """Run the rig's kubectl; raises with its stderr when `check` and it fails."""
    environ = dict(os.environ, KUBECONFIG=str(rig.kubeconfig))
    environ["PATH"] = f"{rig.bin_path}:{environ.get('PATH', '')}"

    def run(
        *args: str, check: bool = True, stdin: str | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["kubectl", *args],
            env=environ,
            capture_output=True,
            text=True,
            input=stdin,
            check=False,
            timeout=120,
            cwd=cwd or rig_env.REPO_ROOT,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    return run
