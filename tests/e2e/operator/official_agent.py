"""A livekit-agents worker as users ship it, for the operator's e2e test of official images.

Run by the official worker's own interpreter (livekit-agents from PyPI in its own venv, never
this project's), as `python tests/e2e/operator/official_agent.py start`: nothing of this
project is imported. Like `call_agent`, a dispatch's metadata says how long the call lasts
(`hold_s`) and where to record its start and end (`ledger`), and the load is the share of 4
calls in use. Two rig-only settings: the worker binds the pod's address (the rig's pods share
the host's network, each on its own loopback address) and its agent name comes from AGENT_NAME.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from livekit.agents import JobContext, WorkerOptions, cli

CALLS_PER_WORKER = 4.0


def record(ledger: str, **fields: object) -> None:
    # call_agent's ledger format, written again: this file must not import the project
    if ledger:
        line = json.dumps({"t": time.time(), "pod_ip": os.environ.get("POD_IP", ""), **fields})
        with Path(ledger).open("a") as out:
            out.write(line + "\n")


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


def load(worker: Any) -> float:
    return min(1.0, len(worker.active_jobs) / CALLS_PER_WORKER)


if __name__ == "__main__":
    cli.run_app(
        WorkerOptions(
            entrypoint_fnc=entrypoint,
            load_fnc=load,
            agent_name=os.environ.get("AGENT_NAME", ""),
            host=os.environ.get("POD_IP", ""),
            port=8081,
            num_idle_processes=1,
            drain_timeout=300,
        )
    )
