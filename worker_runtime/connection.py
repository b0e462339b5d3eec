"""The WebSocket to LiveKit's agent endpoint: connect, register, receive, send, reconnect.

Owns the socket and its retry policy (delay min(2 x attempt, 10) s, as livekit-agents). After
`max_retry` failed attempts in a row, or at once when LiveKit refuses the credentials, it tells
the worker it gives up, and goes on retrying until closed: running jobs do not need the socket,
but their reports do. Messages the worker marks `hold` (job status updates) wait, in order and
bounded, for the next registration when there is no socket. It never registers once closing. It
hands decoded ServerMessages to the worker; it decides nothing about jobs and never sees a process.
It goes through the proxy that `WorkerOptions.http_proxy` or the standard variables name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse, urlsplit, urlunparse

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
MAX_HELD_MESSAGES = 1000
"""Bound on messages held for the next registration; beyond it the oldest are dropped."""


class ConnectionFailed(RuntimeError):
    """The worker could not (re)connect and gives up; the message says why."""


def agent_url(url: str) -> str:
    """`<url>/agent` with http(s) turned into ws(s); a path in `url` is kept."""
    parsed = urlparse(url)
    scheme = {"http": "ws", "https": "wss"}.get(parsed.scheme, parsed.scheme)
    path = parsed.path.rstrip("/") + "/agent"
    return urlunparse((scheme, parsed.netloc, path, "", parsed.query, ""))


_PROXY_FOR = {"ws": "http", "wss": "https", "http": "http", "https": "https"}
"""A URL scheme -> the `<scheme>_proxy` variable that serves it. Not aiohttp's trust_env: for a
ws(s):// URL it reads WS_PROXY and WSS_PROXY only, which no one sets."""


def choose_proxy(url: str, proxies: Mapping[str, str], configured: str | None) -> str | None:
    """The proxy to reach `url` through, or None to connect directly.

    `configured` (`WorkerOptions.http_proxy`) wins when not None, "" meaning directly. Else
    `proxies`, as `urllib.request.getproxies_environment()` reads HTTPS_PROXY, HTTP_PROXY and
    NO_PROXY (lower case winning): https's for wss:// and https://, http's for ws:// and
    http://, none when NO_PROXY covers the host by the standard library's rule (`*`, the host,
    a domain suffix, host:port; no CIDR ranges). A proxy without a scheme is http://.
    """
    if configured is not None:
        return configured or None
    parsed = urlsplit(url)
    proxy = proxies.get(_PROXY_FOR.get(parsed.scheme, ""), "")
    # host[:port] without brackets: the standard library matches NO_PROXY entries with either
    host = parsed.netloc.rpartition("@")[2].replace("[", "").replace("]", "")
    if not proxy or _bypassed(host, proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _bypassed(host: str, proxies: Mapping[str, str]) -> bool:
    # not proxy_bypass, which on macOS and Windows asks the system settings, not NO_PROXY
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # not in typeshed
    return bool(bypass(host, proxies))


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
    on_gave_up: Callable[[ConnectionFailed], None]
    """Once per run: max_retry attempts failed in a row, or LiveKit refused the credentials.
    The connection goes on retrying until `aclose()`."""


@dataclass(slots=True, kw_only=True)
class Credentials:
    url: str
    api_key: str
    api_secret: str = field(repr=False)


class Connection:
    """One logical connection to LiveKit that survives socket drops until `aclose()`."""

    def __init__(
        self,
        creds: Credentials,
        handlers: ConnectionHandlers,
        *,
        max_retry: int,
        http_proxy: str | None = None,
    ) -> None:
        self._creds = creds
        self._handlers = handlers
        self._max_retry = max_retry
        self._http_proxy = http_proxy
        self._proxy: str | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closing = asyncio.Event()
        self._registered = False
        self._served = False
        self._gave_up = False
        self._outbox: asyncio.Queue[tuple[agent_pb.WorkerMessage, bool]] = asyncio.Queue()
        self._sending: tuple[agent_pb.WorkerMessage, bool] | None = None
        self._held: deque[agent_pb.WorkerMessage] = deque()

    @property
    def registered(self) -> bool:
        return self._registered

    def _token(self) -> str:
        grants = api.VideoGrants(agent=True)
        token = api.AccessToken(self._creds.api_key, self._creds.api_secret).with_grants(grants)
        return token.to_jwt()

    async def run(self) -> None:
        """Connect and serve until `aclose()`, reconnecting after every failure.

        After max_retry failures in a row, or a 401/403, `on_gave_up` is called (once) and the
        retries go on at the longest delay's pace until `aclose()`.
        """
        # the proxy is chosen here, not by aiohttp's trust_env (see _PROXY_FOR)
        self._session = aiohttp.ClientSession()
        url = agent_url(self._creds.url)
        self._proxy = choose_proxy(url, urllib.request.getproxies_environment(), self._http_proxy)
        if self._proxy is not None:
            parts = urlsplit(self._proxy)  # its user info may hold a password: never logged
            shown = f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
            logger.info("connecting to LiveKit through a proxy", extra={"proxy": shown})
        failures = 0
        try:
            while not self._closing.is_set():
                try:
                    await self._connect_and_serve()
                    failures = 0
                    continue
                except ConnectionFailed as exc:  # the credentials were refused
                    error, refused = str(exc), True
                except (aiohttp.ClientError, OSError, TimeoutError, protocol.ProtocolError) as exc:
                    error, refused = f"{type(exc).__name__}: {exc}", False
                if self._closing.is_set():
                    break
                if self._served:  # it was registered: a fresh series of attempts begins
                    failures = 0
                if not self._gave_up and (refused or failures >= self._max_retry):
                    self._give_up(error if refused else self._exhausted(failures, error))
                delay = retry_delay_s(failures)
                failures += 1
                extra = {"error": error, "attempt": failures, "retry_in_s": delay}
                if self._gave_up:
                    logger.warning(
                        "still no connection to LiveKit, retrying while the jobs drain", extra=extra
                    )
                else:
                    logger.warning("connection to LiveKit failed, retrying", extra=extra)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), delay)
        finally:
            await self._session.close()

    def _exhausted(self, failures: int, error: str) -> str:
        return (
            f"could not connect to LiveKit at {self._creds.url} after "
            f"{failures + 1} attempts (last error: {error})"
        )

    def _give_up(self, reason: str) -> None:
        self._gave_up = True
        self._handlers.on_gave_up(ConnectionFailed(reason))

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        assert self._session is not None
        headers = {"Authorization": f"Bearer {self._token()}"}
        try:
            return await self._session.ws_connect(
                agent_url(self._creds.url),
                headers=headers,
                proxy=self._proxy,
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

    async def _open_unless_closing(self) -> aiohttp.ClientWebSocketResponse | None:
        """A new socket, or None when `aclose()` came first (a connect in progress is dropped)."""
        opening = asyncio.create_task(
            asyncio.wait_for(self._open(), CONNECT_TIMEOUT_S), name="ws-open"
        )
        closing = asyncio.create_task(self._closing.wait(), name="ws-open-closing")
        try:
            await asyncio.wait([opening, closing], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (opening, closing):
                task.cancel()
            await asyncio.gather(opening, closing, return_exceptions=True)
        if opening.cancelled():
            return None
        ws = opening.result()  # raises what the attempt raised
        if self._closing.is_set():
            await ws.close()
            return None
        return ws

    async def _connect_and_serve(self) -> None:
        self._served = False
        ws = await self._open_unless_closing()
        if ws is None:
            return
        self._ws = ws
        try:
            self._outbox = asyncio.Queue()
            await self._register(ws)
            await self._serve(ws)
        finally:
            self._ws = None
            was_registered, self._registered = self._registered, False
            self._hold_unsent()
            await ws.close()
            if was_registered:
                self._handlers.on_lost("closing" if self._closing.is_set() else "connection lost")

    async def _register(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        msg = self._handlers.register_message()
        await asyncio.wait_for(ws.send_bytes(protocol.encode(msg)), SEND_TIMEOUT_S)
        frame = await ws.receive(timeout=REGISTER_TIMEOUT_S)
        if self._closing.is_set():  # the worker is closing: it must not serve again
            return
        if frame.type != aiohttp.WSMsgType.BINARY:
            raise protocol.ProtocolError(f"expected the register response, got {frame.type.name}")
        first = protocol.decode(frame.data)
        if protocol.kind(first) != "register":
            raise protocol.ProtocolError(f"expected register first, got {protocol.kind(first)}")
        self._registered = True
        self._served = True
        while self._held:  # what waited for this registration goes first, in order
            self._outbox.put_nowait((self._held.popleft(), True))
        self._handlers.on_registered(first.register)

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        if self._closing.is_set():
            return
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
            self._sending = await self._outbox.get()
            try:
                data = protocol.encode(self._sending[0])
                await asyncio.wait_for(ws.send_bytes(data), SEND_TIMEOUT_S)
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                logger.warning("could not send a message", extra={"error": str(exc)})
                return  # the reader sees the broken socket and reconnects
            finally:
                self._outbox.task_done()
            self._sending = None

    def _hold_unsent(self) -> None:
        """The socket is gone: keep what was queued (or being sent) with `hold` for the next one."""
        unsent = [self._sending] if self._sending is not None else []
        self._sending = None
        while not self._outbox.empty():
            unsent.append(self._outbox.get_nowait())
            self._outbox.task_done()
        for msg, hold in reversed(unsent):
            if hold:
                self._held.appendleft(msg)
        self._trim_held()

    def _trim_held(self) -> None:
        while len(self._held) > MAX_HELD_MESSAGES:
            dropped = self._held.popleft()
            logger.warning(
                "too many messages waiting for LiveKit, dropping the oldest",
                extra={"kind": dropped.WhichOneof("message"), "held": len(self._held)},
            )

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
            except protocol.UnknownMessage as exc:
                logger.warning(
                    "ignoring a server message this protocol version does not know",
                    extra={"error": str(exc), "protocol": protocol.PROTOCOL_VERSION},
                )
                continue
            except protocol.ProtocolError as exc:
                logger.warning("ignoring a malformed server message", extra={"error": str(exc)})
                continue
            if protocol.kind(msg) == "go_away":
                logger.info("server sent go_away, reconnecting")
                return
            self._handlers.on_message(msg)

    def send(self, msg: agent_pb.WorkerMessage, *, hold: bool = False) -> bool:
        """Queue `msg` for the socket; False when it was dropped.

        While not registered, a message sent with `hold` (a job's status) waits for the next
        registration, in order, at most MAX_HELD_MESSAGES of them; any other is dropped.
        """
        if self._ws is not None and self._registered:
            self._outbox.put_nowait((msg, hold))
            return True
        if hold and not self._closing.is_set():
            self._held.append(msg)
            self._trim_held()
            return True
        logger.debug("not connected, dropping a message", extra={"kind": msg.WhichOneof("message")})
        return False

    async def aclose(self) -> None:
        """Stop reconnecting and close the socket; `run()` then returns. Idempotent.

        Messages still held for a registration that will not come are dropped, with a warning.
        """
        ws = self._ws
        if ws is not None and not self._closing.is_set():
            with contextlib.suppress(TimeoutError):  # let the last statuses go out
                await asyncio.wait_for(self._outbox.join(), SEND_TIMEOUT_S)
        self._closing.set()
        if self._held:
            logger.warning(
                "closing with messages LiveKit never received", extra={"held": len(self._held)}
            )
            self._held.clear()
        if ws is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.close(), 5.0)
