"""Surface: the contract's routes and answers, served from a snapshot, as the runtime serves
them."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from agentworker_companion import state, surface
from tests.unit.companion.fake_livekit import free_port
from tests.unit.companion.test_state import JOB, facts
from worker_runtime import http_api

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

TOKEN = "t0ken"
AUTHORIZED = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[web.Request, web.Application]


class Worker:
    """What the app is handed: a snapshot to change between requests, the change stream, and
    handshake answers."""

    def __init__(self) -> None:
        self.facts = facts()
        self.changes = surface.Changes()
        self.retire_answer = ""
        self.unretire_answer = ""
        self.asked: list[str] = []

    def snapshot(self) -> state.Facts:
        return self.facts

    def move(self, **changes: Any) -> None:
        """What the companion does when livekit-agents moves: new facts, told to the stream."""
        self.facts = dataclasses.replace(self.facts, **changes)
        self.changes.observe(self.facts)

    async def retire(self) -> str:
        self.asked.append("retire")
        return self.retire_answer

    async def unretire(self) -> str:
        self.asked.append("unretire")
        return self.unretire_answer


@pytest.fixture
def worker() -> Worker:
    return Worker()


async def serve(worker: Worker, *, control_token: str = TOKEN) -> Client:
    app = surface.build_app(
        worker.snapshot,
        surface.Metrics(worker.snapshot),
        changes=worker.changes,
        retire=worker.retire,
        unretire=worker.unretire,
        control_token=control_token,
    )
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    return client


@pytest.fixture
async def client(worker: Worker) -> AsyncIterator[Client]:
    served = await serve(worker)
    yield served
    await served.close()


@pytest.mark.parametrize("path", ["/", "/healthz"])
async def test_health_is_ok_until_livekit_agents_says_otherwise(
    client: Client, worker: Worker, path: str
) -> None:
    response = await client.get(path)
    assert (response.status, await response.text()) == (200, "OK")
    worker.facts = facts(healthy=False)
    response = await client.get(path)
    assert (response.status, await response.text()) == (503, "unhealthy")


@pytest.mark.parametrize(
    ("changes", "status", "text"),
    [
        ({}, 200, "OK"),
        ({"effective_load": 0.9}, 200, "OK"),
        ({"registered": False}, 503, "not ready: starting"),
        ({"retired": True}, 503, "not ready: retired"),
        ({"drain_requested": True}, 503, "not ready: draining"),
    ],
    ids=["available", "full", "starting", "retired", "draining"],
)
async def test_readyz_is_ok_only_while_registered_and_not_draining(
    client: Client,
    worker: Worker,
    changes: dict[str, object],
    status: int,
    text: str,
) -> None:
    worker.facts = facts(**changes)
    response = await client.get("/readyz")
    assert (response.status, await response.text()) == (status, text)


async def test_worker_serves_the_document_of_the_current_facts(
    client: Client, worker: Worker
) -> None:
    worker.facts = facts(jobs=(JOB,))
    response = await client.get("/worker")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == {
        **state.worker_document(worker.facts),
        "generation": 1,
        "instance": worker.changes.instance,
    }


# -- /worker's change stream: the runtime's contract (worker_runtime/README.md#http) ----------

HELD_S = 0.1
"""How long a request must stay unanswered to count as held."""


async def read(client: Client, query: str = "") -> dict[str, Any]:
    response = await client.get(f"/worker{query}")
    assert response.status == 200, await response.text()
    document: dict[str, Any] = await response.json()
    return document


async def held(task: asyncio.Task[dict[str, Any]]) -> bool:
    """Whether the request is still unanswered after HELD_S."""
    done, _ = await asyncio.wait({task}, timeout=HELD_S)
    return not done


async def test_a_poll_after_an_older_generation_answers_at_once(
    client: Client, worker: Worker
) -> None:
    await read(client)
    worker.move(jobs=(JOB,))
    document = await read(client, "?after=1&wait=30")
    assert (document["generation"], document["active_jobs"]) == (2, 1)


async def test_a_poll_after_the_current_generation_is_held_until_it_changes(
    client: Client, worker: Worker
) -> None:
    await read(client)
    poll = asyncio.create_task(read(client, "?after=1&wait=30"))
    assert await held(poll)
    worker.move(effective_load=0.9)
    document = await poll
    assert (document["generation"], document["state"]) == (2, "full")


async def test_a_load_change_alone_does_not_answer_a_poll(client: Client, worker: Worker) -> None:
    await read(client)
    poll = asyncio.create_task(read(client, "?after=1&wait=0.3"))
    worker.move(load=0.5, effective_load=0.5)
    assert await held(poll)
    document = await poll  # the wait ended: the current document, load included
    assert (document["generation"], document["worker_load"]) == (1, 0.5)


async def test_a_poll_whose_wait_ends_answers_the_unchanged_document(
    client: Client, worker: Worker
) -> None:
    before = await read(client)
    assert await read(client, "?after=1&wait=0.05") == before


async def test_every_held_poll_wakes_on_one_change(client: Client, worker: Worker) -> None:
    await read(client)
    polls = [asyncio.create_task(read(client, "?after=1&wait=30")) for _ in range(5)]
    assert await held(polls[0])
    worker.move(drain_requested=True)
    documents = await asyncio.gather(*polls)
    assert {(d["generation"], d["state"]) for d in documents} == {(2, "draining")}


async def test_a_poll_naming_another_instance_answers_at_once(
    client: Client, worker: Worker
) -> None:
    await read(client)
    document = await read(client, "?after=1&wait=30&instance=before-the-restart")
    assert (document["generation"], document["instance"]) == (1, worker.changes.instance)


@pytest.mark.parametrize(
    "query",
    ["?after=x", "?after=-1", "?after=1&wait=ten", "?after=1&wait=-1", "?wait=5"],
    ids=["after-word", "after-negative", "wait-word", "wait-negative", "wait-alone"],
)
async def test_a_bad_poll_gets_400_saying_why(client: Client, query: str) -> None:
    response = await client.get(f"/worker{query}")
    assert response.status == 400
    error = (await response.json())["error"]
    assert ("after" in error) or ("wait" in error)


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"after": "3"},
        {"after": "3", "wait": "2.5", "instance": "abc"},
        {"after": "3", "wait": "600"},
        {"after": "x"},
        {"after": "1", "wait": "nan"},
        {"wait": "5"},
    ],
    ids=["plain", "after", "all-three", "capped", "bad-after", "bad-wait", "wait-alone"],
)
def test_a_long_poll_query_is_read_as_the_runtime_reads_it(query: dict[str, str]) -> None:
    assert parsed(surface.parse_poll, query) == parsed(http_api.parse_poll, query)


class ParsedPoll(Protocol):
    @property
    def after(self) -> int: ...
    @property
    def wait_s(self) -> float: ...
    @property
    def instance(self) -> str: ...


def parsed(
    parse: Callable[[Mapping[str, str]], ParsedPoll | None], query: Mapping[str, str]
) -> object:
    """The poll's parameters, None, or the error's message."""
    try:
        poll = parse(query)
    except ValueError as error:
        return str(error)
    return None if poll is None else (poll.after, poll.wait_s, poll.instance)


async def test_stopping_the_server_answers_the_held_polls_with_the_current_document() -> None:
    worker = Worker()
    app = surface.build_app(
        worker.snapshot,
        surface.Metrics(worker.snapshot),
        changes=worker.changes,
        retire=worker.retire,
        unretire=worker.unretire,
        control_token="",
    )
    port = free_port()
    server = surface.Server(app, host="127.0.0.1", port=port)
    await server.start()
    url = f"http://127.0.0.1:{port}/worker"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.5)) as session:

        async def poll() -> tuple[int, dict[str, Any]]:
            async with session.get(url, params={"after": "1", "wait": "30"}) as response:
                return response.status, await response.json()

        assert (await (await session.get(url)).json())["generation"] == 1
        polls = [asyncio.create_task(poll()) for _ in range(3)]
        done, _ = await asyncio.wait(polls, timeout=HELD_S)
        assert not done
        worker.facts = facts(closed=True)
        await server.aclose()  # its own shutdown would cut a held request after 1 s instead
        answers = await asyncio.gather(*polls)
    assert {(status, doc["state"], doc["generation"]) for status, doc in answers} == {
        (200, "closed", 2)
    }


async def test_metrics_are_read_from_the_worker_at_scrape_time(
    client: Client, worker: Worker
) -> None:
    worker.facts = facts(jobs=(JOB,), load=0.5, retired=True, idle_processes=3)
    response = await client.get("/metrics")
    assert response.headers["Content-Type"] == surface.CONTENT_TYPE
    lines = set((await response.text()).splitlines())
    assert {
        "agentworker_worker_active_jobs 1.0",
        "agentworker_worker_load 0.5",
        "agentworker_worker_registered 1.0",
        "agentworker_worker_draining 0.0",
        "agentworker_worker_retired 1.0",
        "agentworker_worker_idle_processes 3.0",
        "agentworker_worker_jobs_started_total 0.0",
        "agentworker_worker_job_start_latency_seconds_count 0.0",
    } <= lines


async def test_no_answer_names_the_server(client: Client) -> None:
    for method, path in (("GET", "/"), ("GET", "/worker"), ("POST", "/retire"), ("GET", "/no")):
        response = await client.request(method, path)
        assert "Server" not in response.headers, (method, path)


async def test_head_is_answered_like_get(client: Client) -> None:
    assert (await client.head("/readyz")).status == 200


async def test_retire_with_the_token_retires_and_delete_withdraws(
    client: Client, worker: Worker
) -> None:
    response = await client.post("/retire", headers=AUTHORIZED)
    assert (response.status, await response.json()) == (200, {"retired": True})
    response = await client.delete("/retire", headers=AUTHORIZED)
    assert (response.status, await response.json()) == (200, {"retired": False})
    assert worker.asked == ["retire", "unretire"]


async def test_a_busy_worker_refuses_to_retire_with_409_and_the_reason(
    client: Client, worker: Worker
) -> None:
    worker.retire_answer = "busy"
    response = await client.post("/retire", headers=AUTHORIZED)
    assert response.status == 409
    assert (await response.json())["reason"] == "busy"


@pytest.mark.parametrize(
    ("method", "answer", "body"),
    [
        ("POST", "busy", {"retired": False, "reason": "busy"}),
        ("DELETE", "draining", {"retired": True, "reason": "draining"}),
    ],
    ids=["refused-retirement", "refused-withdrawal"],
)
async def test_a_refusal_says_what_the_worker_stays(
    client: Client,
    worker: Worker,
    method: str,
    answer: str,
    body: dict[str, object],
) -> None:
    worker.retire_answer = worker.unretire_answer = answer
    response = await client.request(method, "/retire", headers=AUTHORIZED)
    assert await response.json() == body


async def test_a_draining_worker_refuses_the_withdrawal_with_409_and_the_reason(
    client: Client, worker: Worker
) -> None:
    worker.unretire_answer = "draining"
    response = await client.delete("/retire", headers=AUTHORIZED)
    assert response.status == 409
    assert (await response.json())["reason"] == "draining"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": TOKEN},
        {"Authorization": "Bearer "},
        {"Authorization": f"bearer {TOKEN}"},
    ],
    ids=["none", "wrong-token", "other-scheme", "no-scheme", "empty-token", "lowercase-scheme"],
)
@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_the_handshake_wants_the_bearer_token(
    client: Client, worker: Worker, headers: dict[str, str], method: str
) -> None:
    response = await client.request(method, "/retire", headers=headers)
    assert (response.status, await response.json()) == (401, {"error": "unauthorized"})
    assert worker.asked == []


async def test_without_a_token_there_is_no_handshake_at_all(worker: Worker) -> None:
    client = await serve(worker, control_token="")
    try:
        for method in ("POST", "DELETE"):
            response = await client.request(method, "/retire", headers={"Authorization": "Bearer "})
            assert response.status == 404
    finally:
        await client.close()
    assert worker.asked == []


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH"])
async def test_other_methods_on_retire_are_not_allowed_and_the_allowed_ones_are_named(
    client: Client, method: str
) -> None:
    response = await client.request(method, "/retire", headers=AUTHORIZED)
    assert response.status == 405
    assert set(response.headers["Allow"].split(",")) == {"POST", "DELETE"}


async def test_a_body_past_one_kilobyte_is_refused_before_the_worker_is_asked(
    client: Client, worker: Worker
) -> None:
    body = b"x" * (surface.MAX_BODY_BYTES + 1)
    response = await client.post("/retire", headers=AUTHORIZED, data=body)
    assert response.status == 413
    small = await client.post("/retire", headers=AUTHORIZED, data=b"{}")
    assert small.status == 200
    assert worker.asked == ["retire"]


async def test_the_token_is_checked_before_the_body_is_read(
    client: Client,
) -> None:
    body = b"x" * (surface.MAX_BODY_BYTES + 1)
    response = await client.post("/retire", data=body)
    assert response.status == 401


async def test_the_server_serves_on_its_address_until_closed() -> None:
    worker = Worker()
    app = surface.build_app(
        worker.snapshot,
        surface.Metrics(worker.snapshot),
        changes=worker.changes,
        retire=worker.retire,
        unretire=worker.unretire,
        control_token="",
    )
    port = free_port()
    server = surface.Server(app, host="127.0.0.1", port=port)
    await server.start()
    assert server.bound == f"127.0.0.1:{port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
        async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
            assert response.status == 200
        await server.aclose()
        assert server.bound is None
        with pytest.raises(aiohttp.ClientConnectionError):
            await session.get(f"http://127.0.0.1:{port}/healthz")
    await server.aclose()  # idempotent


async def test_a_port_in_use_raises_and_leaves_nothing_bound() -> None:
    worker = Worker()
    app = surface.build_app(
        worker.snapshot,
        surface.Metrics(worker.snapshot),
        changes=worker.changes,
        retire=worker.retire,
        unretire=worker.unretire,
        control_token="",
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = surface.Server(app, host="127.0.0.1", port=int(taken.getsockname()[1]))
        with pytest.raises(OSError, match=r"(?i)address already in use"):
            await server.start()
    assert server.bound is None


def test_a_snapshot_is_not_kept_between_scrapes() -> None:
    worker = Worker()
    metrics = surface.Metrics(worker.snapshot)
    assert b"agentworker_worker_active_jobs 0.0" in metrics.render()
    worker.facts = dataclasses.replace(worker.facts, jobs=(JOB,))
    assert b"agentworker_worker_active_jobs 1.0" in metrics.render()
