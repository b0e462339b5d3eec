"""The WebSocket to LiveKit's agent endpoint: connect, register, receive, send, reconnect.

Owns the socket and its retry policy (delay min(2 x attempt, 10) s, at most `max_retry` failed
attempts in a row, as livekit-agents). It hands decoded ServerMessages to the worker and sends the
WorkerMessages it is given; it decides nothing about jobs and never sees a process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlparse, urlunparse

import aiohttp
from livekit import api
from livekit.protocol import agent as agent_pb

from worker_runtime import protocol

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
REGISTER_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 10.0
PING_INTERVAL_S = 10
HEARTBEAT_S = 30.0
MAX_DELAY_S = 10.0


class ConnectionFailed(RuntimeError):
    """The worker could not (re)connect and gives up; the message says why."""


def agent_url(url: str) -> str:
    """`<url>/agent` with http(s) turned into ws(s); a path in `url` is kept."""
    parsed = urlparse(url)
    scheme = {"http": "ws", "https": "wss"}.get(parsed.scheme, parsed.scheme)
    path = parsed.path.rstrip("/") + "/agent"
    return urlunparse((scheme, parsed.netloc, path, "", parsed.query, ""))


def retry_delay_s(attempt: int) -> float:
    """Seconds to wait before retry number `attempt` (0 for the first)."""
    return min(2.0 * attempt, MAX_DELAY_S)


@dataclass(slots=True, kw_only=True)
class ConnectionHandlers:
    """What the worker wants to hear about."""

    register_message: Callable[[], agent_pb.WorkerMessage]
    on_registered: Callable[[agent_pb.RegisterWorkerResponse], None]
    on_message: Callable[[agent_pb.ServerMessage], None]
    on_lost: Callable[[str], None]


@dataclass(slots=True, kw_only=True)
class Credentials:
    url: str
    api_key: str
    api_secret: str = field(repr=False)


class Connection:
    """One logical connection to LiveKit that survives socket drops until `max_retry`."""

    def __init__(self, creds: Credentials, handlers: ConnectionHandlers, *, max_retry: int) -> None:
        self._creds = creds
        self._handlers = handlers
        self._max_retry = max_retry
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()
        self._registered = False
        self._served = False
        self._outbox: asyncio.Queue[agent_pb.WorkerMessage] = asyncio.Queue()

    @property
    def registered(self) -> bool:
        return self._registered

    def _token(self) -> str:
        grants = api.VideoGrants(agent=True)
        token = api.AccessToken(self._creds.api_key, self._creds.api_secret).with_grants(grants)
        return token.to_jwt()

    async def run(self) -> None:
        """Connect and serve until `aclose()`; `ConnectionFailed` after max_retry failures."""
        self._session = aiohttp.ClientSession()
        failures = 0
        try:
            while not self._closing.is_set():
                try:
                    await self._connect_and_serve()
                    failures = 0
                    continue
                except ConnectionFailed:
                    raise
                except (aiohttp.ClientError, OSError, TimeoutError, protocol.ProtocolError) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                if self._closing.is_set():
                    break
                if self._served:  # it was registered: a fresh series of attempts begins
                    failures = 0
                if failures >= self._max_retry:
                    raise ConnectionFailed(
                        f"could not connect to LiveKit at {self._creds.url} after "
                        f"{failures + 1} attempts (last error: {error})"
                    )
                delay = retry_delay_s(failures)
                failures += 1
                logger.warning(
                    "connection to LiveKit failed, retrying",
                    extra={"error": error, "attempt": failures, "retry_in_s": delay},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
        finally:
            await self._session.close()

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        headers = {"Authorization": f"Bearer {self._token()}"}
        try:
            return await self._session.ws_connect(
                agent_url(self._creds.url),
                headers=headers,
                heartbeat=HEARTBEAT_S,
                timeout=aiohttp.ClientWSTimeout(ws_close=5.0),
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise ConnectionFailed(
                    f"LiveKit at {self._creds.url} refused the API key and secret "
                    f"(HTTP {exc.status}): check LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
                ) from None
            raise

    async def _connect_and_serve(self) -> None:
        self._served = False
        ws = await asyncio.wait_for(self._open(), CONNECT_TIMEOUT_S)
        self._ws = ws
        try:
            self._outbox = asyncio.Queue()  # nothing stale from an earlier socket
            await self._register(ws)
            await self._serve(ws)
        finally:
            self._ws = None
            was_registered, self._registered = self._registered, False
            await ws.close()
            if was_registered:
                self._handlers.on_lost("closing" if self._closing.is_set() else "connection lost")

    async def _register(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        msg = self._handlers.register_message()
        await asyncio.wait_for(ws.send_bytes(protocol.encode(msg)), SEND_TIMEOUT_S)
        frame = await ws.receive(timeout=REGISTER_TIMEOUT_S)
        if frame.type != aiohttp.WSMsgType.BINARY:
            raise protocol.ProtocolError(f"expected the register response, got {frame.type.name}")
        first = protocol.decode(frame.data)
        if protocol.kind(first) != "register":
            raise protocol.ProtocolError(f"expected register first, got {protocol.kind(first)}")
        self._registered = True
        self._served = True
        self._handlers.on_registered(first.register)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        helpers = (
            asyncio.create_task(self._ping_forever(), name="ws-ping"),
            asyncio.create_task(self._write_forever(ws), name="ws-write"),
        )
        try:
            await self._receive_forever(ws)
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _write_forever(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while True:
            msg = await self._outbox.get()
            try:
                await asyncio.wait_for(ws.send_bytes(protocol.encode(msg)), SEND_TIMEOUT_S)
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                logger.warning("could not send a message", extra={"error": str(exc)})
                return  # the reader sees the broken socket and reconnects
            finally:
                self._outbox.task_done()

    async def _ping_forever(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            self.send(protocol.ping(int(time.time() * 1000)))

    async def _receive_forever(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        while not self._closing.is_set():
            frame = await ws.receive(timeout=3 * PING_INTERVAL_S)
            if frame.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.ERROR,
            ):
                if self._closing.is_set():
                    return
                raise aiohttp.ClientConnectionError(
                    f"LiveKit closed the connection ({frame.type.name})"
                )
            if frame.type != aiohttp.WSMsgType.BINARY:
                logger.warning("ignoring a non-binary frame", extra={"frame_type": frame.type.name})
                continue
            try:
                msg = protocol.decode(frame.data)
            except protocol.ProtocolError as exc:
                logger.warning("ignoring a malformed server message", extra={"error": str(exc)})
                continue
            if protocol.kind(msg) == "go_away":
                logger.info("server sent go_away, reconnecting")
                return
            self._handlers.on_message(msg)

    def send(self, msg: agent_pb.WorkerMessage) -> bool:
        """Queue `msg` for the socket; False (dropped) while not registered."""
        if self._ws is None or not self._registered:
            logger.debug(
                "not connected, dropping a message", extra={"kind": msg.WhichOneof("message")}
            )
            return False
        self._outbox.put_nowait(msg)
        return True

    async def aclose(self) -> None:
        """Stop reconnecting and close the socket; `run()` then returns. Idempotent."""
        ws = self._ws
        if ws is not None and not self._closing.is_set():
            with contextlib.suppress(TimeoutError):  # let the last statuses go out
                await asyncio.wait_for(self._outbox.join(), SEND_TIMEOUT_S)
        self._closing.set()
        if ws is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.close(), 5.0)
