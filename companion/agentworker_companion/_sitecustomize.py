"""Installed as `sitecustomize.py` at the root of the companion's directory, which the operator
puts first on PYTHONPATH: every interpreter of the pod imports it at start-up.

It activates the companion (which only arms an import hook: cheap, and nothing happens unless
livekit-agents' worker is imported), then runs the image's own `sitecustomize`, if it has one,
since this file shadows it.

It imports what start-up has loaded already (importlib.machinery is the frozen import system;
importlib.util would pull in contextlib, functools and collections in every process).
"""

import importlib.machinery
import os
import sys


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = type(sys)(spec.name)  # importlib.util.module_from_spec, for a source module
    module.__spec__, module.__loader__ = spec, spec.loader
    module.__file__ = spec.origin
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


try:
    from agentworker_companion import boot

    boot.activate()
except Exception as error:  # never break the interpreter it was loaded into
    sys.stderr.write(f"agentworker-companion: not loaded: {error!r}\n")
_chain()
