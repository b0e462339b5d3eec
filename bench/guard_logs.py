"""What a side of `bench.guard` leaves behind, read back: the operator's log, the LiveKit
server's log and dispatch records, and the source the side ran.

Owns the reading only: the operator's scaling decisions, re-issues and warnings as timeline
lines; the rooms whose dispatch records stayed without a job (the server dropped them); the
server's log lines that dropped a room job; a digest of the working tree a side's operator and
workers start from. It decides nothing; `guard_report` counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from typing import Any

from livekit import api

from bench import cluster
from tests.rig import env as rig_env

CALL_AGENT = "tests/e2e/operator/call_agent.py"
LIVEKIT_TIMEOUT_S = 10.0
DROP_LINES = (
    "not dispatching agent job since no worker is available",
    "failed to send job request",
)


SOURCES = ("operator/**/*.py", "worker_runtime/**/*.py", "crds/*.yaml")


def source_digest() -> str:
    """A short digest of what a side runs from the working tree: the operator, the runtime and
    the CRD (each side starts its own operator and workers from it), and the call agent."""
    root = rig_env.REPO_ROOT
    paths = sorted({p for pattern in SOURCES for p in root.glob(pattern)})
    digest = hashlib.sha256()
    for path in [*paths, root / CALL_AGENT]:
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def jobless(
    rig: rig_env.RigEnv, agent_name: str, rooms: Sequence[str], older_than_s: float
) -> set[str]:
    """Rooms whose dispatch records of the agent all have no job and are older than that."""

    async def look() -> set[str]:
        found: set[str] = set()
        async with api.LiveKitAPI(
            rig.livekit_url, rig.livekit_api_key, rig.livekit_api_secret
        ) as lk:
            for room in rooms:
                listed = await asyncio.wait_for(
                    lk.agent_dispatch.list_dispatch(room_name=room), LIVEKIT_TIMEOUT_S
                )
                ours = [d for d in listed if d.agent_name == agent_name]
                now = time.time()
                if ours and all(
                    not d.state.jobs and now - d.state.created_at / 1e9 >= older_than_s
                    for d in ours
                ):
                    found.add(room)
        return found

    return asyncio.run(look()) if rooms else set()


def server_log(rig: rig_env.RigEnv) -> list[str]:
    path = rig.logs_dir / "livekit.log"
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def server_drops(log: Sequence[str], agent_name: str) -> int:
    """Room jobs of the agent the LiveKit server dropped, as its log says."""
    mine = f'"agentName": "{agent_name}"'
    return sum(
        1
        for line in log
        if mine in line and '"JT_ROOM"' in line and any(d in line for d in DROP_LINES)
    )


def operator_story(records: Sequence[dict[str, Any]], wall0: float) -> tuple[list[str], int]:
    """From the operator's log: its scaling decisions, re-issues and warnings as offsets from the
    first call (a warning said again is counted on its first line), and the re-issues added
    up."""
    lines: list[str] = []
    reissued = 0
    warned: dict[str, tuple[int, int]] = {}
    for r in records:
        message, stamp = str(r.get("message", "")), r.get("time")
        if not isinstance(stamp, str):
            continue
        at = f"{cluster.unix_time(stamp) - wall0:+.1f} s operator"
        if message == "scaling":
            lines.append(f"{at}: {r.get('reason')}: {r.get('detail')}")
        elif message == "held dispatches issued again":
            reissued += int(r.get("count", 0))
            lines.append(f"{at}: {r.get('count')} held dispatches issued again")
        elif r.get("severity") in ("WARNING", "ERROR"):
            said = ": ".join(str(r[k]) for k in ("reason", "detail", "error") if r.get(k))
            text = f"{str(r['severity']).lower()}: {message}" + (f": {said}" if said else "")
            index, count = warned.get(text, (len(lines), 0))
            if not count:
                lines.append(f"{at} {text}")
            warned[text] = (index, count + 1)
    for index, count in warned.values():
        if count > 1:
            lines[index] += f" (x{count} in all)"
    return lines, reissued
