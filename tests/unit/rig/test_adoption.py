"""A restarted process runner adopts the containers the previous one left running."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.rig import adoption

pytestmark = pytest.mark.timeout(2)


@pytest.fixture
def container_process() -> Iterator[subprocess.Popen[bytes]]:
    """A process as the runner starts one: HOSTNAME is the pod's name.

    Yielded once it has said so: until the child has exec'd, /proc shows the parent's environment.
    """
    with subprocess.Popen(
        [sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.read()"],
        env={"HOSTNAME": "web-1", "PATH": "/usr/bin:/bin"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    ) as proc:  # on exit: its pipes closed, the process reaped
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"up\n"  # bounded by the tier's 2 s limit
        yield proc
        proc.kill()


@pytest.mark.parametrize(
    ("status", "pid"),
    [
        ({"containerID": "process://4242", "state": {"running": {}}}, 4242),
        ({"containerID": "process://4242", "state": {"terminated": {"exitCode": 0}}}, None),
        ({"containerID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}, None),
        ({"containerID": "containerd://abc", "state": {"running": {}}}, None),
    ],
    ids=["running", "terminated", "waiting", "not-ours"],
)
def test_only_a_running_container_of_the_runner_names_a_pid(
    status: dict[str, object], pid: int | None
) -> None:
    assert adoption.pid_of(status) == pid


def test_a_live_process_of_the_pod_is_adoptable_and_a_reused_pid_is_not(
    container_process: subprocess.Popen[bytes],
) -> None:
    assert adoption.adoptable(container_process.pid, "web-1")
    assert not adoption.adoptable(container_process.pid, "web-2"), "another pod's name"


def test_an_adopted_process_that_ends_reports_the_unknown_exit_code(
    container_process: subprocess.Popen[bytes],
) -> None:
    adopted = adoption.AdoptedProcess(container_process.pid)
    assert adopted.poll() is None
    assert adoption.environment(container_process.pid)["HOSTNAME"] == "web-1"
    container_process.kill()
    assert adopted.wait(timeout=1) == adoption.EXIT_UNKNOWN  # a zombie counts as ended


def test_statuses_are_keyed_by_container_name_init_containers_included() -> None:
    pod = {
        "status": {
            "initContainerStatuses": [{"name": "setup"}],
            "containerStatuses": [{"name": "app"}],
        }
    }
    assert sorted(adoption.statuses(pod)) == ["app", "setup"]
