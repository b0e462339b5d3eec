"""Arms the companion: a post-import hook on livekit-agents' worker module.

Runs in every interpreter the pod starts (job processes included), so it does no more than
check one variable and put a finder on `sys.meta_path`; the finder wraps the loader of
`livekit.agents.worker` alone, and the wrapping happens after that module has run, whatever
imports it (`from livekit.agents import ...`, `cli.run_app`, the user's code).

It imports nothing beyond what every interpreter has loaded at start-up (not `logging`, not
`importlib.abc`, which pulls in importlib.resources and tempfile): in a process that never
imports livekit-agents, such as multiprocessing's resource tracker, it costs next to nothing.
"""

from __future__ import annotations

import os
import sys

from agentworker_companion import ENABLE_VARIABLE

TYPE_CHECKING = False  # typing itself is not loaded at start-up
if TYPE_CHECKING:
    import importlib.machinery
    from collections.abc import Sequence
    from importlib.abc import Loader as _LoaderBase
    from importlib.abc import MetaPathFinder as _FinderBase
    from types import ModuleType
else:  # the protocols are duck-typed: sys.meta_path and spec.loader take any such object
    _LoaderBase = _FinderBase = object

TARGET = "livekit.agents.worker"
_armed = False


def activate() -> None:
    """Arm the hook when the operator asked for the companion; idempotent."""
    global _armed
    if _armed or os.environ.get(ENABLE_VARIABLE) != "1":
        return
    _armed = True
    loaded = sys.modules.get(TARGET)
    if loaded is not None:
        _patch(loaded)
        return
    sys.meta_path.insert(0, _WorkerModuleFinder())


def _patch(module: ModuleType) -> None:
    try:
        from agentworker_companion import hooks

        hooks.install(module)
    except Exception:  # the user's worker must run whatever happens here
        import logging

        log = logging.getLogger("agentworker.companion")
        log.exception("agentworker-companion failed to load; it steps aside")


class _WorkerModuleFinder(_FinderBase):
    """Finds nothing itself: it asks the other finders for livekit.agents.worker and wraps the
    loader they return, so that the module is patched as soon as it has executed."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader)
                sys.meta_path.remove(self)  # one module, once
                return spec
        return None


class _PatchingLoader(_LoaderBase):
    def __init__(self, inner: _LoaderBase) -> None:
        self._inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._inner.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._inner.exec_module(module)
        _patch(module)

    def __getattr__(self, name: str) -> object:
        # get_source, get_resource_reader and the rest: the real loader's
        return getattr(self._inner, name)
