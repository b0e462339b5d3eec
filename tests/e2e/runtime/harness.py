"""Helpers for the runtime's e2e tests: workers as subprocesses, LiveKit API calls, bounded waits.

Every wait here is a bounded poll that fails with the last state it saw. Workers run in their
own process group so that cleanup also reaches their job processes. A dedicated livekit-server
logs at debug level and its log is parsed, so that a test can check what the server saw; a gate
proxy in front of it lets a test cut the worker's connection without stopping the server.
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
from urllib.parse import urlparse

import aiohttp
import psutil
from livekit import api

# free_port is re-exported: the tests take it from here
from tests.rig.control_plane import free_port as free_port

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


def process_ended(process: psutil.Process) -> bool:
    """Whether a process has exited: reaped, or a zombie its parent has yet to reap.

    Asked in one call: `is_running()` then `status()` races the reaper, and `status()` of a
    process reaped in between raises NoSuchProcess.
    """
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


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

    async def retire(self, authorization: str) -> tuple[int, dict[str, object]]:
        """POST /retire with this Authorization header; the status and the JSON answer."""
        return await self._handshake("POST", authorization)

    async def unretire(self, authorization: str) -> tuple[int, dict[str, object]]:
        """DELETE /retire (withdraw a retirement) with this Authorization header; likewise."""
        return await self._handshake("DELETE", authorization)

    async def _handshake(self, method: str, authorization: str) -> tuple[int, dict[str, object]]:
        timeout = aiohttp.ClientTimeout(total=5)
        url = f"http://{self.host}:{self.port}/retire"
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, url, headers={"Authorization": authorization}) as resp,
        ):
            body = await resp.json()
            assert isinstance(body, dict)
            return resp.status, body

    async def fork_server(self, within_s: float = 20) -> psutil.Process:
        """The worker's fork server (multiprocessing's), once it runs."""

        async def check() -> psutil.Process | None:
            for child in psutil.Process(self.popen.pid).children():
                with contextlib.suppress(psutil.Error):
                    if "multiprocessing.forkserver" in " ".join(child.cmdline()):
                        return child
            return None

        return await eventually(check, within_s=within_s, what="the fork server", last=self.tail)

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
        # it starts with "-", as a token_urlsafe secret may: `--api-secret` must still take it
        secret = "-" + os.urandom(24).hex()
        self.livekit = LiveKit(
            url=f"ws://127.0.0.1:{self._port}", api_key="e2ekey", api_secret=secret
        )
        self._config = self._dir / "livekit.yaml"
        self._config.write_text(
            f'port: {self._port}\nbind_addresses: ["127.0.0.1"]\n'
            f'keys:\n  e2ekey: "{secret}"\n'
            f"rtc:\n  tcp_port: {free_port()}\n  udp_port: {free_port(socket.SOCK_DGRAM)}\n"
            "  node_ip: 127.0.0.1\n  use_external_ip: false\n  enable_loopback_candidate: true\n"
            '  stun_servers: ["127.0.0.1:3478"]\nlogging:\n  level: debug\n'
        )
        self._popen: subprocess.Popen[bytes] | None = None
        self._starts = 0

    def start(self) -> None:
        """Start it and wait until it listens. A port taken by another process between its
        choice and the bind (the server exits at once, saying so) gets new RTC ports and one
        more try; the signalling port stays, since workers and tests hold its URL."""
        for attempt in range(3):
            if self._start_once():
                return
            log = (self._dir / f"livekit-{self._starts}.log").read_text(errors="replace")
            if "address already in use" not in log or attempt == 2:
                break
            self._new_rtc_ports()
        raise RuntimeError(f"livekit-server did not start; see {self._dir}")

    def _start_once(self) -> bool:
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
                return True
            if time.monotonic() > deadline or self._popen.poll() is not None:
                self.stop()
                return False
            time.sleep(POLL_S)

    def _new_rtc_ports(self) -> None:
        lines = self._config.read_text().splitlines()
        for i, line in enumerate(lines):
            if line.startswith("  tcp_port: "):
                lines[i] = f"  tcp_port: {free_port()}"
            elif line.startswith("  udp_port: "):
                lines[i] = f"  udp_port: {free_port(socket.SOCK_DGRAM)}"
        self._config.write_text("\n".join(lines) + "\n")

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

    def rotate_secret(self) -> None:
        """Give the API key a new secret from the next start on (`self.livekit` keeps the old)."""
        config = self._config.read_text()
        self._config.write_text(config.replace(self.livekit.api_secret, os.urandom(24).hex()))

    def records(self) -> list[dict[str, object]]:
        """Every line the server logged, over all its starts, in order."""
        logs = sorted(self._dir.glob("livekit-*.log"), key=lambda p: int(p.stem.split("-")[1]))
        return [
            record
            for path in logs
            for line in path.read_text(errors="replace").splitlines()
            if (record := parse_server_line(line)) is not None
        ]

    def find(self, message: str, **fields: object) -> list[dict[str, object]]:
        return [
            r
            for r in self.records()
            if r.get("message") == message and all(r.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(
        self, message: str, *, within_s: float = 20, count: int = 1, **fields: object
    ) -> list[dict[str, object]]:
        """Until the server logged `message` (with `fields`) `count` times."""

        async def check() -> list[dict[str, object]] | None:
            found = self.find(message, **fields)
            return found if len(found) >= count else None

        def last() -> object:
            return len(self.find(message, **fields))

        return await eventually(
            check, within_s=within_s, what=f"{count}x server log {message!r} {fields}", last=last
        )


def parse_server_line(line: str) -> dict[str, object] | None:
    """One livekit-server log line (time, level, logger, caller, message, JSON fields)."""
    parts = line.split("\t", 5)
    if len(parts) < 5:
        return None
    record: dict[str, object] = {}
    if len(parts) == 6:
        with contextlib.suppress(json.JSONDecodeError):
            fields = json.loads(parts[5])
            if isinstance(fields, dict):
                record.update(fields)
    record.update(time=parts[0], level=parts[1], logger=parts[2], message=parts[4])
    return record


class GateProxy:
    """A loopback TCP proxy in front of a LiveKit server, with a gate the test shuts and opens.

    Shut, it drops every connection it pipes and holds each new one unanswered, like a server
    that accepts a connection and then hangs: a worker's reconnect stays in progress. Opened, it
    pipes the held connections through. Use it as `async with GateProxy(livekit) as proxy`.
    """

    def __init__(self, upstream: LiveKit) -> None:
        self._upstream = upstream
        self._upstream_port = urlparse(upstream.url).port
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()
        self._piped: set[asyncio.StreamWriter] = set()
        self.held = 0
        """Connections that arrived while the gate was shut."""
        self.livekit = upstream

    async def __aenter__(self) -> GateProxy:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        up = self._upstream
        self.livekit = LiveKit(
            url=f"ws://127.0.0.1:{port}", api_key=up.api_key, api_secret=up.api_secret
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        await self._server.wait_closed()

    def shut(self) -> None:
        """Drop the piped connections; hold new ones."""
        self._open.clear()
        for writer in list(self._piped):
            writer.close()

    def open(self) -> None:
        """Pipe the held connections and every new one through."""
        self._open.set()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._clients.add(task)
        up_writer: asyncio.StreamWriter | None = None
        try:
            if not self._open.is_set():
                self.held += 1
                await self._open.wait()
            with contextlib.suppress(OSError):  # the upstream is down, or a side hung up
                up_reader, up_writer = await asyncio.open_connection(
                    "127.0.0.1", self._upstream_port
                )
                self._piped.update((writer, up_writer))
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._piped.discard(w)
                    w.close()
            self._clients.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        with contextlib.suppress(OSError):  # either side hanging up ends the pipe
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
    finally:
        writer.close()
