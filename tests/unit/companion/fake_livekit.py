"""A stand-in for `livekit.agents.worker`: the names and private attributes the companion reads
(hooks.CLASS_NEEDS, hooks.SERVER_NEEDS), with livekit-agents' defaults, and a record of what the
wrapped server saw and sent. livekit-agents itself is not installed in the project's venv."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import math
import socket
import types
from collections.abc import Callable

from livekit.protocol import agent as agent_pb
from livekit.protocol import models as models_pb

from agentworker_companion import hooks


def free_port() -> int:
    """A loopback port nobody listens on (Settings.port must be 1-65535, so not 0)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerType(enum.Enum):
    ROOM = agent_pb.JobType.JT_ROOM
    PUBLISHER = agent_pb.JobType.JT_PUBLISHER


@dataclasses.dataclass
class WorkerPermissions:
    can_publish: bool = True
    can_subscribe: bool = True
    can_publish_data: bool = True
    can_update_metadata: bool = True
    hidden: bool = False


@dataclasses.dataclass(frozen=True)
class ServerEnvOption:
    dev_default: float
    prod_default: float

    @staticmethod
    def getvalue(opt: object, devmode: bool) -> object:
        if isinstance(opt, ServerEnvOption):
            return opt.dev_default if devmode else opt.prod_default
        return opt


@dataclasses.dataclass(frozen=True)
class AcceptArguments:
    identity: str = ""


@dataclasses.dataclass(frozen=True)
class RunningJob:
    job: agent_pb.Job
    accept_arguments: AcceptArguments = AcceptArguments()


def running_job(job_id: str, room: str = "call-1", identity: str = "") -> RunningJob:
    job = agent_pb.Job(id=job_id, room=models_pb.Room(name=room))
    return RunningJob(job=job, accept_arguments=AcceptArguments(identity=identity))


class ProcStatus(enum.Enum):
    SUCCESS = "success"
    FAILED = "failed"


@dataclasses.dataclass
class Proc:
    running_job: RunningJob | None = None
    status: ProcStatus | None = None


class Emitter:
    def __init__(self) -> None:
        self.listeners: dict[str, list[Callable[..., object]]] = {}

    def on(self, event: str, callback: Callable[..., object]) -> None:
        self.listeners.setdefault(event, []).append(callback)

    def emit(self, event: str, *args: object) -> None:
        for callback in self.listeners.get(event, []):
            callback(*args)


class Pool(Emitter):
    def __init__(self) -> None:
        super().__init__()
        self.processes: list[Proc] = []


class Inference:
    def __init__(self) -> None:
        self.alive = True

    def is_alive(self) -> bool:
        return self.alive


class FakeAgentServer(Emitter):
    """livekit-agents' AgentServer as the companion sees it: before run() the attributes of
    __init__ (closed, unregistered); run() makes the pool and connection state, then serves until
    aclose()."""

    def __init__(self) -> None:
        super().__init__()
        self._host = ""
        self._port = 8081
        self._agent_name = "from-code"
        self._server_type = ServerType.ROOM
        self._load_threshold: object = ServerEnvOption(dev_default=math.inf, prod_default=0.7)
        self._drain_timeout = 1800
        self._num_idle_processes = 3
        self._shutdown_process_timeout = 10.0
        self._initialize_process_timeout = 10.0
        self._job_memory_warn_mb = 500.0
        self._job_memory_limit_mb = 0.0
        self._max_retry = 16
        self._permissions = WorkerPermissions()
        self._draining = False
        self._closed = True
        self._id = "unregistered"
        self._connecting = False
        self._connection_failed = False
        self._devmode = False
        self.seen_by_run: dict[str, object] = {}
        """The SERVER_NEEDS attributes as run() found them (after the companion's options)."""
        self.status_updates: list[bool] = []
        """_draining at each status update sent to LiveKit."""
        self.assignments: list[agent_pb.JobAssignment] = []
        self.drains = 0
        self.crash = False
        """run() raises once aclose() let it end."""
        self.started = asyncio.Event()
        self.stop = asyncio.Event()
        self.next_load = 0.0
        """What the load function answers next (`sample_load`)."""

    @property
    def active_jobs(self) -> list[RunningJob]:
        return [p.running_job for p in self._proc_pool.processes if p.running_job]

    async def run(self) -> str:
        self.seen_by_run = {name: getattr(self, name, None) for name in hooks.SERVER_NEEDS}
        self._proc_pool = Pool()
        self._worker_load = 0.0
        self._reserved_slots = 0
        self._pending_assignments: dict[str, object] = {}
        self._inference_executor = Inference()
        self._msg_chan = object()
        self._closed = False
        self.emit("worker_started")
        self.started.set()
        await self.stop.wait()
        self._closed = True
        if self.crash:
            raise RuntimeError("the worker crashed")
        return "run returned"

    async def drain(self, timeout: int | None = None) -> None:  # noqa: ASYNC109  # livekit-agents' own
        self.drains += 1
        if self._draining:
            return
        self._draining = True
        await self._update_worker_status()

    async def aclose(self) -> None:
        self.stop.set()

    def _handle_assignment(self, assignment: agent_pb.JobAssignment) -> None:
        self.assignments.append(assignment)

    async def _invoke_load_fnc(self) -> float:
        return self.next_load

    def _get_effective_load(self) -> float:
        return self._worker_load + self._reserved_slots * 0.1

    async def _update_worker_status(self) -> None:
        self.status_updates.append(self._draining)

    # what a test does to the running server
    def register(self, worker_id: str = "AW_1") -> None:
        self._id = worker_id
        self.emit("worker_registered", worker_id, None)

    async def sample_load(self, load: float) -> None:
        """One tick of livekit-agents' load task: the load function runs, its answer is stored."""
        self.next_load = load
        self._worker_load = await self._invoke_load_fnc()

    def launch(self, job_id: str, *, identity: str = "") -> Proc:
        proc = Proc(running_job=running_job(job_id, identity=identity))
        self._proc_pool.processes.append(proc)
        self._proc_pool.emit("process_job_launched", proc)
        return proc

    def end(self, proc: Proc, status: ProcStatus) -> None:
        proc.status = status
        self._proc_pool.processes.remove(proc)
        self._proc_pool.emit("process_closed", proc)


def worker_module(version: str = "1.8.9") -> types.ModuleType:
    """A fresh `livekit.agents.worker` at `version`, with its own AgentServer class (so that
    `install` wraps that class alone)."""
    module = types.ModuleType("livekit.agents.worker")
    module.__dict__.update(
        __version__=version,
        AgentServer=type("AgentServer", (FakeAgentServer,), {}),
        ServerType=ServerType,
        WorkerPermissions=WorkerPermissions,
        ServerEnvOption=ServerEnvOption,
        WORKER_PROTOCOL_VERSION=1,
    )
    return module
