"""AgentServer: livekit-agents' current names for a worker, mapped onto `WorkerOptions`.

Owns what an agent file written from today's LiveKit docs uses: `AgentServer(...)` with the
server options as keyword arguments, `@server.rtc_session(...)`, the `setup_fnc` and `load_fnc`
properties, `ServerType` and `AgentServerPermissions`. It turns them into one `WorkerOptions`,
which stays the one place where options are validated and which the AGENT_* variables override;
an option the runtime cannot honour raises `InvalidOption` saying why, never passes unnoticed.
No I/O and no aiohttp here: agent files import this module, and every job process imports them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, Unpack, overload

from worker_runtime.job import JobContext, JobProcess, SessionEnd
from worker_runtime.options import (
    InvalidOption,
    LoadFnc,
    WorkerOptions,
    WorkerPermissions,
    WorkerType,
)
from worker_runtime.request import JobRequest

if TYPE_CHECKING:
    from worker_runtime.pool import RunningJob

ServerType = WorkerType
"""livekit-agents' current name for `WorkerType` (its docs' `ServerType.ROOM`, `.PUBLISHER`)."""
AgentServerPermissions = WorkerPermissions
"""The name LiveKit's docs give `WorkerPermissions`."""

Entrypoint = Callable[[JobContext], Awaitable[None]]
"""`async def my_agent(ctx: JobContext)`, what `rtc_session` registers."""
RequestHandler = Callable[[JobRequest], Awaitable[None]]
"""`async def on_request(req: JobRequest)`: accept or reject a job offer."""

SESSION_END_TIMEOUT_S = 300.0
"""livekit-agents' default for `session_end_timeout`."""


class ServerArguments(TypedDict, total=False):
    """`AgentServer`'s keyword arguments: livekit-agents' names (1.x), each optional.

    Those also in `WorkerOptions` keep its meaning and default; None (and "" for host) means
    that default. `setup_fnc` is `prewarm_fnc`. `session_end_timeout` bounds `on_session_end`.
    The last four are refused unless they ask for what the runtime does anyway.
    """

    load_threshold: float
    job_memory_warn_mb: float
    job_memory_limit_mb: float
    drain_timeout: float
    num_idle_processes: int
    shutdown_process_timeout: float
    session_end_timeout: float
    initialize_process_timeout: float
    permissions: WorkerPermissions
    max_retry: int
    ws_url: str | None
    api_key: str | None
    api_secret: str | None
    http_proxy: str | None
    host: str
    port: int
    setup_fnc: Callable[[JobProcess], Any] | None
    load_fnc: LoadFnc | None
    preload_modules: list[str] | None
    log_level: str
    job_executor_type: object
    multiprocessing_context: str
    prometheus_port: int | None
    prometheus_multiproc_dir: str | None


_SAME_NAME = frozenset(
    {
        "load_threshold",
        "job_memory_warn_mb",
        "job_memory_limit_mb",
        "drain_timeout",
        "num_idle_processes",
        "shutdown_process_timeout",
        "initialize_process_timeout",
        "permissions",
        "max_retry",
        "ws_url",
        "api_key",
        "api_secret",
        "http_proxy",
        "host",
        "port",
        "load_fnc",
        "preload_modules",
        "log_level",
    }
)
_LIVEKIT_NAME_OF = {
    "prewarm_fnc": "setup_fnc",
    "entrypoint_fnc": "rtc_session",
    "request_fnc": "on_request",
    "worker_type": "type",
}
"""WorkerOptions field -> the name an AgentServer user wrote, for error messages."""
_ONLY_VALUE = {
    "job_executor_type": ("process", "every job runs in a process of its own"),
    "multiprocessing_context": ("forkserver", "job processes are forked from a fork server"),
}
_REFUSED = {
    "prometheus_port": "metrics are served at /metrics on the HTTP server's port (AGENT_PORT)",
    "prometheus_multiproc_dir": "/metrics has the worker's metrics, none from job processes",
}


def _fields_of(arguments: Mapping[str, object]) -> dict[str, object]:
    """The WorkerOptions fields that AgentServer's keyword arguments set."""
    found: dict[str, object] = {}
    for name, value in arguments.items():
        if name in _REFUSED:
            if value is not None:
                raise InvalidOption(f"{name}: not supported by worker_runtime ({_REFUSED[name]})")
        elif name in _ONLY_VALUE:
            wanted, why = _ONLY_VALUE[name]
            if str(getattr(value, "value", value)).lower() != wanted:
                raise InvalidOption(f"{name}: {value!r} is not supported ({why})")
        elif name in _SAME_NAME or name == "setup_fnc":
            if value is not None and not (name == "host" and value == ""):
                found["prewarm_fnc" if name == "setup_fnc" else name] = value
        else:
            raise TypeError(f"AgentServer() got an unexpected keyword argument {name!r}")
    return found


def _session_end_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InvalidOption(f"session_end_timeout: {value!r} is not a number of seconds > 0")
    return float(value)


class RunningWorker(Protocol):
    """What an AgentServer sees of the worker that runs it."""

    @property
    def active_jobs(self) -> list[RunningJob]: ...


async def _no_rtc_session(ctx: JobContext) -> None:
    """Stands in until `rtc_session` registers one; `worker_options` never hands it out."""
    raise RuntimeError("no rtc_session was registered")


class AgentServer:
    """livekit-agents' `AgentServer`: the server options, then one `rtc_session` entrypoint.

    `cli.run_app(server)` runs it as it runs `WorkerOptions` (`worker_options()` is what it
    runs): the AGENT_* variables and the flags win over what the code sets. `load_fnc` gets
    the running worker, which has `active_jobs` as livekit-agents' server does; so has this
    server, in the worker's process, once the CLI attached the worker to it.
    """

    def __init__(self, **arguments: Unpack[ServerArguments]) -> None:
        given: dict[str, object] = dict(arguments)
        timeout = given.pop("session_end_timeout", SESSION_END_TIMEOUT_S)
        self._session_end_timeout = _session_end_timeout(timeout)
        self._entrypoint: Entrypoint | None = None
        self._worker: RunningWorker | None = None
        self._options = WorkerOptions(_no_rtc_session)
        self._change(_fields_of(given))

    @classmethod
    def from_server_options(cls, options: WorkerOptions) -> AgentServer:
        """The server that runs `options`, as livekit-agents converts its WorkerOptions."""
        server = cls()
        server._options = options
        server._entrypoint = getattr(options.entrypoint_fnc, "__wrapped__", options.entrypoint_fnc)
        return server

    def _change(self, changes: Mapping[str, Any]) -> None:
        """Apply `changes` (the user's values, unchecked: WorkerOptions checks each one)."""
        try:
            self._options = replace(self._options, **changes)
        except InvalidOption as exc:
            option, sep, rest = str(exc).partition(":")
            raise InvalidOption(f"{_LIVEKIT_NAME_OF.get(option, option)}{sep}{rest}") from None

    @property
    def setup_fnc(self) -> Callable[[JobProcess], Any] | None:
        """`def prewarm(proc: JobProcess)`, run once in each job process (`prewarm_fnc`)."""
        return self._options.prewarm_fnc

    @setup_fnc.setter
    def setup_fnc(self, value: Callable[[JobProcess], Any] | None) -> None:
        self._change({"prewarm_fnc": value})

    @property
    def load_fnc(self) -> LoadFnc | None:
        """The load, 0.0 to 1.0, from no argument or the worker; None: CPU over 5 s."""
        return self._options.load_fnc

    @load_fnc.setter
    def load_fnc(self, value: LoadFnc | None) -> None:
        self._change({"load_fnc": value})

    @overload
    def rtc_session(
        self,
        func: Entrypoint,
        *,
        agent_name: str = "",
        type: WorkerType = WorkerType.ROOM,
        on_request: RequestHandler | None = None,
        on_session_end: Entrypoint | None = None,
        on_simulation_end: object = None,
    ) -> Entrypoint: ...

    @overload
    def rtc_session(
        self,
        *,
        agent_name: str = "",
        type: WorkerType = WorkerType.ROOM,
        on_request: RequestHandler | None = None,
        on_session_end: Entrypoint | None = None,
        on_simulation_end: object = None,
    ) -> Callable[[Entrypoint], Entrypoint]: ...

    def rtc_session(
        self,
        func: Entrypoint | None = None,
        *,
        agent_name: str = "",
        type: WorkerType = WorkerType.ROOM,
        on_request: RequestHandler | None = None,
        on_session_end: Entrypoint | None = None,
        on_simulation_end: object = None,
    ) -> Entrypoint | Callable[[Entrypoint], Entrypoint]:
        """Register the entrypoint: `@server.rtc_session(...)` or `server.rtc_session(fn)`.

        `agent_name` (explicit dispatch), `type` (`worker_type`) and `on_request`
        (`request_fnc`) are WorkerOptions'. `on_session_end(ctx)` runs when the job ends, first
        of its shutdown callbacks, within `session_end_timeout` and `shutdown_process_timeout`.
        One per server; the function comes back unchanged.
        """
        if on_simulation_end is not None:
            raise InvalidOption(
                "on_simulation_end: not supported by worker_runtime (agent simulations run "
                "under LiveKit's `lk simulate`)"
            )
        if on_session_end is not None and not callable(on_session_end):
            raise InvalidOption(f"on_session_end: {on_session_end!r} is not callable or None")

        def register(f: Entrypoint) -> Entrypoint:
            if self._entrypoint is not None:
                raise RuntimeError("an AgentServer takes one rtc_session, and has one already")
            entry: Entrypoint = f
            if on_session_end is not None:
                entry = SessionEnd(f, on_session_end, timeout_s=self._session_end_timeout)
            changes = {"entrypoint_fnc": entry, "request_fnc": on_request, "worker_type": type}
            self._change({**changes, "agent_name": agent_name})
            self._entrypoint = f
            return f

        return register if func is None else register(func)

    def worker_options(self) -> WorkerOptions:
        """The `WorkerOptions` this server stands for; `InvalidOption` before `rtc_session`."""
        if self._entrypoint is None:
            raise InvalidOption(
                "rtc_session: no entrypoint registered; decorate it with @server.rtc_session()"
            )
        return self._options

    def registered(self, entrypoint: object) -> bool:
        """Whether `rtc_session` registered `entrypoint` on this server."""
        return self._entrypoint is not None and self._entrypoint is entrypoint

    def attach(self, worker: RunningWorker) -> None:
        """Called by the CLI with the worker that runs this server's options."""
        self._worker = worker

    @property
    def active_jobs(self) -> list[RunningJob]:
        """The jobs of the worker running this server; none outside the worker's process."""
        return [] if self._worker is None else self._worker.active_jobs


def server_of(entrypoint: object) -> AgentServer | None:
    """The AgentServer of `entrypoint`'s module that registered it, if there is one.

    So that `agent-worker start agent:my_agent` naming a decorated function runs it with its
    server's options rather than with none of them. An `on_session_end` wrapper counts as the
    entrypoint it wraps.
    """
    entrypoint = getattr(entrypoint, "__wrapped__", entrypoint)
    module = sys.modules.get(getattr(entrypoint, "__module__", None) or "")
    if module is None:
        return None
    servers = (v for v in vars(module).values() if isinstance(v, AgentServer))
    return next((s for s in servers if s.registered(entrypoint)), None)
