"""The two runtimes under test: how to start the benchmark agent under each of them.

Owns the commands, the environment and the log markers of both workers, and where the LiveKit
server's address and credentials come from. It starts nothing itself.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import report
from bench.workers import RuntimeSpec

BENCH_DIR = Path(__file__).resolve().parent
_STRIPPED_ENV = ("AGENT_", "LIVEKIT_", "BENCH_", "PYTHONPATH", "POD_IP")


class MissingServer(RuntimeError):
    """No LiveKit server to measure against; the message says how to get one."""


@dataclass(frozen=True, slots=True)
class LiveKitServer:
    """The server both workers register with, and its credentials."""

    url: str
    api_key: str
    api_secret: str = field(repr=False)
    log_path: Path | None = None
    """The server's own log (the rig's), for its view of when each worker registered."""


def server_from_env() -> LiveKitServer:
    missing = [
        v for v in ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET") if not os.environ.get(v)
    ]
    if missing:
        raise MissingServer(f"{', '.join(missing)} not set: run `make bench` (it starts the rig)")
    log = Path(os.environ.get("RIG_LOGS", BENCH_DIR.parent / ".rig" / "logs")) / "livekit.log"
    return LiveKitServer(
        os.environ["LIVEKIT_URL"],
        os.environ["LIVEKIT_API_KEY"],
        os.environ["LIVEKIT_API_SECRET"],
        log if log.exists() else None,
    )


def server_registrations(log_path: Path | None) -> dict[str, float]:
    """Worker id -> Unix time of the server's "worker registered" line (empty without a log).

    A line is `<ISO time>\t<level>\t<logger>\t<caller>\t<message>\t<JSON fields>`."""
    if log_path is None:
        return {}
    found: dict[str, float] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 6 or parts[4] != "worker registered":
            continue
        with contextlib.suppress(ValueError, KeyError, TypeError):
            stamp = datetime.datetime.fromisoformat(parts[0].replace("Z", "+00:00"))
            found[str(json.loads(parts[5])["workerID"])] = stamp.timestamp()
    return found


def build_specs(
    server: LiveKitServer, workdir: Path, official_python: Path, idle_processes: int, run_id: str
) -> dict[str, RuntimeSpec]:
    """Both runtimes' commands. Their import path holds only `bench` (a link to this package):
    the repository root on sys.path would shadow the standard library's `operator`."""
    import_root = workdir / "path"
    import_root.mkdir()
    (import_root / "bench").symlink_to(BENCH_DIR, target_is_directory=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED_ENV)}
    base |= {
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "PYTHONPATH": str(import_root),
        "PYTHONUNBUFFERED": "1",
    }
    ours = RuntimeSpec(
        key=report.OURS,
        argv=(
            str(Path(sys.executable).with_name("agent-worker")),
            "start",
            "bench.agents.ours:options",
        ),
        env=base
        | {
            "AGENT_NAME": f"bench-ours-{run_id}",
            "AGENT_NUM_IDLE_PROCESSES": str(idle_processes),
            "AGENT_HOST": "127.0.0.1",
            "BENCH_RECORD_FILE": str(workdir / "ours.entries"),
        },
        port_env="AGENT_PORT",
        cwd=import_root,
        registered_marker="registered with LiveKit",
        reports_idle_processes=True,
        worker_id_key="worker_id",
        offered_message='"message": "job offered"',
        log_time_key="time",
    )
    official = RuntimeSpec(
        key=report.OFFICIAL,
        argv=(str(official_python), "-m", "bench.agents.official", "start"),
        env=base
        | {
            "BENCH_AGENT_NAME": f"bench-lk-{run_id}",
            "BENCH_NUM_IDLE_PROCESSES": str(idle_processes),
            "BENCH_RECORD_FILE": str(workdir / "official.entries"),
        },
        port_env="BENCH_PORT",
        cwd=import_root,
        registered_marker="registered worker",
        reports_idle_processes=False,
        worker_id_key="id",
        offered_message='"message": "received job request"',
        log_time_key="timestamp",
        warm_failure_marker="timed out waiting for idle processes",
    )
    return {ours.key: ours, official.key: official}


def agent_name(spec: RuntimeSpec) -> str:
    return spec.env["AGENT_NAME"] if "AGENT_NAME" in spec.env else spec.env["BENCH_AGENT_NAME"]
