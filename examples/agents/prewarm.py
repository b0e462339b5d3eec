"""The seeds' prewarm example: load a model once per process, use it in every job there.

The seeds load silero's VAD; this stand-in "model" is a dict so the example needs nothing else.
"""

from __future__ import annotations

import logging
import os

from worker_runtime import JobContext, JobProcess, WorkerOptions, cli

logger = logging.getLogger("examples.prewarm")


def load_model() -> dict[str, object]:
    return {"name": "stand-in-vad", "loaded_by_pid": os.getpid()}


def prewarm_fnc(proc: JobProcess) -> None:
    # load the model weights and store them in the process userdata
    proc.userdata["vad"] = load_model()


async def entrypoint(ctx: JobContext) -> None:
    # access the loaded model
    vad = ctx.proc.userdata["vad"]
    logger.info(
        "using the prewarmed model",
        extra={
            "job_id": ctx.job.id,
            "model": vad["name"],
            "loaded_by_pid": vad["loaded_by_pid"],
            "job_pid": ctx.proc.pid,
            "metadata": ctx.job.metadata,
        },
    )


opts = WorkerOptions(entrypoint_fnc=entrypoint, prewarm_fnc=prewarm_fnc)

if __name__ == "__main__":
    cli.run_app(opts)
