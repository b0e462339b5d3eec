"""The seeds' custom load: at most 9 concurrent jobs, whatever the CPU does."""

from __future__ import annotations

import asyncio

from worker_runtime import JobContext, Worker, WorkerOptions, cli


def compute_load(worker: Worker) -> float:
    return min(len(worker.active_jobs) / 10, 1.0)


async def entrypoint(ctx: JobContext) -> None:
    await asyncio.sleep(1)


opts = WorkerOptions(entrypoint_fnc=entrypoint, load_fnc=compute_load, load_threshold=0.9)

if __name__ == "__main__":
    cli.run_app(opts)
