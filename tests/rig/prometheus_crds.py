"""prometheus-operator's ServiceMonitor, PodMonitor and PrometheusRule CRDs, from the Go module
proxy, cached.

Test infrastructure only. The rig has no internet but the Go module proxy, which serves the
prometheus-operator module, whose example/prometheus-operator-crd/ folder holds the released CRDs.
`crd_files()` downloads the pinned release once (`go mod download`, into the rig's module cache)
and copies the three files and the LICENSE (Apache-2.0) to
~/.cache/agentworker-rig/prometheus-operator-<version>/; later calls only read that folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from tests.rig.env import REPO_ROOT

MODULE = "github.com/prometheus-operator/prometheus-operator"
KINDS = ("servicemonitors", "podmonitors", "prometheusrules")
VERSIONS_FILE = REPO_ROOT / "tests" / "rig" / "versions.env"


def cache_root() -> Path:
    """The rig's build cache (tests/rig/build.sh uses the same)."""
    default = Path.home() / ".cache" / "agentworker-rig"
    return Path(os.environ.get("AGENTWORKER_RIG_CACHE", str(default)))


def pinned_version() -> str:
    """PROMETHEUS_OPERATOR_VERSION from tests/rig/versions.env."""
    for line in VERSIONS_FILE.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "PROMETHEUS_OPERATOR_VERSION":
            return value.strip()
    raise RuntimeError(f"PROMETHEUS_OPERATOR_VERSION is not set in {VERSIONS_FILE}")


def _download(version: str) -> Path:
    """The module's unpacked source in the rig's module cache (read-only files)."""
    cache = cache_root()
    environ = dict(
        os.environ,
        GOMODCACHE=str(cache / "gomod"),
        GOFLAGS="-mod=mod",
        GOTOOLCHAIN="local",
    )
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"{MODULE}@{version}"],
        env=environ,
        cwd=cache,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"go mod download {MODULE}@{version} failed: {done.stderr.strip()}")
    return Path(json.loads(done.stdout)["Dir"])


def crd_files(version: str | None = None) -> list[Path]:
    """The ServiceMonitor, PodMonitor and PrometheusRule CRD files of the pinned (or given)
    release."""
    version = version or pinned_version()
    folder = cache_root() / f"prometheus-operator-{version}"
    wanted = [folder / f"monitoring.coreos.com_{kind}.yaml" for kind in KINDS]
    if all(path.exists() for path in wanted):
        return wanted
    source = _download(version)
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in wanted:
        shutil.copyfile(
            source / "example" / "prometheus-operator-crd" / path.name, staging / path.name
        )
    shutil.copyfile(source / "LICENSE", staging / "LICENSE")
    (staging / "SOURCE").write_text(f"{MODULE}@{version} example/prometheus-operator-crd/\n")
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
    return wanted
