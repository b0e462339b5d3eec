"""worker_runtime: a slim LiveKit agent worker with livekit-agents' public names.

`from worker_runtime import WorkerOptions, JobContext, JobRequest, JobProcess, WorkerType,
WorkerPermissions, cli` is all an agent file written for the seeds needs; one written from
today's LiveKit docs imports `AgentServer` (and `ServerType`, `AgentServerPermissions`) too.
`Worker` (and with it aiohttp) is imported only when asked for, so that job processes, which
import the agent file, stay small.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

from worker_runtime.job import AutoSubscribe, JobContext, JobProcess
from worker_runtime.options import WorkerOptions, WorkerPermissions, WorkerType
from worker_runtime.request import JobRequest
from worker_runtime.server import AgentServer, AgentServerPermissions, ServerType
from worker_runtime.version import __version__

if TYPE_CHECKING:
    from worker_runtime import cli as cli
    from worker_runtime.worker import Worker as Worker

__all__ = [
    "AgentServer",
    "AgentServerPermissions",
    "AutoSubscribe",
    "JobContext",
    "JobProcess",
    "JobRequest",
    "ServerType",
    "Worker",
    "WorkerOptions",
    "WorkerPermissions",
    "WorkerType",
    "__version__",
    "cli",
]


def __getattr__(name: str) -> ModuleType | type:
    if name == "cli":
        return importlib.import_module("worker_runtime.cli")
    if name == "Worker":
        worker_class: type = importlib.import_module("worker_runtime.worker").Worker
        return worker_class
    raise AttributeError(f"module 'worker_runtime' has no attribute {name!r}")
