"""The agent of the operator's scaling tests: it holds calls for as long as each dispatch says.

Started in operator-made pods as `agent-worker start tests.e2e.operator.call_agent:opts`. A job's
metadata (JSON) says how long the call lasts (`hold_s`), whether it is a real call (`real`: join
the room and stay with the participant `caller`) and where to record it (`ledger`, a file the
test reads: the rig runs pods as local processes). Each call writes a line when it starts and one
when it ends, with how it ended: `completed` after hold_s, `caller-left` when the caller went
first, `shutdown` when the worker ended it. The load is the share of CALLS_PER_WORKER in use, so
calls drive the autoscaler the way a real agent's CPU would.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from livekit import rtc

from worker_runtime import JobContext, WorkerOptions

CALLS_PER_WORKER = float(os.environ.get("E2E_CALLS_PER_WORKER", "4"))
MAX_HOLD_S = 600.0
CALL_ENDING_REASONS = (
    rtc.DisconnectReason.CLIENT_INITIATED,
    rtc.DisconnectReason.ROOM_DELETED,
    rtc.DisconnectReason.USER_REJECTED,
)


def record(ledger: str, **fields: object) -> None:
    """Append one JSON line to the ledger (small appends are atomic)."""
    if not ledger:
        return
    line = json.dumps(
        {"t": time.time(), "pod_ip": os.environ.get("POD_IP", ""), "pid": os.getpid(), **fields}
    )
    with Path(ledger).open("a") as out:
        out.write(line + "\n")


async def entrypoint(ctx: JobContext) -> None:
    meta = json.loads(ctx.job.metadata or "{}")
    ledger, room = str(meta.get("ledger", "")), ctx.job.room.name
    hold_s = min(float(meta.get("hold_s", 30)), MAX_HOLD_S)
    ended = "shutdown"

    async def on_shutdown(reason: str) -> None:
        record(ledger, event="end", room=room, how=ended, reason=reason)

    ctx.add_shutdown_callback(on_shutdown)
    record(ledger, event="start", room=room, real=bool(meta.get("real")))
    if not meta.get("real"):
        await asyncio.sleep(hold_s)
        ended = "completed"
        return
    caller_left = asyncio.Event()

    def on_left(participant: rtc.RemoteParticipant) -> None:
        reason = participant.disconnect_reason
        record(ledger, event="left", room=room, identity=participant.identity, reason=reason)
        # As livekit-agents' RoomIO: only a caller who hung up (or a deleted room) ends the
        # call; a caller who vanished because the agent's own connection restarted comes back.
        if participant.identity == "caller" and reason in CALL_ENDING_REASONS:
            caller_left.set()

    if not meta.get("stay"):  # `stay`: the agent keeps the room for hold_s even when alone
        ctx.room.on("participant_disconnected", on_left)
    await ctx.connect()
    await ctx.wait_for_participant(identity="caller")
    try:
        await asyncio.wait_for(caller_left.wait(), hold_s)
        ended = "caller-left"
    except TimeoutError:
        ended = "completed"
        # the caller counts a call that ends without "bye" as cut
        await ctx.room.local_participant.publish_data(b"bye", reliable=True)
        await asyncio.sleep(0.5)
    ctx.shutdown(ended)


def load_of(worker: object) -> float:
    """load_fnc(worker): the share of CALLS_PER_WORKER calls running on this worker."""
    return min(1.0, len(getattr(worker, "active_jobs", [])) / CALLS_PER_WORKER)


opts = WorkerOptions(entrypoint, load_fnc=load_of)
