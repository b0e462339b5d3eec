"""An example agent, packaged as an image FROM the worker runtime image (see README.md).

`download_files()` runs once, when the image is built (`agent-worker download-files
my_agent:entrypoint`). It stands for fetching model files: it writes a greeting into the cache
directory, which is in the image and read-only at run time. Each job reads it, joins the room,
says it over data, waits a moment and ends.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from worker_runtime import JobContext

logger = logging.getLogger("my_agent")


def greeting_path() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "my-agent" / "greeting.txt"


def download_files() -> None:
    path = greeting_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("hello from my_agent\n")
    logger.info("greeting stored", extra={"path": str(path)})


async def entrypoint(ctx: JobContext) -> None:
    greeting = greeting_path().read_text().strip()
    logger.info("job started", extra={"job_id": ctx.job.id, "room": ctx.room_name})
    await ctx.connect()
    await ctx.room.local_participant.publish_data(greeting)
    await asyncio.sleep(1)
    ctx.shutdown(reason="greeted")
