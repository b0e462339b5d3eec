"""The seeds' job end: a shutdown hook saves state after `ctx.shutdown()`."""

from __future__ import annotations

import logging

from worker_runtime import JobContext, WorkerOptions, cli

logger = logging.getLogger("examples.shutdown_hook")


async def entrypoint(ctx: JobContext) -> None:
    async def my_shutdown_hook() -> None:
        # save user state
        logger.info("saving user state", extra={"job_id": ctx.job.id})

    ctx.add_shutdown_callback(my_shutdown_hook)
    # do some work
    ...
    # disconnect from the room
    ctx.shutdown(reason="Session ended")


if __name__ == "__main__":
    cli.run_app(WorkerOptions(entrypoint_fnc=entrypoint))
