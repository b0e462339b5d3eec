"""worker_runtime: a slim LiveKit agent worker with livekit-agents' public names.

`from worker_runtime import WorkerOptions, JobContext, JobRequest, JobProcess, WorkerType,
WorkerPermissions, cli` is all an agent file needs. `cli` (and with it aiohttp) is imported only
when asked for, so that job processes stay small.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from worker_runtime.job import AutoSubscribe, JobContext, JobProcess
from worker_runtime.options import WorkerOptions, WorkerPermissions, WorkerType
from worker_runtime.request import JobRequest
from worker_runtime.version import __version__

if TYPE_CHECKING:
    from worker_runtime import cli as cli

__all__ = [
    "AutoSubscribe",
    "JobContext",
    "JobProcess",
    "JobRequest",
    "WorkerOptions",
    "WorkerPermissions",
    "WorkerType",
    "__version__",
    "cli",
]


def __getattr__(name: str) -> ModuleType:
    if name == "cli":
        return importlib.import_module("worker_runtime.cli")
    raise AttributeError(f"module 'worker_runtime' has no attribute {name!r}")
