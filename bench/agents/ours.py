"""The benchmark agent under this runtime: `agent-worker start bench.agents.ours:options`.

The agent name, idle processes and HTTP port come from AGENT_* variables, as the operator sets
them. Load is pinned to 0 and the threshold disabled, exactly as in `official.py`, so that
neither worker reports itself full during the burst.
"""

from __future__ import annotations

import math

from bench.agents.record import record_entry
from worker_runtime import JobContext, WorkerOptions


async def entrypoint(ctx: JobContext) -> None:
    """Record the entry, then end the job without joining the room."""
    record_entry(ctx.job.metadata)
    ctx.shutdown("bench: done")


def zero_load() -> float:
    """A constant load of 0: the benchmark measures dispatch, not load shedding."""
    return 0.0


options = WorkerOptions(entrypoint, load_fnc=zero_load, load_threshold=math.inf)
