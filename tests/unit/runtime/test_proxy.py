"""The connection to LiveKit honours HTTPS_PROXY, HTTP_PROXY, NO_PROXY and `http_proxy`.

The choice is a table of pure cases; then a worker's connection meets a recording HTTP proxy and
a stand-in for LiveKit's agent endpoint, both on 127.0.0.1, to show where its bytes really go.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import urllib.request
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from livekit.protocol import agent as agent_pb

from worker_runtime.connection import (
    Connection,
    ConnectionHandlers,
    Credentials,
    choose_proxy,
)

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sets the variables it means; whatever the machine has set does not count."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


HTTPS_P = "http://tls-proxy:3128"
HTTP_P = "http://plain-proxy:3128"
BOTH = {"https": HTTPS_P, "http": HTTP_P}
WSS = "wss://lk.example.com"
WS = "ws://lk.example.com:7880"


def no(entries: str) -> dict[str, str]:
    """Both proxies and NO_PROXY, as `getproxies_environment()` returns them."""
    return {**BOTH, "no": entries}


CHOICES: list[tuple[str, str, Mapping[str, str], str | None, str | None]] = [
    ("wss_takes_https_proxy", WSS, BOTH, None, HTTPS_P),
    ("ws_takes_http_proxy", WS, BOTH, None, HTTP_P),
    ("https_takes_https_proxy", "https://lk.example.com", BOTH, None, HTTPS_P),
    ("http_takes_http_proxy", "http://lk.example.com", BOTH, None, HTTP_P),
    ("wss_ignores_http_proxy", WSS, {"http": HTTP_P}, None, None),
    ("ws_ignores_https_proxy", WS, {"https": HTTPS_P}, None, None),
    ("nothing_set_is_direct", WSS, {}, None, None),
    ("proxy_without_scheme_is_http", WSS, {"https": "p:3128"}, None, "http://p:3128"),
    ("no_proxy_host", WSS, no("lk.example.com"), None, None),
    ("no_proxy_domain_in_a_list", WSS, no("x.org, example.com"), None, None),
    ("no_proxy_dot_domain", WSS, no(".example.com"), None, None),
    ("no_proxy_star", WSS, no("*"), None, None),
    ("no_proxy_host_port", WS, no("lk.example.com:7880"), None, None),
    ("no_proxy_other_port", "ws://lk.example.com:80", no("lk.example.com:7880"), None, HTTP_P),
    ("no_proxy_ipv6", "ws://[::1]:7880", no("::1"), None, None),
    ("no_proxy_is_no_substring", WSS, no("ample.com"), None, HTTPS_P),
    ("no_proxy_cidr_not_understood", "ws://10.1.2.3:7880", no("10.0.0.0/8"), None, HTTP_P),
    ("option_wins", WSS, no("*"), "http://mine:8080", "http://mine:8080"),
    ("empty_option_is_direct", WSS, BOTH, "", None),
]


@pytest.mark.parametrize(
    ("url", "proxies", "configured", "expected"),
    [case[1:] for case in CHOICES],
    ids=[case[0] for case in CHOICES],
)
def test_proxy_follows_the_scheme_no_proxy_and_the_option(
    url: str, proxies: Mapping[str, str], configured: str | None, expected: str | None
) -> None:
    assert choose_proxy(url, proxies, configured) == expected


def test_lower_case_variables_are_read_and_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:1")
    monkeypatch.setenv("https_proxy", "http://lower:1")
    monkeypatch.setenv("no_proxy", "other.example.com")
    proxies = urllib.request.getproxies_environment()
    assert choose_proxy("wss://lk.example.com", proxies, None) == "http://lower:1"
    assert choose_proxy("wss://other.example.com", proxies, None) is None


# -- a worker's connection, a proxy and LiveKit on 127.0.0.1 --------------------------------


class RecordingProxy:
    """An HTTP proxy on 127.0.0.1 that writes down each request's head.

    CONNECT is tunnelled; an absolute-form request (`GET ws://host/agent`, what aiohttp sends
    for ws:// through a proxy) is forwarded in origin form. Its connections end with it.
    """

    def __init__(self) -> None:
        self.heads: list[str] = []
        self.seen = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> RecordingProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for task in self._handlers:  # Python 3.11's wait_closed leaves the connections open
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            self.heads.append(head)
            self.seen.set()
            method, target, _ = head.split("\r\n", 1)[0].split(" ")
            if method == "CONNECT":
                host, _, port = target.rpartition(":")
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                parts = urlsplit(target)
                up_reader, up_writer = await asyncio.open_connection(parts.hostname, parts.port)
                up_writer.write(head.replace(target, parts.path, 1).encode("latin-1"))
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            writer.close()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side ends, then close `writer` (which ends the other direction too)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class FakeLiveKit:
    """LiveKit's agent endpoint: answers a registration and counts them."""

    def __init__(self) -> None:
        self.registrations = 0
        app = web.Application()
        app.router.add_get("/agent", self._agent)
        self.server = TestServer(app, host="127.0.0.1")

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    async def _agent(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        first = await ws.receive()
        if first.type == aiohttp.WSMsgType.BINARY:
            assert agent_pb.WorkerMessage.FromString(first.data).HasField("register")
            reply = agent_pb.RegisterWorkerResponse(worker_id="AW_proxy")
            await ws.send_bytes(agent_pb.ServerMessage(register=reply).SerializeToString())
            self.registrations += 1
            async for _ in ws:  # until the worker closes
                pass
        return ws


@pytest.fixture
async def livekit() -> AsyncIterator[FakeLiveKit]:
    lk = FakeLiveKit()
    async with lk.server:
        yield lk


@pytest.fixture
async def proxy() -> AsyncIterator[RecordingProxy]:
    async with RecordingProxy() as p:
        yield p


@pytest.fixture
async def other_proxy() -> AsyncIterator[RecordingProxy]:
    """A proxy the connection must not use."""
    async with RecordingProxy() as p:
        yield p


def register_message() -> agent_pb.WorkerMessage:
    return agent_pb.WorkerMessage(register=agent_pb.RegisterWorkerRequest(agent_name="proxied"))


def unexpected(what: object) -> None:
    raise AssertionError(f"unexpected: {what}")


@contextlib.asynccontextmanager
async def running(url: str, http_proxy: str | None = None) -> AsyncIterator[asyncio.Event]:
    """A worker's connection to `url`, running; the event is set once it registered."""
    registered = asyncio.Event()
    handlers = ConnectionHandlers(
        register_message=register_message,
        on_registered=lambda _: registered.set(),
        on_message=unexpected,
        on_lost=lambda _: None,
        on_gave_up=unexpected,
    )
    creds = Credentials(url=url, api_key="key", api_secret="a-livekit-secret-of-at-least-32-bytes")
    conn = Connection(creds, handlers, max_retry=100, http_proxy=http_proxy)
    run = asyncio.create_task(conn.run(), name="connection")
    try:
        yield registered
    finally:
        await conn.aclose()
        await asyncio.wait_for(run, 1.0)


async def register_once(url: str, http_proxy: str | None = None) -> None:
    async with running(url, http_proxy) as registered:
        await asyncio.wait_for(registered.wait(), 1.0)


async def test_ws_goes_through_http_proxy_and_registers(
    livekit: FakeLiveKit,
    proxy: RecordingProxy,
    other_proxy: RecordingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("HTTPS_PROXY", other_proxy.url)
    await register_once(f"ws://127.0.0.1:{livekit.port}")
    assert [h.split("\r\n")[0] for h in proxy.heads] == [
        f"GET ws://127.0.0.1:{livekit.port}/agent HTTP/1.1"
    ]
    assert (other_proxy.heads, livekit.registrations) == ([], 1)


async def test_wss_asks_https_proxy_for_a_tunnel_with_the_proxy_credentials_only(
    livekit: FakeLiveKit,
    proxy: RecordingProxy,
    other_proxy: RecordingProxy,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker_runtime.connection")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("://", "://agent:pr0xy-pw@"))
    monkeypatch.setenv("HTTP_PROXY", other_proxy.url)
    # the tunnel reaches a plain-HTTP LiveKit, so TLS fails after it: the CONNECT is the point
    async with running(f"wss://127.0.0.1:{livekit.port}"):
        await asyncio.wait_for(proxy.seen.wait(), 1.0)
    connect = proxy.heads[0]
    assert connect.startswith(f"CONNECT 127.0.0.1:{livekit.port} HTTP/1.1\r\n")
    basic = base64.b64encode(b"agent:pr0xy-pw").decode()
    assert f"Proxy-Authorization: Basic {basic}\r\n" in connect
    assert "Authorization: Bearer" not in connect  # LiveKit's token goes inside TLS only
    assert (other_proxy.heads, livekit.registrations) == ([], 0)
    [line] = [r for r in caplog.records if r.message == "connecting to LiveKit through a proxy"]
    assert vars(line)["proxy"] == proxy.url
    assert "pr0xy-pw" not in caplog.text


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NO_PROXY", "127.0.0.1"),
        ("no_proxy", "lk.example.com, 127.0.0.1"),
        ("NO_PROXY", "*"),
        ("NO_PROXY", "127.0.0.1:{port}"),
    ],
    ids=["host", "lower_case_list", "star", "host_port"],
)
async def test_no_proxy_covering_the_host_connects_directly(
    livekit: FakeLiveKit,
    proxy: RecordingProxy,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
) -> None:
    url = f"ws://127.0.0.1:{livekit.port}"
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    await register_once(url)
    assert len(proxy.heads) == 1  # the proxy works: without NO_PROXY it is used

    monkeypatch.setenv(variable, value.format(port=livekit.port))
    await register_once(url)
    assert (len(proxy.heads), livekit.registrations) == (1, 2)


async def test_http_proxy_option_wins_over_the_environment(
    livekit: FakeLiveKit,
    proxy: RecordingProxy,
    other_proxy: RecordingProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTP_PROXY", other_proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    await register_once(f"ws://127.0.0.1:{livekit.port}", http_proxy=proxy.url)
    assert (len(proxy.heads), other_proxy.heads, livekit.registrations) == (1, [], 1)


async def test_empty_http_proxy_option_connects_directly(
    livekit: FakeLiveKit, proxy: RecordingProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"ws://127.0.0.1:{livekit.port}"
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    await register_once(url)
    assert len(proxy.heads) == 1  # the proxy works: without the option it is used

    await register_once(url, http_proxy="")
    assert (len(proxy.heads), livekit.registrations) == (1, 2)
