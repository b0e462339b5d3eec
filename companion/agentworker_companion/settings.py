"""The spec's options as the operator hands them over (AGENT_*, POD_IP), read once.

Pure: a mapping in, a value out. A variable that is set but malformed is named in `problems`
and leaves the worker's own value in place: the companion never stops a worker over it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_PORT = 8081
DEFAULT_RETIRE_TIMEOUT_S = 60.0
WORKER_TYPES = ("ROOM", "PUBLISHER")
"""What livekit-agents' ServerType offers (PARTICIPANT is this project's runtime's alone)."""
PERMISSION_KEYS = ("can_publish", "can_subscribe", "can_publish_data", "can_update_metadata")


@dataclass(frozen=True)
class Settings:
    """What the companion applies to the AgentServer, and how it serves the contract."""

    host: str = ""
    """The contract server's address: AGENT_HOST, else POD_IP, else all interfaces."""
    port: int = DEFAULT_PORT
    control_token: str = field(default="", repr=False)
    """AGENT_CONTROL_TOKEN: enables POST and DELETE /retire."""
    retire_timeout_s: float = DEFAULT_RETIRE_TIMEOUT_S
    agent_name: str = ""
    """Empty: the code's (or LIVEKIT_AGENT_NAME's) name stays."""
    worker_type: str = ""
    load_threshold: float | None = None
    drain_timeout_s: int | None = None
    num_idle_processes: int | None = None
    shutdown_process_timeout_s: float | None = None
    initialize_process_timeout_s: float | None = None
    job_memory_warn_mb: float | None = None
    job_memory_limit_mb: float | None = None
    max_retry: int | None = None
    permissions: dict[str, bool] | None = None
    agentworker: str = ""
    """AGENT_AGENTWORKER: namespace/name, for the log lines."""
    problems: tuple[str, ...] = ()
    """One line per malformed variable (its value is not repeated: it may be a secret)."""


def _number(raw: str) -> float:
    value = float(raw)
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError
    return value


def from_environ(environ: Mapping[str, str]) -> Settings:
    """The settings in `environ`; unset or empty variables keep the defaults."""
    problems: list[str] = []
    found: dict[str, object] = {}

    def number(var: str, key: str, *, integer: bool = False, ceil: bool = False) -> None:
        raw = environ.get(var, "")
        if not raw:
            return
        try:
            value = _number(raw)
            if integer and not value.is_integer():
                raise ValueError
        except ValueError:
            kind = "a whole number" if integer else "a number"
            problems.append(f"{var} is not {kind} of 0 or more; the worker's own value stays")
            return
        found[key] = math.ceil(value) if (integer or ceil) else value

    number("AGENT_PORT", "port", integer=True)
    number("AGENT_RETIRE_TIMEOUT_S", "retire_timeout_s")
    number("AGENT_LOAD_THRESHOLD", "load_threshold")
    number("AGENT_DRAIN_TIMEOUT_S", "drain_timeout_s", ceil=True)  # livekit-agents takes an int
    number("AGENT_NUM_IDLE_PROCESSES", "num_idle_processes", integer=True)
    number("AGENT_SHUTDOWN_PROCESS_TIMEOUT_S", "shutdown_process_timeout_s")
    number("AGENT_INITIALIZE_PROCESS_TIMEOUT_S", "initialize_process_timeout_s")
    number("AGENT_JOB_MEMORY_WARN_MB", "job_memory_warn_mb")
    number("AGENT_JOB_MEMORY_LIMIT_MB", "job_memory_limit_mb")
    number("AGENT_MAX_RETRY", "max_retry", integer=True)
    if found.get("port") == 0 or int(str(found.get("port", DEFAULT_PORT))) > 65535:
        problems.append("AGENT_PORT is not a port (1-65535); 8081 is used")
        found.pop("port")
    worker_type = environ.get("AGENT_WORKER_TYPE", "").upper()
    if worker_type and worker_type not in WORKER_TYPES:
        problems.append(
            f"AGENT_WORKER_TYPE {worker_type} is not one livekit-agents has "
            f"({', '.join(WORKER_TYPES)}); the worker's own type stays"
        )
    elif worker_type:
        found["worker_type"] = worker_type
    raw_permissions = environ.get("AGENT_PERMISSIONS", "")
    if raw_permissions:
        permissions = _permissions(raw_permissions)
        if permissions is None:
            problems.append(
                "AGENT_PERMISSIONS is not a JSON object of "
                f"{', '.join(PERMISSION_KEYS)} and hidden as booleans; the worker's own stay"
            )
        else:
            found["permissions"] = permissions
    return Settings(
        host=environ.get("AGENT_HOST") or environ.get("POD_IP") or "",
        control_token=environ.get("AGENT_CONTROL_TOKEN", ""),
        agent_name=environ.get("AGENT_NAME", ""),
        agentworker=environ.get("AGENT_AGENTWORKER", ""),
        problems=tuple(problems),
        **found,  # type: ignore[arg-type]  # keys and types come from the calls above
    )


def _permissions(raw: str) -> dict[str, bool] | None:
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    allowed = (*PERMISSION_KEYS, "hidden")
    if not isinstance(data, dict) or any(
        key not in allowed or not isinstance(value, bool) for key, value in data.items()
    ):
        return None
    return {str(key): bool(value) for key, value in data.items()}
