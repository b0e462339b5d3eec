"""docs/install.md's three commands ("Build, push and install with your registry"), as written.

The tests read the fenced block under that heading, so the page and the tests cannot drift apart:

- both `make` lines run as written, with a stand-in `docker` first on PATH that records its
  arguments and does nothing else: the names built and pushed are the three images, under the
  registry and tag the lines give (and `make push-images` without a registry pushes nothing);
- the `helm install` line's flags render the chart (`helm template`): every image the chart names
  is the operator image those lines pushed;
- against the rig, the rendered objects pass the API server's server-side dry run, in the test's
  own namespace instead of the page's `agentworker`.

The `make` tests need only make and bash, the render the rig's helm build (`render`), the dry
run a running rig (marked e2e).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.chart.conftest import Render, documents, find
from tests.e2e.chart.test_images import companion_images, images
from tests.e2e.conftest import Kubectl
from tests.rig import env as rig_env

pytestmark = pytest.mark.timeout(120)  # helm renders the whole chart, the CRD with it

INSTALL_PAGE = rig_env.REPO_ROOT / "docs" / "install.md"
HEADING = "### Build, push and install with your registry"
CHART_PATH = "charts/agentworker-operator"
IMAGES = ("agent-operator", "agent-worker", "example-agent")
"""What `make images` builds, under <registry>/agentworker/."""
RECORDING_DOCKER = '#!/bin/sh\nprintf "%s\\n" "$*" >> "$RECORDED_BUILDER_CALLS"\n'
"""A `docker` that answers every call (`info` too) with success and records its arguments."""
HOST_SETTINGS = ("BUILDER", "REGISTRY", "TAG", "OPERATOR_IMAGE", "WORKER_IMAGE", "EXAMPLE_IMAGE",
                 "MAKEFLAGS", "MFLAGS", "MAKELEVEL")  # fmt: skip
"""Variables of the calling environment that would change what the `make` lines do."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentedPath:
    """The three commands of the page, split as a shell splits them."""

    build: list[str]
    push: list[str]
    install: list[str]
    registry: str
    tag: str

    @property
    def release(self) -> str:
        return self.install[2]

    @property
    def flags(self) -> list[str]:
        """The `helm install` flags after the release and the chart."""
        return self.install[4:]

    def image(self, name: str) -> str:
        return f"{self.registry}/agentworker/{name}:{self.tag}"


def documented_commands(page: str) -> list[list[str]]:
    """The commands of the first fenced block under HEADING, continuation lines joined."""
    _, found, section = page.partition(f"\n{HEADING}\n")
    assert found, f"docs/install.md has no heading {HEADING!r}"
    section = re.split(r"^#{1,3} ", section, maxsplit=1, flags=re.MULTILINE)[0]
    fence = re.search(r"^```[a-z]*\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    assert fence is not None, f"no fenced block under {HEADING!r}"
    lines = fence[1].replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip()]


def documented_path() -> DocumentedPath:
    commands = documented_commands(INSTALL_PAGE.read_text())
    assert [command[:2] for command in commands] == [
        ["make", "images"],
        ["make", "push-images"],
        ["helm", "install"],
    ], commands
    build, push, install = commands
    variables = dict(arg.split("=", 1) for arg in build[2:])
    assert set(variables) == {"REGISTRY", "TAG"}, build
    assert push[2:] == build[2:], "the push names what the build made"
    assert install[3] == CHART_PATH, install
    path = DocumentedPath(
        build=build,
        push=push,
        install=install,
        registry=variables["REGISTRY"],
        tag=variables["TAG"],
    )
    wanted = {"image.registry": path.registry, "image.tag": path.tag}
    assert set_values(path.flags).items() >= wanted.items(), path.flags
    return path


def set_values(flags: list[str]) -> dict[str, str]:
    """The `--set key=value` pairs among helm flags (both `--set k=v` and `--set=k=v`)."""
    values = []
    for i, flag in enumerate(flags):
        if flag == "--set":
            values.append(flags[i + 1])
        elif flag.startswith("--set="):
            values.append(flag.removeprefix("--set="))
    return dict(value.split("=", 1) for value in values)


def in_namespace(flags: list[str], namespace: str) -> list[str]:
    """The flags with their `--namespace` value replaced by `namespace`."""
    at = flags.index("--namespace") + 1
    return [*flags[:at], namespace, *flags[at + 1 :]]


def run_with_recording_docker(
    command: list[str], tmp_path: Path, *, succeeds: bool = True
) -> list[list[str]]:
    """Run a `make` line with RECORDING_DOCKER; the calls it received, split. Fails the test
    when the line's success is not `succeeds`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(RECORDING_DOCKER)
    docker.chmod(0o755)
    calls = tmp_path / f"{command[1]}.calls"
    environ = {k: v for k, v in os.environ.items() if k not in HOST_SETTINGS}
    environ.update(
        PATH=f"{bin_dir}:{os.environ.get('PATH', '')}",
        RECORDED_BUILDER_CALLS=str(calls),
        CA_BUNDLE="",  # no build secret: the host's CA bundle is not the test's business
    )
    done = subprocess.run(
        command,
        cwd=rig_env.REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode == 0) == succeeds, f"{shlex.join(command)}: {done.stderr}"
    recorded = calls.read_text().splitlines() if calls.exists() else []
    return [shlex.split(line) for line in recorded]


def test_the_documented_make_lines_build_and_push_the_three_images_under_the_registry(
    tmp_path: Path,
) -> None:
    path = documented_path()
    expected = [path.image(name) for name in IMAGES]

    builds = [c for c in run_with_recording_docker(path.build, tmp_path) if c[0] == "build"]
    assert [c[c.index("-t") + 1] for c in builds] == expected
    example = builds[IMAGES.index("example-agent")]
    assert f"WORKER_IMAGE={path.image('agent-worker')}" in example, "FROM the worker just built"

    pushes = [c for c in run_with_recording_docker(path.push, tmp_path) if c[0] == "push"]
    assert [c[1:] for c in pushes] == [[image] for image in expected]


def test_push_images_without_a_registry_refuses_and_pushes_nothing(tmp_path: Path) -> None:
    # the names would have no host, and docker would take them for Docker Hub's
    calls = run_with_recording_docker(["make", "push-images"], tmp_path, succeeds=False)
    assert not [c for c in calls if c[0] == "push"], calls


def test_the_documented_install_pulls_only_the_operator_image_the_make_lines_push(
    render: Render,
) -> None:
    path = documented_path()
    objects = documents(render(path.release, *path.flags).stdout)
    found = images(objects) + companion_images(objects)
    # the operator, the helm test pod, and the companion image given to the operator
    assert len(found) == 3, found
    assert set(found) == {path.image("agent-operator")}, found


@pytest.mark.e2e
def test_the_documented_install_passes_the_api_servers_dry_run(
    render: Render, kubectl: Kubectl, namespace: str
) -> None:
    path = documented_path()
    rendered = render(path.release, *in_namespace(path.flags, namespace)).stdout
    objects = documents(rendered)
    # Helm creates the test hook's ServiceAccount before its pod; a dry run creates nothing, and
    # the ServiceAccount admission plugin refuses a pod whose account is missing: make it for real
    # (the namespace is the test's own).
    for pod in find(objects, "Pod"):
        kubectl("create", "serviceaccount", pod["spec"]["serviceAccountName"], "-n", namespace)
    applied = kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered, check=False)
    assert applied.returncode == 0, f"the API server refused: {applied.stderr}"
    assert applied.stdout.count("(server dry run)") == len(objects), applied.stdout
