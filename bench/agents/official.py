"""The benchmark agent under livekit-agents: `python -m bench.agents.official start`.

Runs in the benchmark's own venv (`bench/venv.py`, one per release under ~/.cache/agentworker)
where livekit-agents is installed; the project venv never has it. BENCH_AGENT_NAME,
BENCH_NUM_IDLE_PROCESSES and BENCH_PORT carry the settings; load is pinned to 0 and the
threshold disabled (livekit-agents counts accepted but not yet launched jobs against a finite
threshold, which would refuse most of a burst).
"""

from __future__ import annotations

import math
import os

from livekit.agents import JobContext, WorkerOptions, cli

from bench.agents.record import record_entry


async def entrypoint(ctx: JobContext) -> None:
    """Record the entry, then end the job without joining the room."""
    record_entry(ctx.job.metadata)
    ctx.shutdown(reason="bench: done")


def zero_load() -> float:
    """A constant load of 0: the benchmark measures dispatch, not load shedding."""
    return 0.0


def build_options() -> WorkerOptions:
    """The same settings as `ours.py`, from the BENCH_* variables."""
    return WorkerOptions(
        entrypoint_fnc=entrypoint,
        agent_name=os.environ["BENCH_AGENT_NAME"],
        num_idle_processes=int(os.environ["BENCH_NUM_IDLE_PROCESSES"]),
        host="127.0.0.1",
        port=int(os.environ["BENCH_PORT"]),
        load_fnc=zero_load,
        load_threshold=math.inf,
    )


if __name__ == "__main__":
    cli.run_app(build_options())
