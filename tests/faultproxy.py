"""A loopback fault proxy for LiveKit's agent WebSocket: cut, refuse, stall, delay and inject.

It listens on 127.0.0.1 only and pipes each connection to a real livekit-server. The client's
HTTP upgrade request goes through with its Sec-WebSocket-Extensions header removed, so that no
permessage-deflate is negotiated and every frame is plain (aiohttp's `ws_connect` offers none by
default anyway; RSV1 frames would simply be forwarded). Once the server's `101` head has gone
through, the server->client bytes are split into RFC 6455 frames, so that `delay` holds whole
frames and `inject` puts its frame between two real ones, never inside one, and never between the
fragments of a message. Client->server bytes are piped unparsed.

The frame functions at the top are pure (no I/O, no clock) and unit-tested; `FaultProxy` is the
asyncio proxy and `ThreadedFaultProxy` runs one in a thread of its own for synchronous tests.
The LiveKit message builders at the bottom make the payloads the fault tests inject.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from livekit.protocol import agent as agent_pb

T = TypeVar("T")

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
HEAD_END = b"\r\n\r\n"
READ_SIZE = 65536


# -- pure: RFC 6455 frames and the upgrade heads -------------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameHeader:
    """One frame's header; `size` counts its bytes (mask key included), `length` the payload's."""

    fin: bool
    rsv1: bool
    opcode: int
    masked: bool
    length: int
    size: int


def encode_frame(
    payload: bytes, *, opcode: int = OP_BINARY, fin: bool = True, rsv1: bool = False
) -> bytes:
    """An unmasked (server->client) frame, with the shortest length form that fits."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | (opcode & 0x0F)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, 126, n)
    else:
        head = struct.pack("!BBQ", first, 127, n)
    return head + payload


def decode_header(buf: bytes | bytearray) -> FrameHeader | None:
    """The header at the start of `buf`, or None while `buf` is too short to hold all of it."""
    if len(buf) < 2:
        return None
    first, second = buf[0], buf[1]
    masked = bool(second & 0x80)
    length, size = second & 0x7F, 2
    if length == 126:
        if len(buf) < 4:
            return None
        (length,), size = struct.unpack_from("!H", buf, 2), 4
    elif length == 127:
        if len(buf) < 10:
            return None
        (length,), size = struct.unpack_from("!Q", buf, 2), 10
    if masked:
        size += 4
    if len(buf) < size:
        return None
    return FrameHeader(
        fin=bool(first & 0x80),
        rsv1=bool(first & 0x40),
        opcode=first & 0x0F,
        masked=masked,
        length=length,
        size=size,
    )


class FrameSplitter:
    """Cuts a byte stream, fed in arbitrary pieces, into whole frames (header and payload)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._in_message = False

    @property
    def in_message(self) -> bool:
        """True between the first and the last fragment of a fragmented message: a data frame
        may not go in there (control frames may)."""
        return self._in_message

    def feed(self, data: bytes) -> list[tuple[FrameHeader, bytes]]:
        """Every frame `data` completes, in order; a partial frame waits for the next feed."""
        self._buf += data
        frames = []
        while (header := decode_header(self._buf)) is not None:
            end = header.size + header.length
            if len(self._buf) < end:
                break
            frames.append((header, bytes(self._buf[:end])))
            del self._buf[:end]
            if header.opcode < OP_CLOSE:  # a data frame or a continuation
                self._in_message = not header.fin
        return frames


def strip_extensions(request_head: bytes) -> bytes:
    """The upgrade request without Sec-WebSocket-Extensions, so no compression is negotiated."""
    lines = request_head.split(b"\r\n")
    kept = [ln for ln in lines if not ln.lower().startswith(b"sec-websocket-extensions:")]
    return b"\r\n".join(kept)


def request_path(request_head: bytes) -> str:
    """The path of an HTTP request head (`GET /agent?x=1 HTTP/1.1` -> `/agent`)."""
    words = request_head.split(b"\r\n", 1)[0].split()
    return words[1].decode(errors="replace").split("?", 1)[0] if len(words) >= 2 else ""


def is_switching_protocols(response_head: bytes) -> bool:
    """True for an `HTTP/1.1 101` response head: WebSocket frames follow it."""
    status_line = response_head.split(b"\r\n", 1)[0].split()
    return len(status_line) >= 2 and status_line[1] == b"101"


# -- the asyncio proxy -------------------------------------------------------------------------

Kind = Literal["raw", "frame", "injected", "end"]


class _Pipe:
    """One client connection and its upstream; server->client goes through a queue of frames."""

    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.upstream_reader: asyncio.StreamReader | None = None
        self.upgraded = False
        self.closed = False
        self.faulted = True
        """False for a connection whose path the proxy leaves alone (see FaultProxy `paths`)."""
        self.to_client: asyncio.Queue[tuple[float, bytes, Kind]] = asyncio.Queue()
        self.splitter = FrameSplitter()
        self.waiting_injections: list[bytes] = []  # for the end of a fragmented message
        self.tasks: set[asyncio.Task[None]] = set()

    def inject(self, frame: bytes) -> bool:
        if not self.upgraded or self.closed or not self.faulted:
            return False
        if self.splitter.in_message:
            self.waiting_injections.append(frame)
        else:
            self.to_client.put_nowait((0.0, frame, "injected"))
        return True

    async def run(self, client_reader: asyncio.StreamReader) -> None:
        opening = asyncio.create_task(self._open_upstream(), name="faultproxy-open")
        self.tasks.add(opening)
        await asyncio.wait([opening])  # not `await opening`: a cut cancels it, not this handler
        if opening.cancelled() or opening.exception() is not None:
            return  # cut, or the upstream is down: the client sees its connection closed
        assert self.upstream_reader is not None
        sides = [
            asyncio.create_task(self._client_to_server(client_reader), name="faultproxy-up"),
            asyncio.create_task(self._write_to_client(), name="faultproxy-down-write"),
        ]
        reading = asyncio.create_task(
            self._read_from_server(self.upstream_reader), name="faultproxy-down"
        )
        self.tasks.update((*sides, reading))
        # Either the client hung up, or everything the server sent was delivered.
        await asyncio.wait(sides, return_when=asyncio.FIRST_COMPLETED)

    async def _open_upstream(self) -> None:
        host, port = self.proxy.upstream_host, self.proxy.upstream_port
        self.upstream_reader, self.upstream = await asyncio.wait_for(
            asyncio.open_connection(host, port), 10
        )

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.upgraded and self.faulted:
            self.proxy.live -= 1
        for task in self.tasks:
            task.cancel()
        for writer in (self.client, self.upstream):
            if writer is not None:
                writer.close()

    async def _client_to_server(self, reader: asyncio.StreamReader) -> None:
        assert self.upstream is not None
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = strip_extensions(await reader.readuntil(HEAD_END))
            self.faulted = self.proxy.faults(request_path(head))
            await self._forward(self.upstream, head)
            while data := await reader.read(READ_SIZE):
                await self._forward(self.upstream, data)

    async def _forward(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        if self.faulted:
            await self.proxy._flowing.wait()  # a stall holds the bytes here, in order
        writer.write(data)
        await writer.drain()

    async def _read_from_server(self, reader: asyncio.StreamReader) -> None:
        try:
            with contextlib.suppress(
                OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError
            ):
                head = await reader.readuntil(HEAD_END)
                self.to_client.put_nowait((0.0, head, "raw"))
                if not is_switching_protocols(head):
                    while data := await reader.read(READ_SIZE):
                        self.to_client.put_nowait((0.0, data, "raw"))
                    return
                self._upgrade()
                while data := await reader.read(READ_SIZE):
                    due = time.monotonic() + (self.proxy._delay_s if self.faulted else 0.0)
                    for _, frame in self.splitter.feed(data):
                        self.to_client.put_nowait((due, frame, "frame"))
                        if not self.splitter.in_message:
                            for injected in self.waiting_injections:
                                self.to_client.put_nowait((0.0, injected, "injected"))
                            self.waiting_injections.clear()
        finally:
            self.to_client.put_nowait((0.0, b"", "end"))

    def _upgrade(self) -> None:
        self.upgraded = True
        if not self.faulted:
            return
        self.proxy.connections += 1
        self.proxy.live += 1

    async def _write_to_client(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                due, data, kind = await self.to_client.get()
                if kind == "end":
                    return
                if (wait_s := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait_s)  # the `delay` fault
                if self.faulted:
                    await self.proxy._flowing.wait()
                # counted before the write, so that a client that read it also sees it counted
                if kind == "frame" and self.faulted:
                    self.proxy.frames_to_client += 1
                elif kind == "injected":
                    self.proxy.injected += 1
                await self._forward(self.client, data)


class FaultProxy:
    """A WebSocket-aware TCP proxy on 127.0.0.1 in front of `upstream_host:upstream_port`.

    Use it as `async with FaultProxy(host, port) as proxy:` and point the client at `proxy.url`.
    Every fault can be switched at any time from the proxy's event loop (`ThreadedFaultProxy` for
    other threads). With `paths`, only connections whose request path starts with one of them
    are faulted and counted (e.g. `("/agent",)`: a worker's control connection, not its jobs'
    room connections, which reach LiveKit through the same URL); the others are piped as they are.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, paths: tuple[str, ...] = ()
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.paths = paths
        self.port = 0
        """The port it listens on, once entered."""
        self.connections = 0
        """Connections upgraded to WebSocket (the server answered 101) since the start."""
        self.live = 0
        """Upgraded connections open now."""
        self.frames_to_client = 0
        """Real server->client frames written to the client's socket (injected ones not counted)."""
        self.injected = 0
        """Injected frames written to a client's socket."""
        self.refused = 0
        """Connections closed at once because `refuse(True)` was on."""
        self._server: asyncio.Server | None = None
        self._pipes: set[_Pipe] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._refusing = False
        self._delay_s = 0.0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def faults(self, path: str) -> bool:
        """Whether a connection to `path` is one the faults act on."""
        return not self.paths or path.startswith(self.paths)

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        for pipe in list(self._pipes):
            pipe.close()
        # The cut ends every handler; cancelling one instead makes asyncio's stream callback
        # log an error on Python 3.11 (it asks a cancelled task for its exception).
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=15)
        await self._server.wait_closed()

    # -- the faults ----------------------------------------------------------------------------

    def cut(self) -> None:
        """Close every connection it pipes, both sides, now; new ones are still accepted."""
        for pipe in list(self._pipes):
            if pipe.faulted:
                pipe.close()

    def refuse(self, on: bool) -> None:
        """While on, every new connection is accepted and closed at once (before any byte, so
        whatever its path)."""
        self._refusing = on

    def stall(self) -> None:
        """Forward nothing, either way, on open and new connections, and close none of them."""
        self._flowing.clear()

    def resume(self) -> None:
        """End a stall: what was held goes on, in order."""
        self._flowing.set()

    def delay(self, seconds: float) -> None:
        """Deliver each server->client frame read from now on `seconds` late (0: no delay)."""
        self._delay_s = max(0.0, seconds)

    def inject(self, payload: bytes, *, opcode: int = OP_BINARY, rsv1: bool = False) -> int:
        """Send one unmasked FIN frame to the client of every upgraded connection, between two
        real frames (after those already read from the server); how many connections got it."""
        frame = encode_frame(payload, opcode=opcode, rsv1=rsv1)
        return sum(pipe.inject(frame) for pipe in list(self._pipes))

    # -- connections ---------------------------------------------------------------------------

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        pipe = _Pipe(self, writer)
        self._pipes.add(pipe)
        try:
            await pipe.run(reader)
        finally:
            pipe.close()
            self._pipes.discard(pipe)
            try:
                await asyncio.gather(*pipe.tasks, return_exceptions=True)
            finally:  # only now is it done: __aexit__ waits for the handlers still in the set
                self._handlers.discard(task)


class ThreadedFaultProxy:
    """A `FaultProxy` on an event loop in a daemon thread of its own, for synchronous tests.

    `with ThreadedFaultProxy(host, port) as proxy:`; each fault method returns once the proxy's
    loop applied it (it is handed over with `call_soon_threadsafe`), so it is safe from any thread.
    """

    def __init__(
        self, upstream_host: str, upstream_port: int, *, paths: tuple[str, ...] = ()
    ) -> None:
        self._proxy = FaultProxy(upstream_host, upstream_port, paths=paths)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="faultproxy", daemon=True
        )

    def __enter__(self) -> ThreadedFaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._proxy.__aenter__(), self._loop).result(10)
        return self

    def __exit__(self, *_: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._proxy.__aexit__(), self._loop).result(30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def _call(self, fn: Callable[[], T]) -> T:
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except Exception as exc:  # handed to the calling thread
                done.set_exception(exc)

        self._loop.call_soon_threadsafe(run)
        return done.result(10)

    @property
    def port(self) -> int:
        return self._proxy.port

    @property
    def url(self) -> str:
        return self._proxy.url

    @property
    def connections(self) -> int:
        return self._proxy.connections

    @property
    def live(self) -> int:
        return self._proxy.live

    @property
    def frames_to_client(self) -> int:
        return self._proxy.frames_to_client

    @property
    def injected(self) -> int:
        return self._proxy.injected

    @property
    def refused(self) -> int:
        return self._proxy.refused

    def cut(self) -> None:
        self._call(self._proxy.cut)

    def refuse(self, on: bool) -> None:
        self._call(lambda: self._proxy.refuse(on))

    def stall(self) -> None:
        self._call(self._proxy.stall)

    def resume(self) -> None:
        self._call(self._proxy.resume)

    def delay(self, seconds: float) -> None:
        self._call(lambda: self._proxy.delay(seconds))

    def inject(self, payload: bytes, *, opcode: int = OP_BINARY, rsv1: bool = False) -> int:
        return self._call(lambda: self._proxy.inject(payload, opcode=opcode, rsv1=rsv1))


# -- payloads for the LiveKit agent protocol ---------------------------------------------------

MALFORMED_PROTOBUF = b"\x0a\xff\xff\xff\xff\x0f\x01"
"""Field 1 (register) announcing a 4 GiB body it does not carry: ParseFromString fails."""
OVERSIZE_BYTES = 8 * 1024 * 1024
"""Twice aiohttp's default `max_msg_size` (4 MiB), which the runtime's `ws_connect` keeps."""


def termination(job_id: str) -> bytes:
    """A JobTermination for `job_id`."""
    return agent_pb.ServerMessage(
        termination=agent_pb.JobTermination(job_id=job_id)
    ).SerializeToString()


def assignment(job_id: str) -> bytes:
    """A JobAssignment for `job_id`, which the worker never accepted."""
    job = agent_pb.Job(id=job_id, type=agent_pb.JT_ROOM)
    return agent_pb.ServerMessage(
        assignment=agent_pb.JobAssignment(job=job, token="not-a-token")
    ).SerializeToString()


def availability(job_id: str) -> bytes:
    """An AvailabilityRequest for a job with no room, which the server will never assign."""
    job = agent_pb.Job(id=job_id, type=agent_pb.JT_ROOM)
    return agent_pb.ServerMessage(
        availability=agent_pb.AvailabilityRequest(job=job)
    ).SerializeToString()


def register_response(worker_id: str) -> bytes:
    """A second RegisterWorkerResponse, mid-session."""
    return agent_pb.ServerMessage(
        register=agent_pb.RegisterWorkerResponse(worker_id=worker_id)
    ).SerializeToString()
