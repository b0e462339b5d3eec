"""`download-files`: the image build step that fetches what the agent's plugins need."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

from worker_runtime import cli
from worker_runtime.options import WorkerOptions

pytestmark = pytest.mark.timeout(2)

AgentFile = Callable[[str], str]


@pytest.fixture(autouse=True)
def _root_logger_restored() -> Iterator[None]:
    """The command configures the root logger; later tests get pytest's handlers back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def no_livekit_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    """livekit-agents is not installed (None in sys.modules makes its import fail)."""
    monkeypatch.setitem(sys.modules, "livekit.agents", None)


class FakePlugin:
    """Stands for a livekit-agents plugin: a package name and a download_files()."""

    def __init__(self, package: str, calls: list[str], error: Exception | None = None) -> None:
        self.package = package
        self.calls = calls
        self.error = error

    def download_files(self) -> None:
        self.calls.append(self.package)
        if self.error is not None:
            raise self.error


def fake_livekit_agents(monkeypatch: pytest.MonkeyPatch, *plugins: FakePlugin) -> None:
    """livekit.agents with `Plugin.registered_plugins` holding `plugins`."""
    module = ModuleType("livekit.agents")
    module.Plugin = SimpleNamespace(registered_plugins=list(plugins))  # type: ignore[attr-defined]  # a stand-in module
    monkeypatch.setitem(sys.modules, "livekit.agents", module)


def agent_module(**attrs: object) -> ModuleType:
    module = ModuleType("agent")
    for name, value in attrs.items():
        setattr(module, name, value)
    return module


@pytest.fixture
def agent_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AgentFile]:
    """Writes an importable agent module in the current directory; returns its name."""
    monkeypatch.chdir(tmp_path)
    names: list[str] = []

    def write(body: str) -> str:
        names.append(f"agent_{uuid.uuid4().hex[:8]}")
        (tmp_path / f"{names[-1]}.py").write_text(body)
        return names[-1]

    yield write
    for name in names:
        sys.modules.pop(name, None)
    sys.path[:] = [p for p in sys.path if p != str(tmp_path)]  # main() put the cwd first


AGENT = """
from pathlib import Path

async def entrypoint(ctx):
    pass

def download_files():
    Path("downloaded").write_text("yes")
"""


@pytest.mark.usefixtures("no_livekit_agents")
def test_calls_the_agent_modules_own_download_files() -> None:
    calls: list[str] = []
    module = agent_module(download_files=lambda: calls.append("agent"))
    assert cli.download_files(module) == 1
    assert calls == ["agent"]


@pytest.mark.usefixtures("no_livekit_agents")
def test_without_livekit_agents_and_without_a_function_there_is_nothing_to_do() -> None:
    assert cli.registered_plugins() == []
    assert cli.download_files(agent_module()) == 0


@pytest.mark.usefixtures("no_livekit_agents")
def test_an_async_download_files_is_awaited() -> None:
    calls: list[str] = []

    async def download_files() -> None:
        calls.append("awaited")

    assert cli.download_files(agent_module(download_files=download_files)) == 1
    assert calls == ["awaited"]


def test_registered_plugins_download_before_the_agent_module(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[str] = []
    fake_livekit_agents(
        monkeypatch,
        FakePlugin("livekit.plugins.silero", calls),
        FakePlugin("livekit.plugins.turn_detector", calls),
    )
    module = agent_module(download_files=lambda: calls.append("agent"))
    assert cli.download_files(module) == 3
    assert calls == ["livekit.plugins.silero", "livekit.plugins.turn_detector", "agent"]


def test_a_failing_plugin_stops_the_step_and_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    fake_livekit_agents(
        monkeypatch,
        FakePlugin("livekit.plugins.silero", calls, OSError("no space left")),
        FakePlugin("livekit.plugins.turn_detector", calls),
    )
    failed = r"plugin livekit\.plugins\.silero failed: OSError: no space left"
    with pytest.raises(cli.DownloadFailed, match=failed):
        cli.download_files(agent_module())
    assert calls == ["livekit.plugins.silero"]


@pytest.mark.usefixtures("no_livekit_agents")
def test_a_download_files_that_is_not_a_function_is_an_error() -> None:
    with pytest.raises(cli.DownloadFailed, match=r"agent\.download_files is not a function"):
        cli.download_files(agent_module(download_files="models/"))


@pytest.mark.usefixtures("no_livekit_agents")
def test_command_imports_the_target_module_and_exits_zero(agent_file: AgentFile) -> None:
    name = agent_file(AGENT)
    assert cli.main(["download-files", f"{name}:entrypoint"]) == cli.EXIT_OK
    assert Path("downloaded").read_text() == "yes"


@pytest.mark.usefixtures("no_livekit_agents")
def test_command_exits_one_when_a_download_fails(agent_file: AgentFile) -> None:
    name = agent_file("async def entrypoint(ctx): pass\ndef download_files(): raise OSError\n")
    assert cli.main(["download-files", f"{name}:entrypoint"]) == cli.EXIT_FAILED


@pytest.mark.usefixtures("no_livekit_agents")
@pytest.mark.parametrize(
    ("suffix", "message"),
    [(":nothing", "has no 'nothing'"), ("", "is not module:function")],
    ids=["missing-entrypoint", "no-function"],
)
def test_command_with_a_bad_target_is_a_usage_error(
    agent_file: AgentFile, capsys: pytest.CaptureFixture[str], suffix: str, message: str
) -> None:
    name = agent_file(AGENT)
    assert cli.main(["download-files", f"{name}{suffix}"]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err
    assert not Path("downloaded").exists()


@pytest.mark.usefixtures("no_livekit_agents")
def test_run_app_download_files_uses_the_entrypoints_module(agent_file: AgentFile) -> None:
    name = agent_file(AGENT)
    cli.main(["download-files", f"{name}:entrypoint"])  # imports it
    Path("downloaded").unlink()
    opts = WorkerOptions(entrypoint_fnc=sys.modules[name].entrypoint)
    with pytest.raises(SystemExit) as info:
        cli.run_app(opts, ["download-files"])
    assert (info.value.code, Path("downloaded").read_text()) == (cli.EXIT_OK, "yes")
