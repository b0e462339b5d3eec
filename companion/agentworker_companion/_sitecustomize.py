"""Installed as `sitecustomize.py` at the root of the companion's directory, which the operator
puts first on PYTHONPATH: every interpreter of the pod imports it at start-up.

It activates the companion (which only arms an import hook: cheap, and nothing happens unless
livekit-agents' worker is imported), then runs the image's own `sitecustomize`, if it has one,
since this file shadows it.
"""

import importlib.machinery
import importlib.util
import os
import sys


def _chain() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["sitecustomize"] = module
    spec.loader.exec_module(module)


try:
    from agentworker_companion import boot

    boot.activate()
except Exception as error:  # never break the interpreter it was loaded into
    sys.stderr.write(f"agentworker-companion: not loaded: {error!r}\n")
_chain()
