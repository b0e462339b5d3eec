"""A livekit-agents agent written as LiveKit's current docs teach, for the companion's e2e tests.

Run by an official worker's own interpreter (livekit-agents from PyPI in its own venv), as
`python tests/e2e/operator/companion_agent.py start`: nothing of this project is imported, and
nothing of the operator's contract is in it. Its agent name is set in code and it binds
livekit-agents' defaults (all interfaces, port 8081): with the companion, the spec's agentName
wins and the worker serves on the pod's own address; without it, every such worker on the rig
would fight for 0.0.0.0:8081. As in `call_agent`, a dispatch's metadata says how long the call
lasts (`hold_s`) and where to record its start and end (`ledger`); the load is the share of 4
calls in use.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from livekit.agents import AgentServer, JobContext, cli

CALLS_PER_WORKER = 4.0

server = AgentServer()


def record(ledger: str, **fields: object) -> None:
    if ledger:
        line = json.dumps({"t": time.time(), "pod_ip": os.environ.get("POD_IP", ""), **fields})
        with Path(ledger).open("a") as out:
            out.write(line + "\n")


def load(worker: Any) -> float:
    return min(1.0, len(worker.active_jobs) / CALLS_PER_WORKER)


server.load_fnc = load


@server.rtc_session(agent_name="set-in-code")  # type: ignore[untyped-decorator]
async def entrypoint(ctx: JobContext) -> None:
    meta = json.loads(ctx.job.metadata or "{}")
    ledger, room = str(meta.get("ledger", "")), ctx.job.room.name
    record(ledger, event="start", room=room, real=False)
    try:
        await asyncio.sleep(float(meta.get("hold_s", 30)))
    except asyncio.CancelledError:
        record(ledger, event="end", room=room, how="shutdown", reason="cancelled")
        raise
    record(ledger, event="end", room=room, how="completed", reason="entrypoint returned")
    ctx.shutdown("call completed")


if __name__ == "__main__":
    cli.run_app(server)
