"""The installed companion's start-up: the line of `agentworker_companion.pth` arms the companion
in every interpreter of that Python when AGENTWORKER_COMPANION=1; otherwise it imports nothing.

In this process the line runs as `site` runs it (exec). In a subprocess, a venv whose
site-packages holds what the wheel installs there (the package and the .pth:
test_distribution checks the wheel) starts as the operator starts a worker, `python -I` too:
isolated mode ignores PYTHONPATH but still reads site-packages' .pth files."""

from __future__ import annotations

import importlib.abc
import os
import shutil
import site
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import agentworker_companion
from agentworker_companion import __main__ as cli
from agentworker_companion import boot
from tests import companion_wheel
from tests.unit.companion.test_install import PROBE, WORKER_MODULE

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

PACKAGE = Path(agentworker_companion.__file__).parent
PTH = PACKAGE.parent / "agentworker_companion.pth"
LINES = [line for line in PTH.read_text().splitlines() if line and not line.startswith("#")]


def finders() -> list[importlib.abc.MetaPathFinder]:
    return [f for f in sys.meta_path if isinstance(f, boot._WorkerModuleFinder)]


@pytest.fixture
def unarmed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An interpreter where the companion has not been armed (restored afterwards)."""
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(boot, "_armed", False)


def test_the_file_is_one_line_that_site_executes() -> None:
    assert len(LINES) == 1
    assert LINES[0].startswith("import ")  # site exec()s only lines that start so
    assert f'os.environ.get("{agentworker_companion.ENABLE_VARIABLE}") == "1"' in LINES[0]


@pytest.mark.usefixtures("unarmed")
def test_the_line_arms_the_hook_once_when_the_variable_is_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTWORKER_COMPANION", "1")
    exec(LINES[0], {})
    exec(LINES[0], {})
    assert len(finders()) == 1


@pytest.mark.usefixtures("unarmed")
@pytest.mark.parametrize("value", [None, "", "0", "true"])
def test_the_line_does_nothing_unless_the_variable_is_1(
    monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("AGENTWORKER_COMPANION", raising=False)
    else:
        monkeypatch.setenv("AGENTWORKER_COMPANION", value)
    exec(LINES[0], {})
    assert finders() == []


@pytest.mark.usefixtures("unarmed")
def test_the_line_never_raises_and_says_why_on_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setenv("AGENTWORKER_COMPANION", "1")
    monkeypatch.setattr(boot, "activate", broken)
    exec(LINES[0], {})
    assert capsys.readouterr().err == (
        "agentworker-companion: not loaded from agentworker_companion.pth: RuntimeError('boom')\n"
    )


# -- a Python with the companion installed ------------------------------------------------------

LOADED = textwrap.dedent(
    """
    import sys
    print(sorted(m for m in sys.modules if m.startswith("agentworker")))
    print(sum(type(f).__name__ == "_WorkerModuleFinder" for f in sys.meta_path))
    """
)


def installed_python(root: Path) -> tuple[Path, Path]:
    """A venv with the companion as the wheel installs it, a stand-in livekit.agents.worker,
    and this venv's libraries (aiohttp, prometheus_client) appended to its path: its python
    and its site-packages."""
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(root)],
        cwd=root.parent,
        check=True,
        timeout=20,
    )
    python = root / "bin" / "python"
    site_packages = companion_wheel.site_packages(python)
    shutil.copytree(PACKAGE, site_packages / PACKAGE.name, ignore=shutil.ignore_patterns("__py*"))
    shutil.copyfile(PTH, site_packages / PTH.name)
    (site_packages / "livekit" / "agents").mkdir(parents=True)  # a namespace package
    (site_packages / "livekit" / "agents" / "__init__.py").write_text("")
    worker = WORKER_MODULE.format(version="1.8.9")
    (site_packages / "livekit" / "agents" / "worker.py").write_text(worker)
    (site_packages / "zz_libraries.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python, site_packages


def run(python: Path, *args: str, cwd: Path, **environ: str) -> list[str]:
    """`python *args` in `cwd` (first on sys.path with -c, unless -I); its stdout's lines."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AGENT", "PYTHON", "COVERAGE_"))
    }
    done = subprocess.run(
        [str(python), *args],
        env={**clean, **environ},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    return done.stdout.splitlines()


@pytest.mark.timeout(30)  # makes a venv and starts Python interpreters, on a shared machine
def test_python_dash_i_with_the_companion_installed_gets_it(tmp_path: Path) -> None:
    python, site_packages = installed_python(tmp_path / "venv")
    said = run(python, "-I", "-c", PROBE, cwd=tmp_path, AGENTWORKER_COMPANION="1")
    assert said == ["wrapped", "-", str(site_packages / "agentworker_companion" / "__init__.py")]


@pytest.mark.timeout(30)  # makes a venv and starts Python interpreters, on a shared machine
def test_without_the_variable_the_installed_companion_imports_nothing(tmp_path: Path) -> None:
    python, _ = installed_python(tmp_path / "venv")
    assert run(python, "-I", "-c", LOADED, cwd=tmp_path) == ["[]", "0"]
    armed = run(python, "-I", "-c", LOADED, cwd=tmp_path, AGENTWORKER_COMPANION="1")
    # armed, and still cheap: neither hooks nor aiohttp until livekit-agents' worker is imported
    expected = [
        "agentworker_companion",
        "agentworker_companion.boot",
        "agentworker_companion.startup",
    ]
    assert armed == [str(expected), "1"]


@pytest.mark.timeout(30)  # makes a venv and starts Python interpreters, on a shared machine
def test_installed_and_injected_the_companion_arms_once_from_the_injected_copy(
    tmp_path: Path,
) -> None:
    python, _ = installed_python(tmp_path / "venv")
    injected = tmp_path / "injected"
    assert cli.main(["install", str(injected)]) == 0
    probe = LOADED + textwrap.dedent(
        """
        import livekit.agents.worker as worker
        print(worker.AgentServer.run.__wrapped__ is worker.ORIGINAL_RUN)
        print(sys.modules["agentworker_companion"].__file__)
        """
    )
    said = run(
        python, "-c", probe, cwd=tmp_path, AGENTWORKER_COMPANION="1", PYTHONPATH=str(injected)
    )
    assert said[1:] == ["1", "True", str(injected / "agentworker_companion" / "__init__.py")]


@pytest.mark.timeout(30)  # starts a Python interpreter, on a shared machine
def test_a_copy_on_pythonpath_is_not_a_site_directory_so_its_pth_is_not_read(
    tmp_path: Path,
) -> None:
    # what `pip install --target DIR` with DIR on PYTHONPATH gives: the files, but no start-up
    target = tmp_path / "target"
    shutil.copytree(PACKAGE, target / PACKAGE.name, ignore=shutil.ignore_patterns("__py*"))
    shutil.copyfile(PTH, target / PTH.name)
    python = Path(sys.executable)
    said = run(
        python, "-c", LOADED, cwd=tmp_path, AGENTWORKER_COMPANION="1", PYTHONPATH=str(target)
    )
    assert said == ["[]", "0"]
