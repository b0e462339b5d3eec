"""A job process cannot see the worker's API secret or its control token.

Job code (possibly driven by a language model) must not mint admin tokens nor retire the worker:
the secret and the token are in neither its environment nor its /proc/self/environ, nor in what
it can read of the fork server's or the worker's /proc/<pid>/environ, cmdline and mem. Each job
here reports what it read; the harmless LIVEKIT_URL showing up in the same places proves that
the reads worked.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.runtime.harness import (
    LiveKit,
    WorkerFactory,
    WorkerProc,
    eventually,
    process_ended,
)
from tests.rig.env import REPO_ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

TARGET = "tests.e2e.runtime.agents:snooping"
NOBODY = 65534
CAP_SYS_PTRACE = 19
WHERE = (
    "env",
    "self_environ",
    "fork_server_environ",
    "fork_server_mem",
    "worker_environ",
    "worker_cmdline",
    "worker_mem",
)


BOOT = (
    "import os, site, sys; os.chdir(sys.argv.pop(1)); site.addsitedir(sys.argv.pop(1)); "
    "sys.path.insert(0, os.getcwd()); from worker_runtime import cli; sys.exit(cli.main())"
)
"""`agent-worker`'s script run from a tree uid 65534 can read, with the venv's packages added
after the stdlib; the cwd, where the runtime and the test agents are, goes first, ahead of the
venv's editable finder, which points into the checkout."""
READABLE = ("worker_runtime", "tests/__init__.py", "tests/e2e/__init__.py", "tests/e2e/runtime")
"""What a worker of the test agents imports from the checkout."""
DROP = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")


@functools.cache
def python_for_nobody() -> str | None:
    """An interpreter of this version that uid 65534 can run, fork server included (a venv's
    may point under /root): it runs the runtime with the venv's packages as a site directory."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if shutil.which("setpriv") is None:
        return None
    probe = (
        f"import sys; assert sys.version.startswith('{version}')\n"
        "import multiprocessing as mp\n"
        "p = mp.get_context('forkserver').Process(target=print); p.start(); p.join()\n"
        "assert p.exitcode == 0"
    )
    for candidate in (
        sys.executable,
        f"/usr/bin/python{version}",
        f"/usr/local/bin/python{version}",
    ):
        check = [*DROP, candidate, "-c", probe]
        # cwd "/": the repo root holds an `operator` folder that would shadow the stdlib's
        if (
            subprocess.run(check, cwd="/", capture_output=True, timeout=30, check=False).returncode
            == 0
        ):
            return candidate
    return None


@pytest.fixture(scope="module")
def tree_for_nobody() -> Iterator[tuple[Path, Path]]:
    """The runtime, the test agents and the venv's packages where uid 65534 can read them: a
    clone may sit under a directory it cannot enter (CI's did, 0700), so they are linked (same
    file system) or copied into a fresh world-readable directory. Yields (workdir, site)."""
    root = Path(tempfile.mkdtemp(prefix="agentworker-uid65534-"))
    root.chmod(0o755)
    try:
        copy = _link_or_copy(Path(sysconfig.get_paths()["purelib"]), root / "site")
        for relative in READABLE:
            source = REPO_ROOT / relative
            if source.is_dir():
                copy(source, root / "work" / relative)
            else:
                (root / "work" / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, root / "work" / relative)
        for directory in (root, *root.rglob("*")):
            if directory.is_dir():
                directory.chmod(0o755)
        yield root / "work", root / "site"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _link_or_copy(site: Path, destination: Path) -> Callable[[Path, Path], object]:
    """Hard-links `site` into `destination` (copies across file systems); returns the tree
    copier that worked, for the rest."""
    try:
        shutil.copytree(site, destination, copy_function=os.link, symlinks=True)
    except (shutil.Error, OSError):
        shutil.rmtree(destination, ignore_errors=True)
        shutil.copytree(site, destination, symlinks=True)
        return functools.partial(shutil.copytree, symlinks=True)
    return functools.partial(shutil.copytree, copy_function=os.link, symlinks=True)


def unreadable_for_nobody(python: str, workdir: Path, site: Path) -> str:
    """Why uid 65534 cannot import the runtime and the test agents from the tree made for it;
    "" when it can."""
    probe = (
        "import os, site, sys; os.chdir(sys.argv[1]); site.addsitedir(sys.argv[2]); "
        "sys.path.insert(0, '.'); import worker_runtime.cli, tests.e2e.runtime.agents"
    )
    done = subprocess.run(
        [*DROP, python, "-P", "-c", probe, str(workdir), str(site)],
        cwd="/", capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return "" if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]


def can_ptrace_anything() -> bool:
    """Whether this user (and so a job of a worker run as it) holds CAP_SYS_PTRACE, which reads
    any process's /proc/<pid>/environ and mem, dumpable or not."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> CAP_SYS_PTRACE & 1)
    return False


async def job_findings(worker: WorkerProc, livekit: LiveKit, agent_name: str) -> dict[str, object]:
    await livekit.dispatch(agent_name, f"room-{uuid.uuid4().hex[:8]}")
    [seen] = await worker.wait_for("e2e job sees")
    return seen


def assert_nothing_leaked(
    seen: dict[str, object], worker: WorkerProc, livekit: LiveKit, token: str
) -> None:
    for where in WHERE:
        text = str(seen[where])
        assert livekit.api_secret not in text, f"the API secret is in the job's {where}"
        assert token not in text, f"the control token is in the job's {where}"
    assert livekit.api_secret not in worker.log_path.read_text()
    assert token not in worker.log_path.read_text()


@pytest.mark.parametrize("how", ["rig-user", "secret-as-flag", "uid-65534"])
async def test_a_job_sees_neither_the_api_secret_nor_the_control_token(
    request: pytest.FixtureRequest,
    livekit: LiveKit,
    workers: WorkerFactory,
    agent_name: str,
    how: str,
) -> None:
    token = uuid.uuid4().hex
    env = {"AGENT_CONTROL_TOKEN": token}
    command = None
    args: tuple[str, ...] = ()
    unprivileged = how == "uid-65534"
    if how == "secret-as-flag":
        # a server of its own, whose secret starts with "-": the flag must still take it
        livekit = request.getfixturevalue("dedicated_livekit").livekit
        assert livekit.api_secret.startswith("-")
        env["LIVEKIT_API_SECRET"] = ""
        args = ("--api-secret", livekit.api_secret)
    if unprivileged:  # as in a pod: the job runs as the worker's own uid, which is not root
        python = python_for_nobody()
        if python is None:
            missing = "no setpriv, or no Python of this version that uid 65534 may run"
            if os.environ.get("CI"):  # a security check does not go quietly green in CI
                pytest.fail(missing)
            pytest.skip(missing)
        env["HOME"] = "/tmp"
        workdir, site = request.getfixturevalue("tree_for_nobody")
        unreadable = unreadable_for_nobody(python, workdir, site)
        assert not unreadable, f"uid 65534 cannot import the runtime: {unreadable}"
        command = [*DROP, python, "-P", "-c", BOOT, str(workdir), str(site), "start", TARGET]
    worker = await workers.start(
        TARGET, livekit, agent_name=agent_name, env=env, command=command, args=args
    )
    # ready means registered: the worker signed its own token with the secret it was given
    fork_server = await worker.fork_server()

    seen = await job_findings(worker, livekit, agent_name)

    assert (seen["worker_pid"], seen["fork_server_pid"]) == (worker.popen.pid, fork_server.pid)
    url = f"LIVEKIT_URL={livekit.url}"
    for where in ("env", "self_environ", "fork_server_environ", "fork_server_mem"):
        assert url in str(seen[where]), f"the job could not read its {where}: {seen[where]}"
    # the key stays: an identifier, which the job's own room token names anyway
    assert f"LIVEKIT_API_KEY={livekit.api_key}" in str(seen["env"])
    assert seen["token_issuer"] == livekit.api_key
    assert "tests.e2e.runtime.agents:snooping" in str(seen["worker_cmdline"])
    if args:  # the flag is still there, its value is not (assert_nothing_leaked)
        assert "--api-secret" in str(seen["worker_cmdline"])
    if unprivileged or not can_ptrace_anything():
        # the fork server, same uid and dumpable, was readable above; the worker is not
        assert seen["worker_environ"] == "error: PermissionError"
        assert seen["worker_mem"] == "error: PermissionError"
    else:  # root with CAP_SYS_PTRACE reads it all: the secrets must be gone from the block
        assert url in str(seen["worker_environ"])
    assert_nothing_leaked(seen, worker, livekit, token)
    await worker.wait_for("job succeeded", job_id=seen["job_id"])
    assert (await worker.retire(f"Bearer {token}"))[0] == 200, "the worker kept its token"


async def test_a_restarted_fork_server_does_not_regain_the_secret(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    token = uuid.uuid4().hex
    # no prewarmed process: each job is forked by whichever fork server runs at its dispatch
    worker = await workers.start(
        TARGET, livekit, agent_name=agent_name, idle=0, env={"AGENT_CONTROL_TOKEN": token}
    )
    first = await job_findings(worker, livekit, agent_name)
    killed = await worker.fork_server()
    assert first["fork_server_pid"] == killed.pid
    killed.send_signal(signal.SIGKILL)

    async def gone() -> bool:
        return process_ended(killed)

    await eventually(gone, within_s=10, what="the fork server gone")

    await livekit.dispatch(agent_name, f"room-{uuid.uuid4().hex[:8]}")
    [_, second] = await worker.wait_for("e2e job sees", count=2)
    assert second["fork_server_pid"] != killed.pid
    assert second["fork_server_pid"] == (await worker.fork_server()).pid
    assert f"LIVEKIT_URL={livekit.url}" in str(second["fork_server_environ"])
    assert_nothing_leaked(second, worker, livekit, token)
