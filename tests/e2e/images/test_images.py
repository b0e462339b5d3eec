"""The images, built by `make images` with buildah and run with `buildah run`.

The base is hack/base-image.sh's stand-in for python:3.11-slim-bookworm (no image registry is
reachable here), so the build needs only the Debian archive and PyPI. Cold, the module's first
test builds for a few minutes (the base's rootfs, the wheels); warm runs reuse
~/.cache/agentworker-images and buildah's layer cache. The example agent's image runs as a worker
on the host network against the rig's LiveKit server, takes a dispatched job, and drains on
SIGTERM. Under buildah's chroot isolation the worker is a host process (no PID namespace): the
test signals the pid the worker logs, since `buildah run` answers SIGTERM with SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from livekit import api

import agentworker_companion
from tests.e2e.runtime.harness import free_port
from tests.rig import env as rig_env
from tests.waiting import WaitTimeout, async_wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

REPO_ROOT = rig_env.REPO_ROOT
BASE_TIMEOUT_S = 240
BUILD_TIMEOUT_S = 540
RUN_TIMEOUT_S = 60
COMPILERS = ("gcc", "cc", "c++", "g++", "clang")


@dataclass(frozen=True, slots=True)
class Images:
    operator: str
    worker: str
    example: str


def buildah_env() -> dict[str, str]:
    """The environment of every buildah call: the store and isolation hack/builder.sh uses."""
    env = dict(os.environ)
    env.setdefault("STORAGE_DRIVER", "vfs")
    env.setdefault("BUILDAH_ISOLATION", "chroot")
    return env


def run(argv: list[str], *, timeout_s: float = RUN_TIMEOUT_S, **env: str) -> str:
    """Run a command in its own process group; its stdout, or fail with the end of its output.

    On timeout the whole group goes (a build's buildah and pip, not only `make`).
    """
    proc = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env={**buildah_env(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=30)
        pytest.fail(f"{' '.join(argv)} took over {timeout_s:.0f} s:\n{stderr[-4000:]}")
    if proc.returncode != 0:
        output = f"{stdout[-2000:]}\n{stderr[-4000:]}"
        pytest.fail(f"{' '.join(argv)} exited {proc.returncode}:\n{output}")
    return stdout


@pytest.fixture(scope="module")
def images() -> Images:
    """The three images, built (warm: from cache) on the Debian stand-in base."""
    if shutil.which("buildah") is None:
        pytest.fail(
            "buildah is not installed: these tests build and run the images with it "
            "(apt-get install -y buildah mmdebstrap; .ci/run installs them)"
        )
    tag = "e2e"
    built = Images(
        operator=f"agentworker/agent-operator:{tag}",
        worker=f"agentworker/agent-worker:{tag}",
        example=f"agentworker/example-agent:{tag}",
    )
    base = run(["hack/base-image.sh"], timeout_s=BASE_TIMEOUT_S, BUILDER="buildah").strip()
    run(
        ["make", "--no-print-directory", "images"],
        timeout_s=BUILD_TIMEOUT_S,
        BUILDER="buildah",
        BASE_IMAGE=base,
        PULL="never",
        OPERATOR_IMAGE=built.operator,
        WORKER_IMAGE=built.worker,
        EXAMPLE_IMAGE=built.example,
    )
    return built


@dataclass(frozen=True, slots=True)
class Container:
    """A buildah working container of an image."""

    name: str

    def run(self, *argv: str, user: str | None = None) -> str:
        as_user = ("--user", user) if user else ()
        return run(["buildah", "run", *as_user, self.name, "--", *argv])


ContainerFactory = Callable[[str], Container]


@pytest.fixture
def container(images: Images) -> Iterator[ContainerFactory]:
    """Makes working containers of the built images; removes them when the test ends."""
    names: list[str] = []

    def make(image: str) -> Container:
        names.append(run(["buildah", "from", "--pull=never", image]).strip())
        return Container(names[-1])

    yield make
    for name in names:
        subprocess.run(
            ["buildah", "rm", name], env=buildah_env(), capture_output=True, timeout=60, check=False
        )


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """The parts of an image's OCI config the tests look at."""

    entrypoint: list[str] | None
    cmd: list[str] | None
    user: str
    working_dir: str
    env: frozenset[str]


def image_config(image: str) -> ImageConfig:
    raw = json.loads(run(["buildah", "inspect", "--type", "image", image]))["OCIv1"]["config"]
    return ImageConfig(
        entrypoint=raw.get("Entrypoint"),
        cmd=raw.get("Cmd"),
        user=str(raw.get("User", "")),
        working_dir=str(raw.get("WorkingDir", "")),
        env=frozenset(str(pair) for pair in raw.get("Env") or []),
    )


def test_operator_image_runs_agent_operator_as_uid_and_gid_10001(
    images: Images, container: ContainerFactory
) -> None:
    config = image_config(images.operator)
    assert (config.entrypoint, config.user, config.working_dir) == (
        ["agent-operator"],
        "10001:10001",
        "/app",
    )
    operator = container(images.operator)
    assert "usage: agent-operator" in operator.run("agent-operator", "--help")
    assert operator.run("id", "-u").strip() == "10001"
    assert operator.run("id", "-g").strip() == "10001"


def test_operator_image_carries_the_companions_wheel_and_runs_its_installer(
    images: Images, container: ContainerFactory
) -> None:
    operator = container(images.operator)
    wheel = f"agentworker_companion-{agentworker_companion.__version__}-py3-none-any.whl"
    assert operator.run("ls", "/opt/agentworker/wheels").split() == [wheel]
    listing = "import sys, zipfile; print(*zipfile.ZipFile(sys.argv[1]).namelist(), sep=chr(10))"
    names = operator.run("python", "-c", listing, f"/opt/agentworker/wheels/{wheel}").split()
    assert {"agentworker_companion.pth", "agentworker_companion/startup.py"} <= set(names)
    # the init container's command (builders.build_companion_init_container), as the pod's user
    said = operator.run(
        "sh", "-c",
        "python -m agentworker_companion install /tmp/companion && ls /tmp/companion "
        "&& ls /tmp/companion/agentworker_companion",
    )  # fmt: skip
    first, *listed = said.splitlines()
    version = agentworker_companion.__version__
    assert first == f"agentworker-companion {version} installed into /tmp/companion"
    assert {"sitecustomize.py", "agentworker_companion", "boot.py", "hooks.py"} <= set(listed)


def test_worker_image_has_agent_worker_and_no_entrypoint_so_agent_images_build_from_it(
    images: Images, container: ContainerFactory
) -> None:
    config = image_config(images.worker)
    assert (config.entrypoint, config.cmd, config.user, config.working_dir) == (
        None,
        ["agent-worker", "--help"],
        "10001:10001",
        "/app",
    )
    expected_env = {"HOME=/tmp", "XDG_CACHE_HOME=/var/cache/agent", "PYTHONDONTWRITEBYTECODE=1"}
    assert expected_env <= config.env
    worker = container(images.worker)
    assert "download-files" in worker.run("agent-worker", "--help")
    assert worker.run("id", "-u").strip() == "10001"
    assert worker.run("id", "-g").strip() == "10001"
    # the operator's Kubernetes libraries are an extra the agents' base image goes without;
    # the rtc SDK is there (the same check finds it, so it can find the others)
    present = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    found = worker.run("python3", "-c", present, "kopf", "kubernetes", "livekit.rtc")
    assert found.strip() == "['livekit.rtc']"


@pytest.mark.parametrize("which", ["operator", "worker", "example"])
def test_image_holds_no_compiler_and_no_build_leftovers(
    images: Images, container: ContainerFactory, which: str
) -> None:
    image = container(getattr(images, which))
    found = image.run(
        "sh",
        "-c",
        f"for x in {' '.join(COMPILERS)}; do command -v $x; done; "
        "for p in /wheels /src /opt/build /root/.cache/pip; do [ -e $p ] && echo $p; done; true",
        user="0:0",
    )
    assert found.split() == []


def test_example_image_ran_download_files_as_the_agent_user_at_build_time(
    images: Images, container: ContainerFactory
) -> None:
    example = container(images.example)
    path = "/var/cache/agent/my-agent/greeting.txt"
    assert example.run("cat", path).strip() == "hello from my_agent"
    assert example.run("stat", "-c", "%u:%g", path).strip() == "10001:10001"


def records(log_path: Path) -> list[dict[str, object]]:
    out = []
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # buildah's own lines
        if isinstance(record, dict):
            out.append(record)
    return out


async def wait_for_record(log_path: Path, message: str, *, timeout_s: float) -> dict[str, object]:
    async def probe() -> list[dict[str, object]]:
        return [r for r in records(log_path) if r.get("message") == message]

    def tail() -> str:
        return "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])

    try:
        found = await async_wait_for(repr(message), probe, bool, timeout_s=timeout_s)
    except WaitTimeout as error:
        raise AssertionError(f"{error}\nworker log:\n{tail()}") from None
    return found[0]


def worker_argv(container: Container, env_file: Path, agent_name: str) -> list[str]:
    """`agent-worker start` in the container on the host network; credentials from a file."""
    env = {
        "AGENT_NAME": agent_name,
        "AGENT_HOST": "127.0.0.1",
        "AGENT_PORT": str(free_port()),
        "AGENT_LOAD_THRESHOLD": "inf",  # the shared machine's CPU must not matter
        "AGENT_NUM_IDLE_PROCESSES": "1",
    }
    return [
        "buildah",
        "run",
        "--network",
        "host",
        "--volume",
        f"{env_file}:/run/livekit.env:ro",
        *(arg for key, value in env.items() for arg in ("--env", f"{key}={value}")),
        container.name,
        "--",
        "sh",
        "-c",
        "set -a; . /run/livekit.env; set +a; exec agent-worker start my_agent:entrypoint",
    ]


def signal_worker(pid: int, sig: int) -> None:
    """Signal the worker's host process, after checking that the pid is still the worker."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return
    if b"agent-worker" in cmdline:
        os.kill(pid, sig)


@pytest.fixture
def env_file(rig: rig_env.RigEnv, tmp_path: Path) -> Iterator[Path]:
    """The LiveKit credentials for the container, as a file; removed after the test, as a
    Secret would be (nothing but a Secret may keep the API secret)."""
    path = tmp_path / "livekit.env"
    path.write_text(
        f"LIVEKIT_URL={shlex.quote(rig.livekit_url)}\n"
        f"LIVEKIT_API_KEY={shlex.quote(rig.livekit_api_key)}\n"
        f"LIVEKIT_API_SECRET={shlex.quote(rig.livekit_api_secret)}\n"
    )
    path.chmod(0o644)  # read by uid 10001 in the container; tmp_path itself is private
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


async def test_example_image_worker_registers_takes_a_job_and_drains_on_sigterm(
    images: Images, container: ContainerFactory, rig: rig_env.RigEnv, tmp_path: Path,
    env_file: Path,
) -> None:  # fmt: skip
    agent_name = f"images-e2e-{uuid.uuid4().hex[:8]}"  # only our dispatch reaches this worker
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            *worker_argv(container(images.example), env_file, agent_name),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=buildah_env(),
            cwd=REPO_ROOT,
        )
    pid = 0
    try:
        registered = await wait_for_record(log_path, "registered with LiveKit", timeout_s=60)
        pid = int(str(registered["pid"]))
        request = api.CreateAgentDispatchRequest(
            agent_name=agent_name, room=f"room-{uuid.uuid4().hex[:8]}"
        )
        async with api.LiveKitAPI(
            rig.livekit_url, rig.livekit_api_key, rig.livekit_api_secret
        ) as lk:
            await asyncio.wait_for(lk.agent_dispatch.create_dispatch(request), 10)
        succeeded = await wait_for_record(log_path, "job succeeded", timeout_s=60)
        assert succeeded["agent_name"] == agent_name

        signal_worker(pid, signal.SIGTERM)
        await wait_for_record(log_path, "all jobs ended, stopping", timeout_s=30)
        returncode = await asyncio.wait_for(proc.wait(), 30)
        assert returncode == 0, log_path.read_text(errors="replace")[-2000:]
    finally:
        if proc.returncode is None:
            if pid:
                signal_worker(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), 30)
