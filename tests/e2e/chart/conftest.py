"""Fixtures for the chart's rig tests: helm, rendered manifests, the monitoring CRDs.

The shipped CRD and the LiveKit credentials come from the operator tests' fixtures (imported, so
pytest finds them here too); `namespace`, `kubectl` and `rig` from tests/e2e/conftest.py.
`render` runs `helm template` alone, which needs the rig's helm build but no running rig.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Kubectl
from tests.e2e.operator.conftest import crd, credentials  # noqa: F401  (fixtures, used by name)
from tests.rig import env as rig_env
from tests.rig import prometheus_crds
from tests.waiting import wait_for

CHART = rig_env.REPO_ROOT / "charts" / "agentworker-operator"
PRIORITY_CLASS = "agentworker-chart-test"

Helm = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="session")
def helm(rig: rig_env.RigEnv) -> Helm:
    """Run the rig's helm against the rig; raises with its output when `check` and it fails."""
    path = f"{rig.bin_path}:{os.environ.get('PATH', '')}"
    binary = shutil.which("helm", path=path)
    assert binary is not None, "the rig provides helm (make rig)"
    environ = dict(os.environ, KUBECONFIG=str(rig.kubeconfig), PATH=path)

    def run(
        *args: str, check: bool = True, timeout_s: float = 300
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [binary, *args],
            env=environ,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout_s,
            cwd=rig_env.REPO_ROOT,
        )
        if check and done.returncode != 0:
            output = f"{done.stdout.strip()}\n{done.stderr.strip()}".strip()
            raise AssertionError(f"helm {' '.join(args)} failed ({done.returncode}): {output}")
        return done

    return run


Render = Callable[..., subprocess.CompletedProcess[str]]


def built_helm() -> Path:
    """The helm that tests/rig/build.sh builds into its cache (`make rig` runs it), at the
    version tests/rig/versions.env pins."""
    pins = (rig_env.REPO_ROOT / "tests" / "rig" / "versions.env").read_text()
    version = re.search(r"^HELM_VERSION=(\S+)$", pins, re.MULTILINE)
    assert version is not None, "tests/rig/versions.env pins HELM_VERSION"
    default_cache = Path.home() / ".cache" / "agentworker-rig"
    cache = Path(os.environ.get("AGENTWORKER_RIG_CACHE", default_cache))
    return cache / "bin" / f"helm-{version[1]}" / "helm"


@pytest.fixture(scope="session")
def render() -> Render:
    """`helm template <release> <chart> ARGS...` offline: no cluster, no running rig. Raises with
    helm's output when `check` and it fails."""
    binary = built_helm()
    assert binary.is_file(), f"{binary} is missing: build it with `make rig` (tests/rig/build.sh)"

    def run(release: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(binary), "template", release, str(CHART), *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            cwd=rig_env.REPO_ROOT,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"helm template {' '.join(args)} failed: {done.stderr.strip()}")
        return done

    return run


def write_values(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def documents(text: str) -> list[dict[str, Any]]:
    """The objects of a multi-document YAML stream (empty documents dropped)."""
    return [doc for doc in yaml.safe_load_all(text) if doc]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]


@pytest.fixture(scope="session")
def monitoring_crds(kubectl: Kubectl) -> list[str]:
    """prometheus-operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs (pinned release),
    Established."""
    names = []
    for path in prometheus_crds.crd_files():
        kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
        names.append(f"crd/{yaml.safe_load(path.read_text())['metadata']['name']}")
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *names)
    return names


@pytest.fixture(scope="session")
def priority_class(kubectl: Kubectl) -> Iterator[str]:
    """A PriorityClass for the chart's priorityClassName (the API server checks it exists)."""
    manifest = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": PRIORITY_CLASS},
        "value": 1000,
        "description": "tests/e2e/chart: the operator's priorityClassName",
    }
    kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest))
    yield PRIORITY_CLASS
    kubectl("delete", "priorityclass", PRIORITY_CLASS, "--ignore-not-found", check=False)


def wait_gone(kubectl: Kubectl, what: str, *args: str, timeout_s: float = 120) -> None:
    """Wait until `kubectl get <args>` finds nothing (NotFound or an empty list)."""
    wait_for(
        what,
        lambda: kubectl("get", *args, "-o", "name", "--ignore-not-found", check=False),
        lambda done: done.returncode == 0 and not done.stdout.strip(),
        timeout_s=timeout_s,
        interval_s=0.5,
    )
