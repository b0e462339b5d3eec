"""The worker's HTTP server answers what the README documents and nothing else.

Requests go out as raw bytes, so that no client normalises a path (`/..`, `%2e`) or a method
on the way: every documented route answers its methods, any other method 405 with Allow, any
other path 404; no response names the server software; POST and DELETE /retire read a small
body only.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import pytest

from tests.e2e.runtime.harness import LiveKit, WorkerFactory, WorkerProc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

TARGET = "tests.e2e.runtime.agents:opts"
IO_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes


async def send(
    worker: WorkerProc, method: str, path: str, *, headers: str = "", body: bytes = b""
) -> Answer:
    """One raw HTTP/1.1 request on its own connection; the answer, read to the end."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(worker.host, worker.port), IO_TIMEOUT_S
    )
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: {worker.host}\r\nConnection: close\r\n{headers}"
        if body and "transfer-encoding" not in headers.lower():
            head += f"Content-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    header_block, _, content = rest.partition(b"\r\n\r\n")
    fields = {}
    for line in header_block.decode().split("\r\n"):
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), fields, content)


def allowed(answer: Answer) -> set[str]:
    return {m.strip() for m in answer.headers.get("allow", "").split(",") if m.strip()}


DOCUMENTED = [
    ("GET", "/"),
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/worker"),
    ("HEAD", "/worker"),
    ("GET", "/metrics"),
]
WRONG_METHOD = [
    ("POST", "/", {"GET", "HEAD"}),
    ("POST", "/healthz", {"GET", "HEAD"}),
    ("PUT", "/readyz", {"GET", "HEAD"}),
    ("DELETE", "/worker", {"GET", "HEAD"}),
    ("PATCH", "/metrics", {"GET", "HEAD"}),
    ("OPTIONS", "/worker", {"GET", "HEAD"}),
    ("TRACE", "/healthz", {"GET", "HEAD"}),
    ("GET", "/retire", {"POST", "DELETE"}),
    ("HEAD", "/retire", {"POST", "DELETE"}),
    ("PUT", "/retire", {"POST", "DELETE"}),
]
UNKNOWN_PATHS = [
    "/healthz/",
    "/worker/",
    "/worker.json",
    "/metrics/extra",
    "/retire/",
    "/debug",
    "/debug/pprof/",
    "/static/",
    "/.git/config",
    "/..",
    "/../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "/worker_runtime/",
    "/%00",
]


async def test_every_route_answers_its_documented_methods_and_nothing_else(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    token = uuid.uuid4().hex
    worker = await workers.start(
        TARGET, livekit, agent_name=agent_name, env={"AGENT_CONTROL_TOKEN": token}
    )
    answers: list[Answer] = []
    for method, path in DOCUMENTED:
        answer = await send(worker, method, path)
        assert answer.status == 200, (method, path, answer)
        answers.append(answer)
    assert b'"agent_name"' in (await send(worker, "GET", "/worker")).body
    for method in ("POST", "DELETE"):
        answer = await send(worker, method, "/retire")
        assert answer.status == 401, f"{method} /retire is there, with a token"
    for method, path, allow in WRONG_METHOD:
        answer = await send(worker, method, path)
        assert (answer.status, allowed(answer)) == (405, allow), (method, path, answer)
        answers.append(answer)
    for path in UNKNOWN_PATHS:
        answer = await send(worker, "GET", path)
        assert answer.status == 404, (path, answer)
        assert b"<a href" not in answer.body, f"a listing at {path}"
        answers.append(answer)
    for answer in answers:
        assert "date" in answer.headers, answer  # the headers were read, and
        assert "server" not in answer.headers, answer  # none names aiohttp or Python
    assert await worker.status("/readyz") == 200, "the probes left the worker as it was"


async def test_retire_takes_a_small_body_and_refuses_a_large_one(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    token = uuid.uuid4().hex
    worker = await workers.start(
        TARGET, livekit, agent_name=agent_name, env={"AGENT_CONTROL_TOKEN": token}
    )
    auth = f"Authorization: Bearer {token}\r\n"
    big = b"x" * 64 * 1024

    answer = await send(worker, "POST", "/retire", headers=auth, body=big)
    assert answer.status == 413, answer
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big)
    answer = await send(
        worker, "POST", "/retire", headers=auth + "Transfer-Encoding: chunked\r\n", body=chunked
    )
    assert answer.status == 413, answer
    assert (await send(worker, "DELETE", "/retire", headers=auth, body=big)).status == 413
    assert await worker.status("/readyz") == 200, "a refused request did not retire the worker"
    assert (await send(worker, "POST", "/retire", body=big)).status == 401, "no token, no read"

    answer = await send(worker, "POST", "/retire", headers=auth, body=b"{}")
    assert (answer.status, answer.body) == (200, b'{"retired": true}')


async def test_retire_is_absent_without_a_token_whatever_the_method(
    livekit: LiveKit, workers: WorkerFactory, agent_name: str
) -> None:
    worker = await workers.start(TARGET, livekit, agent_name=agent_name)
    assert (await send(worker, "GET", "/healthz")).status == 200
    for method in ("POST", "DELETE", "GET", "PUT"):
        answer = await send(worker, method, "/retire", headers="Authorization: Bearer \r\n")
        assert answer.status == 404, (method, answer)
