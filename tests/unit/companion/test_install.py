"""`python -m agentworker_companion install DIR`: the init container's copy of the companion,
and what a worker's interpreter does with it (PYTHONPATH=DIR, the injected sitecustomize)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import agentworker_companion
from agentworker_companion import __main__ as cli

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

PACKAGE = Path(agentworker_companion.__file__).parent
SOURCES = sorted(p.name for p in PACKAGE.glob("*.py") if p.name != "_sitecustomize.py")


def test_install_copies_the_package_and_puts_sitecustomize_at_the_root(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "agentworker-companion"
    assert cli.main(["install", str(target)]) == 0
    copied = target / "agentworker_companion"
    assert sorted(p.name for p in copied.iterdir()) == SOURCES
    for name in SOURCES:
        assert (copied / name).read_bytes() == (PACKAGE / name).read_bytes()
    sitecustomize = target / "sitecustomize.py"
    assert sitecustomize.read_bytes() == (PACKAGE / "_sitecustomize.py").read_bytes()
    assert sorted(p.name for p in target.iterdir()) == ["agentworker_companion", "sitecustomize.py"]
    out = capsys.readouterr().out
    assert (
        out
        == f"agentworker-companion {agentworker_companion.__version__} installed into {target}\n"
    )


def test_installing_again_over_a_copy_replaces_it(tmp_path: Path) -> None:
    assert cli.main(["install", str(tmp_path)]) == 0
    (tmp_path / "agentworker_companion" / "hooks.py").write_text("stale")
    assert cli.main(["install", str(tmp_path)]) == 0
    hooks = tmp_path / "agentworker_companion" / "hooks.py"
    assert hooks.read_bytes() == (PACKAGE / "hooks.py").read_bytes()
    assert list(tmp_path.rglob(".*.tmp")) == []


def test_the_copy_is_readable_by_the_workers_user_whatever_the_umask(tmp_path: Path) -> None:
    before = os.umask(0o077)
    try:
        assert cli.main(["install", str(tmp_path)]) == 0
    finally:
        os.umask(before)
    files = [*(tmp_path / "agentworker_companion").iterdir(), tmp_path / "sitecustomize.py"]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {
        p.name: "0o644" for p in files
    }


@pytest.mark.parametrize(
    "argv",
    [[], ["install"], ["copy", "/tmp/x"], ["install", "/tmp/a", "/tmp/b"]],
    ids=["nothing", "no-dir", "another-command", "two-dirs"],
)
def test_a_wrong_usage_exits_2_and_says_the_usage(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", cli.USAGE + "\n")


def test_a_directory_that_cannot_be_written_exits_1_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "agentworker-companion"
    assert cli.main(["install", str(target)]) == 1
    assert capsys.readouterr().err.startswith(
        f"agentworker-companion: cannot install into {target}: "
    )


WORKER_MODULE = """
__version__ = "{version}"


class AgentServer:
    async def run(self):
        pass

    async def drain(self):
        pass

    async def aclose(self):
        pass

    @property
    def active_jobs(self):
        return []

    def _handle_assignment(self, assignment):
        pass


ORIGINAL_RUN = AgentServer.run
"""

PROBE = textwrap.dedent(
    """
    import sys
    import livekit.agents.worker as worker
    print("wrapped" if worker.AgentServer.run is not worker.ORIGINAL_RUN else "untouched")
    print("image sitecustomize" if "image_sitecustomize_ran" in sys.modules else "-")
    print(sys.modules["agentworker_companion"].__file__)
    """
)


def run_worker(tmp_path: Path, *, enabled: str, version: str = "1.8.9") -> list[str]:
    """A worker interpreter as the operator starts one: the installed companion first on
    PYTHONPATH, then an image with livekit.agents.worker (a stand-in) and its own
    sitecustomize, which the injected one must still run."""
    companion = tmp_path / "companion"
    assert cli.main(["install", str(companion)]) == 0
    image = tmp_path / "image"
    (image / "livekit" / "agents").mkdir(parents=True)  # livekit stays a namespace package
    (image / "livekit" / "agents" / "__init__.py").write_text("")
    (image / "livekit" / "agents" / "worker.py").write_text(WORKER_MODULE.format(version=version))
    (image / "sitecustomize.py").write_text(
        "import sys\nsys.modules['image_sitecustomize_ran'] = sys\n"
    )
    environ = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AGENT_", "PYTHON", "COVERAGE_"))
    }
    environ.update(PYTHONPATH=f"{companion}:{image}", AGENTWORKER_COMPANION=enabled)
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        env=environ,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    *said, loaded_from = done.stdout.splitlines()
    assert loaded_from == str(companion / "agentworker_companion" / "__init__.py")
    return said


@pytest.mark.timeout(30)  # starts a Python interpreter that imports aiohttp, on a shared machine
def test_a_worker_with_the_installed_copy_on_pythonpath_gets_the_companion(
    tmp_path: Path,
) -> None:
    assert run_worker(tmp_path, enabled="1") == ["wrapped", "image sitecustomize"]


@pytest.mark.timeout(30)  # starts a Python interpreter, on a shared machine
@pytest.mark.parametrize(
    ("enabled", "version"), [("0", "1.8.9"), ("1", "1.2.0")], ids=["not-enabled", "untested-line"]
)
def test_a_worker_runs_untouched_when_not_enabled_or_on_an_untested_line(
    tmp_path: Path, enabled: str, version: str
) -> None:
    assert run_worker(tmp_path, enabled=enabled, version=version) == [
        "untouched",
        "image sitecustomize",
    ]
