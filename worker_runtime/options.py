"""Worker options: the seeds' `WorkerOptions`, validated once, and their AGENT_* overrides.

Owns the option names, their defaults and their validation, and the parsing of the environment
variables the operator sets. Pure: it reads no environment by itself (callers pass a mapping),
opens nothing, and imports no aiohttp, prometheus_client, psutil or multiprocessing.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field, fields, replace
from typing import Any, TypedDict, cast
from urllib.parse import urlsplit

from livekit.protocol import agent as agent_pb

# Typed loosely so that this pure module needs none of the job process's modules.
EntrypointFnc = Callable[..., Awaitable[None]]
"""`async def entrypoint(ctx: JobContext) -> None`."""
RequestFnc = Callable[..., Awaitable[None]]
"""`async def request_fnc(req: JobRequest) -> None`."""
PrewarmFnc = Callable[..., Any]
"""`def prewarm(proc: JobProcess) -> None`."""
LoadFnc = Callable[..., float]
"""Called with no argument, or with the worker (which has `active_jobs`); returns 0.0 to 1.0."""

DEFAULT_PORT = 8081
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class InvalidOption(ValueError):
    """An option or an AGENT_* variable has a value that cannot work; the message names it."""


class WorkerType(enum.Enum):
    """What one job is: one per room, one per publisher, or one per participant."""

    ROOM = agent_pb.JT_ROOM
    PUBLISHER = agent_pb.JT_PUBLISHER
    PARTICIPANT = agent_pb.JT_PARTICIPANT


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerPermissions:
    """What the agent participant may do in the room (livekit-agents' names and defaults)."""

    can_publish: bool = True
    """Publish audio and video tracks. Default True."""
    can_subscribe: bool = True
    """Subscribe to other participants' tracks. Default True."""
    can_publish_data: bool = True
    """Send data packets. Default True."""
    can_update_metadata: bool = True
    """Update its own name, metadata and attributes. Default True."""
    can_publish_sources: tuple[int, ...] = ()
    """TrackSource values it may publish; empty means all. Default (); a list is taken as a
    tuple, as livekit-agents types it a list."""
    hidden: bool = False
    """Invisible to the other participants (and then unable to publish). Default False."""

    def __post_init__(self) -> None:
        if isinstance(self.can_publish_sources, list):
            object.__setattr__(self, "can_publish_sources", tuple(self.can_publish_sources))
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "can_publish_sources":
                if not isinstance(value, tuple) or not all(_is_int(v) for v in value):
                    raise InvalidOption(
                        f"permissions.{f.name}: {value!r} is not a list of TrackSource ints"
                    )
            elif not isinstance(value, bool):
                raise InvalidOption(f"permissions.{f.name}: {value!r} is not a bool")


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """Everything a worker needs; invalid values raise `InvalidOption` naming the option.

    Only `entrypoint_fnc` may be passed by position, as livekit-agents allows; the rest are
    keyword-only.
    """

    entrypoint_fnc: EntrypointFnc
    """`async def entrypoint(ctx: JobContext)`, run in a prewarmed process for each job."""
    _: KW_ONLY
    request_fnc: RequestFnc | None = None
    """`async def request_fnc(req: JobRequest)`: accept or reject; None accepts every job."""
    prewarm_fnc: PrewarmFnc | None = None
    """`def prewarm(proc: JobProcess)`, run once in each process before it takes a job."""
    load_fnc: LoadFnc | None = None
    """Current load, 0.0 to 1.0. None: average CPU utilisation over a 5 s window (seeds)."""
    load_threshold: float = 0.7
    """Above this load the worker reports itself full. Default 0.7 (seeds); inf disables."""
    drain_timeout: float = 1800.0
    """Seconds to wait for running jobs after SIGTERM. Default 30 minutes (seeds)."""
    worker_type: WorkerType = WorkerType.ROOM
    """One job per room (ROOM), per publisher (PUBLISHER) or per participant. Default ROOM."""
    permissions: WorkerPermissions = field(default_factory=WorkerPermissions)
    """The agent participant's permissions. Default: publish, subscribe, data, metadata."""
    agent_name: str = ""
    """Name for explicit dispatch; empty means automatic dispatch. Default ""."""
    num_idle_processes: int = 3
    """Prewarmed processes kept idle. Default 3 (seeds' production value)."""
    shutdown_process_timeout: float = 60.0
    """Seconds a job's shutdown callbacks get before the process is killed. Default 60 (seeds)."""
    initialize_process_timeout: float = 10.0
    """Seconds a new process (its fork and prewarm_fnc) may take once its start began; time
    queued behind other starts does not count. Default 10 (livekit-agents)."""
    job_memory_warn_mb: float = 1000.0
    """RSS in MB above which a job is logged as heavy. Default 1000 (livekit-agents); 0 off."""
    job_memory_limit_mb: float = 0.0
    """RSS in MB above which a job is ended and failed. Default 0, off (livekit-agents)."""
    max_retry: int = 16
    """Failed connection attempts in a row before the worker gives up: it then takes no new job,
    lets the running ones finish (up to drain_timeout) while it keeps retrying, and exits
    non-zero. Default 16."""
    retire_timeout: float = 60.0
    """Seconds a retirement (POST /retire, the operator's victim handshake) lasts when no SIGTERM
    follows; the worker then takes jobs again. Default 60."""
    ws_url: str = ""
    """LiveKit server URL (ws, wss, http or https); the CLI fills it from LIVEKIT_URL."""
    api_key: str = ""
    """LiveKit API key; the CLI fills it from LIVEKIT_API_KEY."""
    api_secret: str = field(default="", repr=False)
    """LiveKit API secret; the CLI fills it from LIVEKIT_API_SECRET. Never logged."""
    http_proxy: str | None = field(default=None, repr=False)
    """Proxy (http:// or https:// URL, credentials allowed) for the connection to LiveKit,
    used whatever HTTPS_PROXY, HTTP_PROXY and NO_PROXY say; "" connects directly. Default
    None: those variables decide (livekit-agents' option). Hidden from repr: it may hold a
    password."""
    host: str = "0.0.0.0"
    """Address of the HTTP server. Default all interfaces (POD_IP when the CLI sees it)."""
    port: int = DEFAULT_PORT
    """Port of the HTTP server (/healthz, /readyz, /worker, /metrics). Default 8081; 0 random."""
    log_level: str = "INFO"
    """DEBUG, INFO, WARNING, ERROR or CRITICAL, any case; AGENT_LOG_LEVEL and --log-level win.
    Default INFO."""
    preload_modules: tuple[str, ...] = ()
    """Modules the fork server imports once, so that every job process starts with them
    (livekit-agents' option); the agent's own modules are always preloaded. Default (); a
    list is taken as a tuple."""

    def __post_init__(self) -> None:
        if isinstance(self.preload_modules, list):
            object.__setattr__(self, "preload_modules", tuple(self.preload_modules))
        validate(self)


def _check(condition: bool, name: str, value: object, expected: str) -> None:
    if not condition:
        raise InvalidOption(f"{name}: {value!r} is not {expected}")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_proxy_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number
        return False


def _without_credentials(value: object) -> object:
    """`value` for an error message: a password in a URL's user info must not reach the log."""
    if isinstance(value, str):
        return re.sub(r"(?<=://)[^/@]*@", "***@", value)
    return value


def validate(opts: WorkerOptions) -> None:
    """Raise `InvalidOption` for the first option whose value cannot work."""
    _check(callable(opts.entrypoint_fnc), "entrypoint_fnc", opts.entrypoint_fnc, "callable")
    for name in ("request_fnc", "prewarm_fnc", "load_fnc"):
        value = getattr(opts, name)
        _check(value is None or callable(value), name, value, "callable or None")
    lt = opts.load_threshold
    _check(_is_number(lt) and lt > 0, "load_threshold", lt, "a number above 0 (inf disables)")
    for name in ("drain_timeout", "job_memory_warn_mb", "job_memory_limit_mb"):
        value = getattr(opts, name)
        _check(_is_number(value) and 0 <= value < math.inf, name, value, "a number >= 0")
    for name in ("shutdown_process_timeout", "initialize_process_timeout", "retire_timeout"):
        value = getattr(opts, name)
        _check(_is_number(value) and 0 < value < math.inf, name, value, "a number of seconds > 0")
    for name in ("num_idle_processes", "max_retry"):
        value = getattr(opts, name)
        _check(_is_int(value) and value >= 0, name, value, "an int >= 0")
    _check(
        isinstance(opts.worker_type, WorkerType), "worker_type", opts.worker_type, "a WorkerType"
    )
    perms = opts.permissions
    _check(isinstance(perms, WorkerPermissions), "permissions", perms, "WorkerPermissions")
    _check(isinstance(opts.agent_name, str), "agent_name", opts.agent_name, "a str")
    url = opts.ws_url
    _check(
        isinstance(url, str)
        and (not url or url.startswith(("ws://", "wss://", "http://", "https://"))),
        "ws_url",
        url,
        "a ws://, wss://, http:// or https:// URL",
    )
    _check(isinstance(opts.api_key, str), "api_key", opts.api_key, "a str")
    _check(isinstance(opts.api_secret, str), "api_secret", "<hidden>", "a str")
    proxy = opts.http_proxy
    _check(
        proxy is None or proxy == "" or _is_proxy_url(proxy),
        "http_proxy",
        _without_credentials(proxy),
        'None, "" or an http:// or https:// proxy URL',
    )
    _check(isinstance(opts.host, str), "host", opts.host, "a str")
    _check(_is_int(opts.port) and 0 <= opts.port <= 65535, "port", opts.port, "a port 0-65535")
    level = opts.log_level
    _check(
        isinstance(level, str) and level.strip().upper() in _LOG_LEVELS,
        "log_level",
        level,
        f"one of {', '.join(_LOG_LEVELS)}",
    )
    modules = opts.preload_modules
    _check(
        isinstance(modules, tuple) and all(isinstance(m, str) and m for m in modules),
        "preload_modules",
        modules,
        "a list of module names",
    )


class OptionOverrides(TypedDict, total=False):
    """Options read from the environment; only the variables that are set appear."""

    agent_name: str
    worker_type: WorkerType
    load_threshold: float
    drain_timeout: float
    num_idle_processes: int
    shutdown_process_timeout: float
    initialize_process_timeout: float
    job_memory_warn_mb: float
    job_memory_limit_mb: float
    permissions: WorkerPermissions
    host: str
    port: int
    max_retry: int
    retire_timeout: float
    log_level: str
    ws_url: str
    api_key: str
    api_secret: str


def _parse_float(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise InvalidOption(f"{name}: {raw!r} is not a number") from None


def _parse_int(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise InvalidOption(f"{name}: {raw!r} is not an integer") from None


def _parse_worker_type(name: str, raw: str) -> WorkerType:
    key = raw.strip().upper().removeprefix("JT_")
    if key not in WorkerType.__members__:
        raise InvalidOption(f"{name}: {raw!r} is not one of ROOM, PUBLISHER, PARTICIPANT")
    return WorkerType[key]


def _parse_permissions(name: str, raw: str) -> WorkerPermissions:
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        raise InvalidOption(f"{name}: {raw!r} is not a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidOption(f"{name}: {raw!r} is not a JSON object")
    known = {f.name for f in fields(WorkerPermissions)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InvalidOption(f"{name}: unknown keys {unknown}; known: {sorted(known)}")
    if isinstance(data.get("can_publish_sources"), list):
        data["can_publish_sources"] = tuple(data["can_publish_sources"])
    try:
        return WorkerPermissions(**data)
    except InvalidOption as exc:
        raise InvalidOption(f"{name}: {exc}") from None


_FLOATS = {
    "AGENT_LOAD_THRESHOLD": "load_threshold",
    "AGENT_DRAIN_TIMEOUT_S": "drain_timeout",
    "AGENT_SHUTDOWN_PROCESS_TIMEOUT_S": "shutdown_process_timeout",
    "AGENT_INITIALIZE_PROCESS_TIMEOUT_S": "initialize_process_timeout",
    "AGENT_JOB_MEMORY_WARN_MB": "job_memory_warn_mb",
    "AGENT_JOB_MEMORY_LIMIT_MB": "job_memory_limit_mb",
    "AGENT_RETIRE_TIMEOUT_S": "retire_timeout",
}
_INTS = {"AGENT_NUM_IDLE_PROCESSES": "num_idle_processes", "AGENT_PORT": "port"}
_INTS["AGENT_MAX_RETRY"] = "max_retry"
_STRINGS = {
    "AGENT_NAME": "agent_name",
    "LIVEKIT_URL": "ws_url",
    "LIVEKIT_API_KEY": "api_key",
    "LIVEKIT_API_SECRET": "api_secret",
    "AGENT_LOG_LEVEL": "log_level",
}


def options_from_env(environ: Mapping[str, str]) -> OptionOverrides:
    """The options set by AGENT_*, LIVEKIT_* and POD_IP; a malformed value names its variable."""
    found: dict[str, object] = {}
    for var, name in _STRINGS.items():
        if environ.get(var):
            found[name] = environ[var]
    for var, name in _FLOATS.items():
        if environ.get(var):
            found[name] = _parse_float(var, environ[var])
    for var, name in _INTS.items():
        if environ.get(var):
            found[name] = _parse_int(var, environ[var])
    if environ.get("AGENT_WORKER_TYPE"):
        found["worker_type"] = _parse_worker_type("AGENT_WORKER_TYPE", environ["AGENT_WORKER_TYPE"])
    if environ.get("AGENT_PERMISSIONS"):
        found["permissions"] = _parse_permissions("AGENT_PERMISSIONS", environ["AGENT_PERMISSIONS"])
    host = environ.get("AGENT_HOST") or environ.get("POD_IP")
    if host:
        found["host"] = host
    return cast(OptionOverrides, found)  # the keys and types come from the tables above


_ENV_NAME_OF = {name: var for table in (_FLOATS, _INTS, _STRINGS) for var, name in table.items()}
_ENV_NAME_OF |= {"worker_type": "AGENT_WORKER_TYPE", "permissions": "AGENT_PERMISSIONS"}
_ENV_NAME_OF["host"] = "AGENT_HOST"


def apply_overrides(opts: WorkerOptions, overrides: OptionOverrides) -> WorkerOptions:
    """`opts` with `overrides` applied; an invalid result names the environment variable."""
    try:
        return replace(opts, **overrides)
    except InvalidOption as exc:
        option = str(exc).split(":", 1)[0]
        var = _ENV_NAME_OF.get(option)
        if var is None or option not in overrides:
            raise
        raise InvalidOption(f"{var} ({exc})") from None


def parse_log_level(raw: str, name: str = "--log-level") -> str:
    """The upper-case level name; DEBUG, INFO, WARNING, ERROR or CRITICAL."""
    level = raw.strip().upper()
    if level not in _LOG_LEVELS:
        raise InvalidOption(f"{name}: {raw!r} is not one of {', '.join(_LOG_LEVELS)}")
    return level
