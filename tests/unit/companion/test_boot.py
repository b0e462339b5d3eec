"""Boot: AGENTWORKER_COMPANION=1 arms a post-import hook that installs the companion once
livekit-agents' worker module has run, whoever imports it; without the variable nothing happens.

The hook's target is pointed at a throwaway package, so the real `livekit` namespace is never
touched in this process."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from agentworker_companion import boot, hooks

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


class Installs:
    """hooks.install, recorded: the module it got, and that module's state at that moment."""

    def __init__(self) -> None:
        self.modules: list[ModuleType] = []
        self.versions: list[str] = []
        self.error: Exception | None = None

    def __call__(self, module: ModuleType) -> None:
        self.modules.append(module)
        self.versions.append(str(getattr(module, "__version__", "")))
        if self.error is not None:
            raise self.error


@pytest.fixture
def installs(monkeypatch: pytest.MonkeyPatch) -> Installs:
    recorder = Installs()
    monkeypatch.setattr(hooks, "install", recorder)
    return recorder


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A throwaway `<name>.agents.worker` on sys.path, made the hook's target; the import
    system and boot's state are restored afterwards."""
    top = f"fake_livekit_{uuid.uuid4().hex[:8]}"
    worker = tmp_path / top / "agents" / "worker.py"
    worker.parent.mkdir(parents=True)
    (tmp_path / top / "__init__.py").write_text("")
    (worker.parent / "__init__.py").write_text("")
    worker.write_text('__version__ = "1.8.9"\nclass AgentServer:\n    pass\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    monkeypatch.setattr(boot, "TARGET", f"{top}.agents.worker")
    monkeypatch.setattr(boot, "_armed", False)
    monkeypatch.setenv("AGENTWORKER_COMPANION", "1")
    yield boot.TARGET
    for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
        del sys.modules[name]


def finders() -> list[importlib.abc.MetaPathFinder]:
    return [f for f in sys.meta_path if isinstance(f, boot._WorkerModuleFinder)]


@pytest.mark.parametrize("value", [None, "", "0", "true", "yes"])
def test_without_the_variable_set_to_1_nothing_is_armed(
    target: str, installs: Installs, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("AGENTWORKER_COMPANION")
    else:
        monkeypatch.setenv("AGENTWORKER_COMPANION", value)
    boot.activate()
    assert finders() == []
    importlib.import_module(target)
    assert installs.modules == []


def test_importing_the_worker_module_installs_the_companion_after_it_ran(
    target: str, installs: Installs
) -> None:
    boot.activate()
    assert sys.meta_path[0] is finders()[0]
    module = importlib.import_module(target)
    assert installs.modules == [module]
    assert installs.versions == ["1.8.9"]  # the module had run: its names were there
    assert finders() == []  # one module, once


def test_a_module_imported_through_its_parent_is_installed_too(
    target: str, installs: Installs
) -> None:
    boot.activate()
    parent = importlib.import_module(target.rsplit(".", 1)[0])
    importlib.import_module(target)
    assert installs.modules == [parent.worker]


def test_activating_twice_arms_once(target: str, installs: Installs) -> None:
    boot.activate()
    boot.activate()
    assert len(finders()) == 1
    importlib.import_module(target)
    assert len(installs.modules) == 1


def test_a_worker_module_imported_already_is_installed_at_once(
    target: str, installs: Installs
) -> None:
    module = importlib.import_module(target)
    boot.activate()
    assert (installs.modules, finders()) == ([module], [])


def test_the_worker_runs_whatever_the_install_raises(
    target: str, installs: Installs, caplog: pytest.LogCaptureFixture
) -> None:
    installs.error = RuntimeError("boom")
    boot.activate()
    module = importlib.import_module(target)
    assert module.__version__ == "1.8.9"
    assert "agentworker-companion failed to load; it steps aside" in caplog.text


def test_the_finder_finds_nothing_but_the_target(target: str) -> None:
    finder = boot._WorkerModuleFinder()
    assert finder.find_spec("json", None) is None
    assert finder.find_spec(f"{target}x", None) is None


def test_a_target_nobody_finds_leaves_the_finder_armed(
    monkeypatch: pytest.MonkeyPatch, target: str
) -> None:
    monkeypatch.setattr(boot, "TARGET", f"{target.split('.')[0]}.agents.missing")
    boot.activate()
    importlib.import_module(target.rsplit(".", 1)[0])
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(boot.TARGET)
    assert len(finders()) == 1


def test_the_patching_loader_is_the_real_loader_for_everything_else(target: str) -> None:
    spec = importlib.machinery.PathFinder.find_spec(target.split(".")[0])
    assert spec is not None
    assert isinstance(spec.loader, importlib.machinery.SourceFileLoader)
    wrapped = boot._PatchingLoader(spec.loader)
    get_source, get_filename = wrapped.get_source, wrapped.get_filename  # via __getattr__
    assert callable(get_source)
    assert callable(get_filename)
    assert (get_source(spec.name), get_filename(spec.name)) == ("", spec.origin)
