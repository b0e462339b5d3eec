"""Helpers for the runtime's e2e tests: workers as subprocesses, LiveKit API calls, bounded waits.

Every wait here is a bounded poll that fails with the last state it saw. Workers run in their
own process group so that cleanup also reaches their job processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
from livekit import api

REPO_ROOT = Path(__file__).resolve().parents[3]
AGENT_WORKER = Path(sys.executable).with_name("agent-worker")
POLL_S = 0.1
T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T | None]],
    *,
    within_s: float,
    what: str,
    last: Callable[[], object] = lambda: None,
) -> T:
    """Poll `check` until it returns something; fail after `timeout` s with what was last seen."""
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s}s waiting for {what}; last: {last()}")
        await asyncio.sleep(POLL_S)


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class LiveKit:
    """A LiveKit server and its credentials."""

    url: str
    api_key: str
    api_secret: str = field(repr=False)

    def env(self) -> dict[str, str]:
        return {
            "LIVEKIT_URL": self.url,
            "LIVEKIT_API_KEY": self.api_key,
            "LIVEKIT_API_SECRET": self.api_secret,
        }

    async def dispatch(self, agent_name: str, room: str, metadata: str = "") -> api.AgentDispatch:
        """Create an explicit dispatch (the room is created when missing)."""
        req = api.CreateAgentDispatchRequest(agent_name=agent_name, room=room, metadata=metadata)
        async with api.LiveKitAPI(self.url, self.api_key, self.api_secret) as lk:
            return await asyncio.wait_for(lk.agent_dispatch.create_dispatch(req), 10)

    def token(self, identity: str, room: str) -> str:
        grants = api.VideoGrants(room_join=True, room=room)
        return (
            api.AccessToken(self.api_key, self.api_secret)
            .with_identity(identity)
            .with_grants(grants)
            .to_jwt()
        )


class WorkerProc:
    """One `agent-worker` subprocess: its JSON log lines, its HTTP endpoints, its exit."""

    def __init__(self, popen: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.popen = popen
        self.port = port
        self.host = "127.0.0.1"
        self.log_path = log_path

    def records(self) -> list[dict[str, object]]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        out = []
        for line in lines:
            with contextlib.suppress(json.JSONDecodeError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def find(self, message: str, **fields: object) -> list[dict[str, object]]:
        return [
            r
            for r in self.records()
            if r.get("message") == message and all(r.get(k) == v for k, v in fields.items())
        ]

    def tail(self, n: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    async def wait_for(
        self, message: str, *, within_s: float = 20, count: int = 1, **fields: object
    ) -> list[dict[str, object]]:
        async def check() -> list[dict[str, object]] | None:
            found = self.find(message, **fields)
            return found if len(found) >= count else None

        return await eventually(
            check, within_s=within_s, what=f"{count}x log {message!r} {fields}", last=self.tail
        )

    async def wait_for_text(self, text: str, *, within_s: float = 20) -> None:
        """Until `text` appears anywhere in the output (dev mode's lines are not JSON)."""

        async def check() -> bool:
            return text in self.log_path.read_text(errors="replace")

        await eventually(check, within_s=within_s, what=f"output {text!r}", last=self.tail)

    async def get(self, path: str) -> tuple[int, str]:
        timeout = aiohttp.ClientTimeout(total=3)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://{self.host}:{self.port}{path}") as resp,
        ):
            return resp.status, await resp.text()

    async def status(self, path: str) -> int | None:
        try:
            return (await self.get(path))[0]
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def document(self) -> dict[str, object]:
        status, body = await self.get("/worker")
        assert status == 200, body
        doc = json.loads(body)
        assert isinstance(doc, dict)
        return doc

    async def wait_ready(self, within_s: float = 20) -> None:
        async def check() -> bool:
            return await self.status("/readyz") == 200

        await eventually(check, within_s=within_s, what="/readyz 200", last=self.tail)

    async def wait_idle(self, count: int, within_s: float = 30) -> None:
        """Until /worker shows `count` prewarmed processes."""
        seen: list[object] = []

        async def check() -> bool:
            seen.append((await self.document()).get("idle_processes"))
            return seen[-1] == count

        await eventually(
            check, within_s=within_s, what=f"{count} idle processes", last=lambda: seen[-1:]
        )

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)

    async def wait_exit(self, within_s: float = 30) -> int:
        async def check() -> int | None:
            code = self.popen.poll()
            return None if code is None else code + 1000  # 0 must count as "exited"

        return await eventually(check, within_s=within_s, what="worker exit", last=self.tail) - 1000

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)  # job processes left in the group


class WorkerFactory:
    """Starts workers for one test and kills them all afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self._tmp = tmp_path
        self._procs: list[WorkerProc] = []

    async def start(
        self,
        target: str,
        livekit: LiveKit,
        *,
        agent_name: str,
        idle: int = 1,
        env: dict[str, str] | None = None,
        ready: bool = True,
        args: tuple[str, ...] = (),
        command: list[str] | None = None,
    ) -> WorkerProc:
        """`agent-worker start <target>` (or `command`), with the LiveKit and AGENT_* env set."""
        port = free_port()
        full_env = {
            **os.environ,
            **livekit.env(),
            "AGENT_NAME": agent_name,
            "AGENT_HOST": "127.0.0.1",
            "AGENT_PORT": str(port),
            "AGENT_NUM_IDLE_PROCESSES": str(idle),
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        log_path = self._tmp / f"worker-{len(self._procs)}-{port}.log"
        argv = command or [str(AGENT_WORKER), "start", target, *args]
        popen = await asyncio.to_thread(_spawn, argv, full_env, log_path)
        proc = WorkerProc(popen, port, log_path)
        self._procs.append(proc)
        if ready:
            await proc.wait_ready()
            await proc.wait_idle(idle)
        return proc

    async def close(self) -> None:
        for proc in self._procs:
            await asyncio.to_thread(proc.kill)


def _spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def find_livekit_server() -> Path:
    """livekit-server on PATH, else the rig's cached build."""
    on_path = shutil.which("livekit-server")
    if on_path:
        return Path(on_path)
    cache = Path.home() / ".cache" / "agentworker-rig" / "bin"
    found = sorted(p for p in cache.glob("livekit-*/livekit-server") if ".tmp" not in str(p))
    if not found:
        raise FileNotFoundError(f"no livekit-server on PATH or under {cache}: run `make rig`")
    return found[-1]


class DedicatedLiveKit:
    """A livekit-server process of the test's own, on loopback ports, that can be restarted."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self._binary = binary
        self._dir = workdir
        self._dir.mkdir(parents=True, exist_ok=True)
        self._port = free_port()
        secret = os.urandom(24).hex()
        self.livekit = LiveKit(
            url=f"ws://127.0.0.1:{self._port}", api_key="e2ekey", api_secret=secret
        )
        self._config = self._dir / "livekit.yaml"
        self._config.write_text(
            f'port: {self._port}\nbind_addresses: ["127.0.0.1"]\n'
            f"keys:\n  e2ekey: {secret}\n"
            f"rtc:\n  tcp_port: {free_port()}\n  udp_port: {free_port(socket.SOCK_DGRAM)}\n"
            "  node_ip: 127.0.0.1\n  use_external_ip: false\n  enable_loopback_candidate: true\n"
            '  stun_servers: ["127.0.0.1:3478"]\nlogging:\n  level: info\n'
        )
        self._popen: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def start(self) -> None:
        self._starts += 1
        with (self._dir / f"livekit-{self._starts}.log").open("wb") as log:
            self._popen = subprocess.Popen(
                [str(self._binary), "--config", str(self._config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 20
        while True:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self._port), 0.5),
            ):
                return
            if time.monotonic() > deadline or self._popen.poll() is not None:
                raise RuntimeError(f"livekit-server did not start; see {self._dir}")
            time.sleep(POLL_S)

    def stop(self) -> None:
        if self._popen is not None and self._popen.poll() is None:
            self._popen.terminate()
            try:
                self._popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._popen.kill()
                self._popen.wait(timeout=10)
        self._popen = None

    async def restart(self) -> None:
        await asyncio.to_thread(self.stop)
        await asyncio.to_thread(self.start)
