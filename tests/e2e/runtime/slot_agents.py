"""An agent whose load is its running jobs over a fixed number of slots, for the burst tests.

Started as `agent-worker start tests.e2e.runtime.slot_agents:slots`; its jobs are the e2e agent's
(the job's metadata says how long each one sleeps).
"""

from __future__ import annotations

from tests.e2e.runtime.agents import entrypoint, prewarm
from worker_runtime import WorkerOptions

SLOTS = 2


def load_of(worker: object) -> float:
    """load_fnc(worker): the share of SLOTS jobs running on this worker (min(1, jobs / 2))."""
    return min(1.0, len(getattr(worker, "active_jobs", [])) / SLOTS)


slots = WorkerOptions(entrypoint, prewarm_fnc=prewarm, load_fnc=load_of)
