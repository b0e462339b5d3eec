"""Worker processes under measurement: start one, see it register, read /worker, sum its memory.

Owns the life of one worker subprocess of either runtime: it starts it in its own process group
(so that cleanup reaches the job processes too), reads its log as it is written (the moment the
registration line appears is the registration time), answers questions about its process tree,
and stops it: SIGTERM, a bounded wait, then SIGKILL to the whole group. It dispatches nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import aiohttp
import psutil

HTTP_TIMEOUT_S = 2.0
POLL_INTERVAL_S = 0.01
STOP_TIMEOUT_S = 20.0
LOG_TAIL_LINES = 40

_LIVE_GROUPS: set[int] = set()
"""Process groups started and not yet reaped: `kill_leftovers` is the last-resort cleanup."""


class WorkerFailed(RuntimeError):
    """A worker exited or did not reach a state in time; the message has its last log lines."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeSpec:
    """How to run the benchmark agent under one runtime."""

    key: str
    """Short name used in results: "ours" or "livekit-agents"."""
    argv: tuple[str, ...]
    env: Mapping[str, str]
    """The complete environment, except the HTTP port."""
    port_env: str
    """The variable that carries the worker's HTTP port."""
    cwd: Path
    registered_marker: str
    """A substring of the log line the runtime writes once the server has registered it."""
    reports_idle_processes: bool
    """/worker has `idle_processes` (ours); otherwise the pool is warm before registration."""
    offered_message: str
    """The `message` of the JSON log line the worker writes when the server offers it a job."""
    log_time_key: str
    """The key of a JSON log line's ISO 8601 time."""
    worker_id_key: str
    """The key of the worker id in the JSON registration line."""
    warm_failure_marker: str = ""
    """A log substring meaning the pool was not warm when the worker registered."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MemorySample:
    """Memory of a worker and all its descendants at one moment, summed."""

    rss_bytes: int
    """Resident set sizes added up (pages shared between processes count once per process)."""
    pss_bytes: int
    """Proportional set sizes added up (shared pages split between their users)."""
    uss_bytes: int
    """Pages private to each process, added up."""
    processes: int
    per_process: tuple[tuple[str, float], ...] = ()
    """(role, RSS in MB) of each process: worker, job, forkserver, resource_tracker."""


def _role(proc: psutil.Process, root: psutil.Process) -> str:
    if proc.pid == root.pid:
        return "worker"
    cmdline = " ".join(proc.cmdline())
    for role in ("resource_tracker", "forkserver"):
        if f"multiprocessing.{role}" in cmdline and proc.ppid() == root.pid:
            return role
    return "job"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kill_leftovers() -> None:
    """SIGKILL every process group this module started and has not reaped (never raises)."""
    for pgid in list(_LIVE_GROUPS):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        _LIVE_GROUPS.discard(pgid)


class WorkerProcess:
    """One running worker; `start()`, then the waits and probes, and always `stop()`."""

    def __init__(self, spec: RuntimeSpec, *, log_path: Path) -> None:
        self.spec = spec
        self.port = free_port()
        self.log_path = log_path
        self.started_at = 0.0
        """time.monotonic() just before the process was created."""
        self.registered_at: float | None = None
        self.started_wall = 0.0
        """time.time() just before the process was created (to compare with the server's log)."""
        self.worker_id = ""
        """The id the server gave the worker, from its registration line."""
        """time.monotonic() when the registration line was read."""
        self.warm_failed = False
        self.max_zombies = 0
        """The most unreaped (zombie) children seen in the tree while the worker was idle."""
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._registered = asyncio.Event()
        self._tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        self._log: IO[bytes] | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise WorkerFailed(f"{self.spec.key}: not started")
        return self._proc.pid

    def _fail(self, what: str) -> WorkerFailed:
        tail = "\n    ".join(self._tail) or "<no output>"
        return WorkerFailed(f"{self.spec.key} worker: {what}; log {self.log_path}:\n    {tail}")

    async def start(self) -> None:
        env = {**self.spec.env, self.spec.port_env: str(self.port)}
        self._log = self.log_path.open("ab")
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S))
        self.started_at = time.monotonic()
        self.started_wall = time.time()
        self._proc = await asyncio.create_subprocess_exec(
            *self.spec.argv,
            cwd=self.spec.cwd,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            limit=1 << 20,
        )
        _LIVE_GROUPS.add(self._proc.pid)
        self._reader = asyncio.create_task(self._read_log(), name=f"log-{self.spec.key}")

    async def _read_log(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        while line := await self._proc.stdout.readline():
            now = time.monotonic()
            text = line.decode(errors="replace").rstrip()
            if self._log is not None:
                self._log.write(line)
            self._tail.append(text[:400])
            if self.registered_at is None and self.spec.registered_marker in text:
                self.registered_at = now
                with contextlib.suppress(ValueError, TypeError):
                    self.worker_id = str(json.loads(text).get(self.spec.worker_id_key, ""))
                self._registered.set()
            if self.spec.warm_failure_marker and self.spec.warm_failure_marker in text:
                self.warm_failed = True

    async def wait_registered(self, timeout_s: float) -> float:
        """Seconds from process start to the registration line; `WorkerFailed` otherwise."""
        assert self._proc is not None
        exited = asyncio.create_task(self._proc.wait())
        registered = asyncio.create_task(self._registered.wait())
        try:
            await asyncio.wait(
                [exited, registered], timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in (exited, registered):
                task.cancel()
            await asyncio.gather(exited, registered, return_exceptions=True)
        if self.registered_at is None:
            code = self._proc.returncode
            what = f"exited with {code}" if code is not None else f"not registered in {timeout_s}s"
            raise self._fail(f"{what} before registering")
        return self.registered_at - self.started_at

    async def status(self) -> dict[str, object]:
        """The worker's /worker JSON."""
        assert self._http is not None
        url = f"http://127.0.0.1:{self.port}/worker"
        async with self._http.get(url) as resp:
            resp.raise_for_status()
            body = await resp.json(content_type=None)
        if not isinstance(body, dict):
            raise self._fail(f"/worker answered {body!r}, not an object")
        return body

    async def wait_warm(self, num_idle: int, timeout_s: float) -> float:
        """Seconds from process start until registered with `num_idle` prewarmed processes."""
        await self.wait_registered(timeout_s)
        if not self.spec.reports_idle_processes:
            # livekit-agents awaits its pool's warm-up before it connects (ProcPool.start).
            assert self.registered_at is not None
            return self.registered_at - self.started_at
        deadline = time.monotonic() + timeout_s
        last: object = "<never answered>"
        while time.monotonic() < deadline:
            try:
                body = await self.status()
                last = body.get("idle_processes")
                if isinstance(last, int) and last >= num_idle:
                    return time.monotonic() - self.started_at
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(POLL_INTERVAL_S)
        raise self._fail(f"idle processes did not reach {num_idle} in {timeout_s}s (last {last})")

    def offers(self) -> dict[str, float]:
        """Room name -> Unix time at which the worker logged the server's offer of its job."""
        found: dict[str, float] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            if self.spec.offered_message not in line:
                continue
            try:
                record = json.loads(line)
                stamp = datetime.datetime.fromisoformat(record[self.spec.log_time_key])
                found[str(record["room"])] = stamp.timestamp()
            except (ValueError, KeyError, TypeError):
                continue
        return found

    def tree(self) -> list[psutil.Process]:
        """The worker and all its descendants."""
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def memory(self) -> MemorySample:
        """RSS, PSS and USS of the process tree, summed (processes that vanish are skipped)."""
        rss = pss = uss = count = 0
        roles: list[tuple[str, float]] = []
        tree = self.tree()
        for proc in tree:
            try:
                info = proc.memory_full_info()
                roles.append((_role(proc, tree[0]), round(info.rss / (1024 * 1024), 1)))
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            rss += info.rss
            pss += info.pss
            uss += info.uss
            count += 1
        return MemorySample(
            rss_bytes=rss, pss_bytes=pss, uss_bytes=uss, processes=count, per_process=tuple(roles)
        )

    def rss_bytes(self) -> int:
        """RSS summed over the tree: cheaper than `memory()`, for sampling under load."""
        total = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                total += proc.memory_info().rss
        return total

    def process_count(self) -> tuple[int, int]:
        """(live processes, zombies) in the tree; an exited child nobody reaped is a zombie."""
        live = zombies = 0
        for proc in self.tree():
            try:
                dead = proc.status() == psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                continue
            zombies += dead
            live += not dead
        return live, zombies

    async def wait_idle(self, *, processes: int, num_idle: int, timeout_s: float) -> None:
        """Until no job runs and the tree is back to its warm size (and, when reported, the pool
        holds `num_idle` ready processes)."""
        deadline = time.monotonic() + timeout_s
        last: object = "<never answered>"
        while time.monotonic() < deadline:
            try:
                body = await self.status()
                count, zombies = await asyncio.to_thread(self.process_count)
                idle = body.get("idle_processes", num_idle)
                jobs = body.get("active_jobs", 0)  # livekit-agents omits a zero
                last = {"active_jobs": jobs, "processes": count, "idle_processes": idle}
                ready = isinstance(idle, int) and idle >= num_idle
                if jobs == 0 and count <= processes and ready:
                    self.max_zombies = max(self.max_zombies, zombies)
                    return
            except (aiohttp.ClientError, TimeoutError, psutil.NoSuchProcess) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(0.05)
        raise self._fail(f"not idle again within {timeout_s}s (last {last})")

    async def stop(self) -> None:
        """SIGTERM, wait (bounded), then SIGKILL the whole group; idempotent, never raises."""
        proc = self._proc
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        if proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            _LIVE_GROUPS.discard(proc.pid)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, STOP_TIMEOUT_S)
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._log is not None:
            self._log.close()
            self._log = None
