"""Protocol faults between the worker and LiveKit, through a WebSocket-aware fault proxy.

Each test runs a livekit-server of its own behind `tests.faultproxy.FaultProxy`, starts a real
job, breaks the agent connection (cut, stall, delay, or a frame the server never sent), and
shows that the running job is untouched (it ends on its own and the server hears its end) and
that the worker goes on taking jobs. What the worker and the server saw is read from their logs.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlparse

import pytest
from livekit import api
from livekit.protocol import agent as agent_pb

from tests import faultproxy
from tests.e2e.runtime.harness import (
    DedicatedLiveKit,
    LiveKit,
    WorkerFactory,
    WorkerProc,
    eventually,
)
from tests.faultproxy import FaultProxy, FrameSplitter, ThreadedFaultProxy

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

AGENTS = "tests.e2e.runtime.agents"


@pytest.fixture
async def proxy(dedicated_livekit: DedicatedLiveKit) -> AsyncIterator[FaultProxy]:
    port = urlparse(dedicated_livekit.livekit.url).port
    assert port is not None
    async with FaultProxy("127.0.0.1", port) as proxy:
        yield proxy


@pytest.fixture
async def worker(
    dedicated_livekit: DedicatedLiveKit, proxy: FaultProxy, workers: WorkerFactory, agent_name: str
) -> WorkerProc:
    """A worker whose agent connection goes through the proxy (prewarmed for two jobs)."""
    lk = dedicated_livekit.livekit
    through = LiveKit(url=proxy.url, api_key=lk.api_key, api_secret=lk.api_secret)
    return await workers.start(f"{AGENTS}:opts", through, agent_name=agent_name, idle=2)


async def run_job(lk: LiveKit, worker: WorkerProc, agent_name: str, sleep_s: float) -> str:
    """Dispatch a job that sleeps `sleep_s` (straight to the server); its id once it runs."""
    room = f"room-{uuid.uuid4().hex[:8]}"
    await lk.dispatch(agent_name, room, json.dumps({"sleep_s": sleep_s}))
    [run] = await worker.wait_for("e2e job running", room=room, within_s=20)
    job_id = run["job_id"]
    assert isinstance(job_id, str)
    return job_id


def worker_ids(worker: WorkerProc) -> list[str]:
    """The worker id of each registration, in order."""
    return [str(r["worker_id"]) for r in worker.find("registered with LiveKit")]


async def ran_to_its_end(worker: WorkerProc, job_id: str, within_s: float = 20) -> None:
    """The job's entrypoint returned by itself and the worker saw it succeed."""
    await worker.wait_for("job succeeded", job_id=job_id, within_s=within_s)
    assert worker.find("e2e job done", job_id=job_id), "the job was cut off"
    assert not worker.find("e2e shutdown callback", job_id=job_id, reason="terminated")
    assert not worker.find("job failed", job_id=job_id)


async def server_heard_end_after_registering_again(
    server: DedicatedLiveKit, job_id: str, worker_id: str
) -> None:
    # The server forgets a worker's jobs with its connection, so the new registration's report
    # is logged (at debug level) as an update for an unknown job: it arrived, on the new socket.
    await server.wait_for(
        "received job update for unknown job", jobID=job_id, workerID=worker_id, within_s=10
    )


async def test_cut_mid_job_registers_again_and_the_job_reports_its_end(
    dedicated_livekit: DedicatedLiveKit, proxy: FaultProxy, worker: WorkerProc, agent_name: str
) -> None:
    lk = dedicated_livekit.livekit
    job_id = await run_job(lk, worker, agent_name, sleep_s=6)

    proxy.cut()

    await worker.wait_for("registered with LiveKit", count=2)
    assert (proxy.connections, proxy.live) == (2, 1)
    assert worker.find("reported running jobs after registering", job_ids=[job_id])
    await ran_to_its_end(worker, job_id)
    await server_heard_end_after_registering_again(dedicated_livekit, job_id, worker_ids(worker)[1])
    next_job = await run_job(lk, worker, agent_name, sleep_s=0)
    await ran_to_its_end(worker, next_job)


@pytest.mark.timeout(100)
async def test_stall_longer_than_the_receive_timeout_reconnects_after_resume(
    dedicated_livekit: DedicatedLiveKit, proxy: FaultProxy, worker: WorkerProc, agent_name: str
) -> None:
    lk = dedicated_livekit.livekit
    # it outlasts the stall: at most 3 x PING_INTERVAL_S (30 s) and a 5 s close handshake
    job_id = await run_job(lk, worker, agent_name, sleep_s=40)

    proxy.stall()

    lost = await worker.wait_for("lost the connection to LiveKit", within_s=45)
    assert lost[0]["active_jobs"] == 1
    failed = await worker.wait_for("connection to LiveKit failed, retrying")
    assert str(failed[0]["error"]).startswith("TimeoutError"), "not the worker's receive timeout"
    assert proxy.connections == 1
    proxy.resume()

    await worker.wait_for("registered with LiveKit", count=2, within_s=20)
    assert worker.find("e2e job running", job_id=job_id)
    next_job = await run_job(lk, worker, agent_name, sleep_s=0)
    await ran_to_its_end(worker, next_job)
    await ran_to_its_end(worker, job_id, within_s=30)
    await server_heard_end_after_registering_again(dedicated_livekit, job_id, worker_ids(worker)[1])


async def test_server_frames_half_a_second_late_still_offer_accept_and_run_jobs(
    dedicated_livekit: DedicatedLiveKit,
    proxy: FaultProxy,
    workers: WorkerFactory,
    agent_name: str,
) -> None:
    lk = dedicated_livekit.livekit
    proxy.delay(0.5)  # the register response, every offer and assignment, every pong
    through = LiveKit(url=proxy.url, api_key=lk.api_key, api_secret=lk.api_secret)
    worker = await workers.start(f"{AGENTS}:opts", through, agent_name=agent_name, idle=2)

    first = await run_job(lk, worker, agent_name, sleep_s=3)
    second = await run_job(lk, worker, agent_name, sleep_s=0)

    await ran_to_its_end(worker, second)
    await ran_to_its_end(worker, first)
    assert proxy.connections == 1
    assert not worker.find("lost the connection to LiveKit")
    for job_id in (first, second):
        await dedicated_livekit.wait_for("job ended", jobID=job_id, status="JS_SUCCESS")


UNKNOWN_JOB = "AJ_neverseen"
NEWER_MEMBER = b"\x92\x03\x03new"
"""Field 50 of ServerMessage, length-delimited: what a newer protocol version could add."""
INJECTIONS = [
    # (id, payload, opcode, the worker's log line that shows it reached the worker, its fields)
    (
        "malformed-protobuf",
        faultproxy.MALFORMED_PROTOBUF,
        faultproxy.OP_BINARY,
        "ignoring a malformed server message",
        {},
    ),
    (
        "text-frame",
        b"hello",
        faultproxy.OP_TEXT,
        "ignoring a non-binary frame",
        {"frame_type": "TEXT"},
    ),
    (
        "termination-of-an-unknown-job",
        faultproxy.termination(UNKNOWN_JOB),
        faultproxy.OP_BINARY,
        "server asked to end a job",
        {"job_id": UNKNOWN_JOB},
    ),
    (
        "assignment-of-an-unknown-job",
        faultproxy.assignment(UNKNOWN_JOB),
        faultproxy.OP_BINARY,
        "assignment for an unknown job",
        {"job_id": UNKNOWN_JOB},
    ),
    (
        # accepted, then failed when no assignment comes (7.5 s); the server ignores both answers
        "offer-of-a-job-with-no-room",
        faultproxy.availability(UNKNOWN_JOB),
        faultproxy.OP_BINARY,
        "no assignment came for an accepted job",
        {"job_id": UNKNOWN_JOB},
    ),
    (
        # a member a newer protocol version may add to ServerMessage (field 50)
        "message-of-a-newer-protocol",
        NEWER_MEMBER,
        faultproxy.OP_BINARY,
        "ignoring a server message this protocol version does not know",
        {"error": "ServerMessage with no known member (6 bytes)"},
    ),
    (
        # a known message carrying a field a newer protocol version added: handled as usual
        "known-message-with-newer-fields",
        faultproxy.termination(UNKNOWN_JOB) + NEWER_MEMBER,
        faultproxy.OP_BINARY,
        "server asked to end a job",
        {"job_id": UNKNOWN_JOB},
    ),
    (
        "second-register-response",
        faultproxy.register_response("AW_impostor"),
        faultproxy.OP_BINARY,
        "unexpected server message",
        {"kind": "register"},
    ),
]


@pytest.mark.parametrize(
    ("payload", "opcode", "logged", "fields"),
    [case[1:] for case in INJECTIONS],
    ids=[case[0] for case in INJECTIONS],
)
async def test_unexpected_frame_is_logged_and_ignored_on_the_same_connection(
    dedicated_livekit: DedicatedLiveKit,
    proxy: FaultProxy,
    worker: WorkerProc,
    agent_name: str,
    payload: bytes,
    opcode: int,
    logged: str,
    fields: dict[str, object],
) -> None:
    lk = dedicated_livekit.livekit
    job_id = await run_job(lk, worker, agent_name, sleep_s=5)

    assert proxy.inject(payload, opcode=opcode) == 1

    [record] = await worker.wait_for(logged)  # it reached the worker
    assert fields.items() <= record.items(), record
    next_job = await run_job(lk, worker, agent_name, sleep_s=0)
    await ran_to_its_end(worker, next_job)
    await ran_to_its_end(worker, job_id)
    for done in (job_id, next_job):
        await dedicated_livekit.wait_for("job ended", jobID=done, status="JS_SUCCESS")
    assert proxy.injected == 1
    assert (proxy.connections, proxy.live) == (1, 1)
    assert not worker.find("lost the connection to LiveKit")
    assert worker_ids(worker)[-1] != "AW_impostor"


async def test_oversize_frame_makes_the_worker_reconnect_and_the_job_goes_on(
    dedicated_livekit: DedicatedLiveKit, proxy: FaultProxy, worker: WorkerProc, agent_name: str
) -> None:
    lk = dedicated_livekit.livekit
    job_id = await run_job(lk, worker, agent_name, sleep_s=5)

    # aiohttp refuses a message over ws_connect's max_msg_size (4 MiB) with close code 1009 and
    # an ERROR message, which the runtime treats as a lost connection
    assert proxy.inject(b"\0" * faultproxy.OVERSIZE_BYTES) == 1

    [failed] = await worker.wait_for("connection to LiveKit failed, retrying")
    assert failed["error"] == "ClientConnectionError: LiveKit closed the connection (ERROR)"
    await worker.wait_for("registered with LiveKit", count=2)
    await dedicated_livekit.wait_for(
        "error reading from websocket", error="websocket: close 1009 (message too big)"
    )
    assert (proxy.connections, proxy.live) == (2, 1)
    next_job = await run_job(lk, worker, agent_name, sleep_s=0)
    await ran_to_its_end(worker, next_job)
    await ran_to_its_end(worker, job_id)
    await server_heard_end_after_registering_again(dedicated_livekit, job_id, worker_ids(worker)[1])


async def test_refused_connections_are_retried_until_the_proxy_lets_one_through(
    dedicated_livekit: DedicatedLiveKit, proxy: FaultProxy, worker: WorkerProc, agent_name: str
) -> None:
    lk = dedicated_livekit.livekit
    job_id = await run_job(lk, worker, agent_name, sleep_s=8)

    proxy.refuse(True)
    proxy.cut()

    await worker.wait_for("connection to LiveKit failed, retrying", count=2)

    async def refused_twice() -> bool:
        return proxy.refused >= 2

    await eventually(refused_twice, within_s=10, what="two refused connections")
    proxy.refuse(False)
    await worker.wait_for("registered with LiveKit", count=2, within_s=15)
    assert proxy.connections == 2
    await ran_to_its_end(worker, job_id)
    next_job = await run_job(lk, worker, agent_name, sleep_s=0)
    await ran_to_its_end(worker, next_job)


def open_agent_socket(port: int, lk: LiveKit) -> socket.socket:
    """A raw WebSocket to `/agent` on 127.0.0.1:`port`, upgraded and registered."""
    token = api.AccessToken(lk.api_key, lk.api_secret).with_grants(api.VideoGrants(agent=True))
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /agent HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token.to_jwt()}\r\n\r\n".encode()
    )
    head = b""
    while faultproxy.HEAD_END not in head:
        head += sock.recv(1)
    assert faultproxy.is_switching_protocols(head), head
    register = agent_pb.WorkerMessage(
        register=agent_pb.RegisterWorkerRequest(type=agent_pb.JT_ROOM)
    )
    frame = bytearray(faultproxy.encode_frame(register.SerializeToString()))
    frame[1] |= 0x80  # a client's frame is masked; the key 0000 leaves the payload as it is
    sock.sendall(bytes(frame[:2]) + b"\0\0\0\0" + bytes(frame[2:]))
    return sock


def next_frame(sock: socket.socket, splitter: FrameSplitter, opcode: int) -> bytes:
    """The payload of the next frame with `opcode` (others are skipped); a 5 s socket timeout."""
    while True:
        data = sock.recv(65536)
        assert data, "the connection closed"
        for header, raw in splitter.feed(data):
            if header.opcode == opcode:
                return raw[header.size :]


def test_threaded_proxy_injects_after_the_server_frames_then_cuts_and_refuses(
    dedicated_livekit: DedicatedLiveKit,
) -> None:
    lk = dedicated_livekit.livekit
    port = urlparse(lk.url).port
    assert port is not None
    with ThreadedFaultProxy("127.0.0.1", port) as proxy:
        with open_agent_socket(proxy.port, lk) as sock:
            splitter = FrameSplitter()
            first = protocol_message(next_frame(sock, splitter, faultproxy.OP_BINARY))
            assert first.WhichOneof("message") == "register"
            assert (proxy.connections, proxy.live, proxy.frames_to_client) == (1, 1, 1)

            assert proxy.inject(b"hello", opcode=faultproxy.OP_TEXT) == 1
            assert next_frame(sock, splitter, faultproxy.OP_TEXT) == b"hello"
            assert proxy.injected == 1

            proxy.cut()
            assert proxy.live == 0
            assert sock.recv(65536) == b""

        proxy.refuse(True)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as refused:
            assert refused.recv(1) == b""
        assert (proxy.refused, proxy.connections) == (1, 1)


def protocol_message(payload: bytes) -> agent_pb.ServerMessage:
    msg = agent_pb.ServerMessage()
    msg.ParseFromString(payload)
    return msg
