"""Agents for the e2e tests, started as `agent-worker start tests.e2e.runtime.agents:<name>`.

The job's metadata (JSON) says what the job does, so one agent covers every scenario: finish at
once, raise, crash its process, sleep, or hold memory. Each logs what it saw.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
from pathlib import Path

from worker_runtime import JobContext, JobProcess, JobRequest, WorkerOptions, WorkerType

logger = logging.getLogger("e2e.agent")
MAX_JOB_S = 120.0


def prewarm(proc: JobProcess) -> None:
    proc.userdata["prewarmed_in"] = os.getpid()


async def entrypoint(ctx: JobContext) -> None:
    meta = json.loads(ctx.job.metadata or "{}")
    logger.info(
        "e2e job running",
        extra={
            "job_id": ctx.job.id,
            "room": ctx.job.room.name,
            "metadata": ctx.job.metadata,
            "job_pid": os.getpid(),
            "prewarmed_in": ctx.proc.userdata.get("prewarmed_in"),
            "publisher": ctx.job.participant.identity,
        },
    )

    async def on_shutdown(reason: str) -> None:
        logger.info("e2e shutdown callback", extra={"job_id": ctx.job.id, "reason": reason})

    ctx.add_shutdown_callback(on_shutdown)
    if "hog_mb" in meta:
        ballast = bytearray(int(meta["hog_mb"]) * 1024 * 1024)
        ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page so it is resident
        ctx.proc.userdata["ballast"] = ballast
    if meta.get("raise"):
        raise RuntimeError(meta["raise"])
    if meta.get("crash"):
        os._exit(3)
    if "block_s" in meta:
        # a job that blocks its event loop, so it cannot hear the shutdown request
        time.sleep(float(meta["block_s"]))  # noqa: ASYNC251
    if "sleep_s" in meta:
        await asyncio.sleep(min(float(meta["sleep_s"]), MAX_JOB_S))
    logger.info("e2e job done", extra={"job_id": ctx.job.id})


async def reject_all(req: JobRequest) -> None:
    logger.info("e2e rejecting", extra={"job_id": req.id})
    await req.reject()


async def broken_request_fnc(req: JobRequest) -> None:
    logger.info("e2e rejecting", extra={"job_id": req.id})
    raise ValueError("request_fnc bug")


def failing_prewarm(proc: JobProcess) -> None:
    raise RuntimeError("model file missing")


def slow_prewarm(proc: JobProcess) -> None:
    """A prewarm that takes $E2E_PREWARM_S seconds (a test knob), like loading a model."""
    time.sleep(float(os.environ.get("E2E_PREWARM_S", "1")))
    prewarm(proc)


def no_load() -> float:
    return 0.0


def load_from_file() -> float:
    """The load the test wrote to $E2E_LOAD_FILE (a test knob, read by this agent only)."""
    return float(Path(os.environ["E2E_LOAD_FILE"]).read_text() or "0")


def always_busy() -> float:
    return 0.95


def slow_share_of_four(worker: object) -> float:
    """The share of 4 jobs running, measured in 0.3 s (as a load_fnc that reads a GPU might)."""
    time.sleep(0.3)
    return min(1.0, len(getattr(worker, "active_jobs", [])) / 4)


opts = WorkerOptions(entrypoint, prewarm_fnc=prewarm, load_fnc=no_load)
rejecting = WorkerOptions(entrypoint, prewarm_fnc=prewarm, load_fnc=no_load, request_fnc=reject_all)
raising = WorkerOptions(
    entrypoint, prewarm_fnc=prewarm, load_fnc=no_load, request_fnc=broken_request_fnc
)
steerable = WorkerOptions(entrypoint, prewarm_fnc=prewarm, load_fnc=load_from_file)
busy = WorkerOptions(entrypoint, prewarm_fnc=prewarm, load_fnc=always_busy)
counting = WorkerOptions(entrypoint, prewarm_fnc=prewarm, load_fnc=slow_share_of_four)
publisher = WorkerOptions(
    entrypoint, prewarm_fnc=prewarm, load_fnc=no_load, worker_type=WorkerType.PUBLISHER
)


async def greeter(ctx: JobContext) -> None:
    """Join the room; answer each "ping" data packet with "hello world" to its sender."""
    from livekit import rtc

    replies: set[asyncio.Task[None]] = set()

    def on_data(packet: rtc.DataPacket) -> None:
        if packet.data == b"ping" and packet.participant is not None:
            reply = ctx.room.local_participant.publish_data(
                "hello world", destination_identities=[packet.participant.identity]
            )
            task = asyncio.ensure_future(reply)
            replies.add(task)
            task.add_done_callback(replies.discard)

    ctx.room.on("data_received", on_data)
    await ctx.connect()
    user = await ctx.wait_for_participant()
    logger.info("e2e greeter sees", extra={"job_id": ctx.job.id, "identity": user.identity})


broken_prewarm = WorkerOptions(entrypoint, prewarm_fnc=failing_prewarm, load_fnc=no_load)
slow_start = WorkerOptions(entrypoint, prewarm_fnc=slow_prewarm, load_fnc=no_load)
greeting = WorkerOptions(greeter, load_fnc=no_load)


def _read_proc(path: str) -> str:
    """A /proc file's text (NULs as newlines), or the error reading it raised."""
    try:
        return Path(path).read_bytes().replace(b"\0", b"\n").decode(errors="replace")
    except OSError as exc:
        return f"error: {type(exc).__name__}"


def _read_environ_in_memory(pid: int) -> str:
    """The original environment block of `pid`, read through /proc/<pid>/mem, or the error."""
    stat = _read_proc(f"/proc/{pid}/stat").rpartition(")")[2].split()
    env_start, env_end = int(stat[47]), int(stat[48])  # proc(5) fields 50 and 51
    try:
        with open(f"/proc/{pid}/mem", "rb") as mem:
            mem.seek(env_start)
            return mem.read(env_end - env_start).replace(b"\0", b"\n").decode(errors="replace")
    except (OSError, ValueError) as exc:
        return f"error: {type(exc).__name__}"


def _issuer(jwt: str) -> str:
    """The `iss` claim of a JWT (unverified: the job only reads its own room token)."""
    payload = jwt.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iss"])


async def snooper(ctx: JobContext) -> None:
    """Log what a job can see of the worker's credentials: its environment, and its own, the
    fork server's and the worker's /proc entries (as job code could, to mint itself tokens)."""
    fork_server = os.getppid()
    worker = int(_read_proc(f"/proc/{fork_server}/stat").rpartition(")")[2].split()[1])
    logger.info(
        "e2e job sees",
        extra={
            "job_id": ctx.job.id,
            "fork_server_pid": fork_server,
            "worker_pid": worker,
            "token_issuer": _issuer(ctx.token),
            "env": "\n".join(f"{k}={v}" for k, v in os.environ.items()),
            "self_environ": _read_proc("/proc/self/environ"),
            "fork_server_environ": _read_proc(f"/proc/{fork_server}/environ"),
            "fork_server_mem": _read_environ_in_memory(fork_server),
            "worker_environ": _read_proc(f"/proc/{worker}/environ"),
            "worker_cmdline": _read_proc(f"/proc/{worker}/cmdline"),
            "worker_mem": _read_environ_in_memory(worker),
        },
    )


snooping = WorkerOptions(snooper, load_fnc=no_load)
