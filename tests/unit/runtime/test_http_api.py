"""/worker's change stream: the generation follows what the operator decides on, and a long poll
(`GET /worker?after=<generation>`) answers at once when it moved, else when it moves, when its
wait ends or when the server stops."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from collections.abc import AsyncIterator, Mapping

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from worker_runtime import http_api
from worker_runtime.http_api import JobSummary, WorkerSnapshot
from worker_runtime.metrics import WorkerMetrics

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

Client = TestClient[web.Request, web.Application]
JOB = JobSummary(id="AJ_1", room="call-1", started_at=1.5)
HELD_S = 0.1
"""How long a request must stay unanswered to count as held."""


def snapshot(**changes: object) -> WorkerSnapshot:
    base = WorkerSnapshot(
        worker_id="AW_1",
        state="available",
        ready=True,
        draining=False,
        agent_name="support",
        worker_type="JT_ROOM",
        load=0.25,
        load_threshold=0.7,
        jobs=(),
        idle_processes=2,
        retired=False,
        sdk_version="0.1.0",
        protocol_version=1,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]  # test table


# -- the pure part ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"state": "full"},
        {"state": "draining", "draining": True, "ready": False},
        {"state": "retired", "retired": True, "ready": False},
        {"jobs": (JOB,)},
        {"idle_processes": 1},
        {"load_threshold": 0.9},
        {"worker_id": "AW_2"},
        {"load_jobs": 1},
    ],
    ids=[
        "full",
        "draining",
        "retired",
        "a-job-started",
        "idle-processes",
        "threshold",
        "new-id",
        "the-load-counts-a-new-job",
    ],
)
def test_what_the_operator_decides_on_changes_the_decision_view(changes: dict[str, object]) -> None:
    assert http_api.decision_view(snapshot(**changes)) != http_api.decision_view(snapshot())


@pytest.mark.parametrize(
    "changes",
    [{"load": 0.69}, {"load": 0.0}, {"jobs": ()}],
    ids=["load-rises", "load-falls", "nothing"],
)
def test_the_load_alone_leaves_the_decision_view_as_it_was(changes: dict[str, object]) -> None:
    assert http_api.decision_view(snapshot(**changes)) == http_api.decision_view(snapshot())


def test_a_job_is_known_by_its_id_whatever_order_the_jobs_come_in() -> None:
    other = JobSummary(id="AJ_2", room="call-2", started_at=2.5)
    one = http_api.decision_view(snapshot(jobs=(JOB, other)))
    assert one == http_api.decision_view(snapshot(jobs=(other, JOB)))
    assert one != http_api.decision_view(snapshot(jobs=(JOB, dataclasses.replace(other, id="X"))))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, None),
        ({"after": "3"}, http_api.Poll(after=3, wait_s=http_api.MAX_WAIT_S)),
        ({"after": "0", "wait": "2.5"}, http_api.Poll(after=0, wait_s=2.5)),
        ({"after": "7", "wait": "0"}, http_api.Poll(after=7, wait_s=0.0)),
        ({"after": "7", "wait": "600"}, http_api.Poll(after=7, wait_s=http_api.MAX_WAIT_S)),
        ({"after": "7", "wait": "2.5e-01"}, http_api.Poll(after=7, wait_s=0.25)),
        ({"after": "7", "instance": "abc"}, http_api.Poll(after=7, wait_s=30.0, instance="abc")),
        ({"unrelated": "x"}, None),
    ],
    ids=[
        "plain-read",
        "after",
        "after-and-wait",
        "no-wait",
        "wait-capped",
        "wait-exponent",
        "instance",
        "other",
    ],
)
def test_a_query_asks_for_a_long_poll_with_after(
    query: Mapping[str, str], expected: http_api.Poll | None
) -> None:
    assert http_api.parse_poll(query) == expected


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"after": "x"}, "after='x' is not a generation"),
        ({"after": "-1"}, "after='-1' is not a generation"),
        ({"after": ""}, "after='' is not a generation"),
        ({"after": "1.5"}, "after='1.5' is not a generation"),
        ({"after": "9" * 19}, "is not a generation"),
        ({"after": "1", "wait": "ten"}, "wait='ten' is not a number of seconds like 10 or 2.5"),
        ({"after": "1", "wait": "-1"}, "wait='-1' is not a number of seconds"),
        ({"after": "1", "wait": "nan"}, "wait='nan' is not a number of seconds"),
        ({"after": "1", "wait": "inf"}, "wait='inf' is not a number of seconds"),
        ({"after": "1", "wait": "-inf"}, "wait='-inf' is not a number of seconds"),
        ({"wait": "5"}, "wait and instance need after=<generation>"),
        ({"instance": "abc"}, "wait and instance need after=<generation>"),
    ],
    ids=[
        "after-word",
        "after-negative",
        "after-empty",
        "after-fraction",
        "after-huge",
        "wait-word",
        "wait-negative",
        "wait-nan",
        "wait-inf",
        "wait-minus-inf",
        "wait-alone",
        "instance-alone",
    ],
)
def test_a_bad_long_poll_names_the_parameter_and_what_is_right(
    query: Mapping[str, str], message: str
) -> None:
    with pytest.raises(http_api.BadPoll, match=message.replace("[", r"\[").replace(".", r"\.")):
        http_api.parse_poll(query)


def test_the_generation_starts_at_one_and_grows_only_when_the_view_changes() -> None:
    changes = http_api.Changes()
    assert changes.observe(snapshot()) == 1
    assert changes.observe(snapshot(load=0.6)) == 1
    assert changes.observe(snapshot(state="full")) == 2
    assert changes.observe(snapshot(state="full", load=0.9)) == 2
    assert changes.observe(snapshot()) == 3  # back to an earlier view is a change too


def test_each_process_has_an_instance_of_its_own() -> None:
    assert http_api.Changes().instance != http_api.Changes().instance
    assert http_api.Changes("given").instance == "given"


# -- the route ----------------------------------------------------------------------------


class Worker:
    """What the app is handed: a snapshot to change, and the change stream it tells."""

    def __init__(self) -> None:
        self.snap = snapshot()
        self.changes = http_api.Changes()

    def snapshot(self) -> WorkerSnapshot:
        return self.snap

    def move(self, **changes: object) -> None:
        """What the worker does on a move: a new snapshot, told to the change stream."""
        self.snap = dataclasses.replace(self.snap, **changes)  # type: ignore[arg-type]
        self.changes.observe(self.snap)

    def app(self) -> web.Application:
        return http_api.build_app(
            self.snapshot,
            WorkerMetrics(),
            changes=self.changes,
            retire=lambda: "",
            unretire=lambda: "",
            control_token="",
        )


@pytest.fixture
def worker() -> Worker:
    return Worker()


@pytest.fixture
async def client(worker: Worker) -> AsyncIterator[Client]:
    served: Client = TestClient(TestServer(worker.app()))
    await served.start_server()
    yield served
    await served.close()


async def read(client: Client, query: str = "") -> dict[str, object]:
    response = await client.get(f"/worker{query}")
    assert response.status == 200, await response.text()
    document: dict[str, object] = await response.json()
    return document


async def held(task: asyncio.Task[dict[str, object]]) -> bool:
    """Whether the request is still unanswered after HELD_S."""
    done, _ = await asyncio.wait({task}, timeout=HELD_S)
    return not done


async def test_a_plain_read_answers_at_once_with_the_generation_and_instance(
    client: Client, worker: Worker
) -> None:
    document = await read(client)
    assert document == http_api.worker_document(worker.snap) | {
        "generation": 1,
        "instance": worker.changes.instance,
    }


async def test_a_poll_after_an_older_generation_answers_at_once(
    client: Client, worker: Worker
) -> None:
    first = await read(client)
    worker.move(jobs=(JOB,))
    document = await read(client, f"?after={first['generation']}&wait=30")
    assert (document["generation"], document["active_jobs"]) == (2, 1)


async def test_a_poll_after_the_current_generation_is_held_until_it_changes(
    client: Client, worker: Worker
) -> None:
    await read(client)
    poll = asyncio.create_task(read(client, "?after=1&wait=30"))
    assert await held(poll)
    worker.move(state="full")
    document = await poll
    assert (document["generation"], document["state"]) == (2, "full")


async def test_a_load_change_alone_does_not_answer_a_poll(client: Client, worker: Worker) -> None:
    await read(client)
    poll = asyncio.create_task(read(client, "?after=1&wait=0.3"))
    worker.move(load=0.69)
    assert await held(poll)
    document = await poll  # the wait ended: the current document, load included
    assert (document["generation"], document["worker_load"]) == (1, 0.69)


async def test_a_poll_whose_wait_ends_answers_the_unchanged_document(
    client: Client, worker: Worker
) -> None:
    before = await read(client)
    assert await read(client, "?after=1&wait=0.05") == before


async def test_every_held_poll_wakes_on_one_change(client: Client, worker: Worker) -> None:
    await read(client)
    polls = [asyncio.create_task(read(client, "?after=1&wait=30")) for _ in range(5)]
    assert await held(polls[0])
    worker.move(state="retired", retired=True, ready=False)
    documents = await asyncio.gather(*polls)
    assert {(d["generation"], d["state"]) for d in documents} == {(2, "retired")}


async def test_a_poll_naming_another_instance_answers_at_once(
    client: Client, worker: Worker
) -> None:
    await read(client)
    document = await read(client, "?after=1&wait=30&instance=before-the-restart")
    assert (document["generation"], document["instance"]) == (1, worker.changes.instance)


async def test_a_poll_naming_this_instance_is_held(client: Client, worker: Worker) -> None:
    await read(client)
    poll = asyncio.create_task(read(client, f"?after=1&wait=30&instance={worker.changes.instance}"))
    assert await held(poll)
    worker.move(idle_processes=3)
    assert (await poll)["generation"] == 2


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


async def test_stopping_the_server_answers_the_held_polls_with_the_current_document(
    worker: Worker,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = http_api.HttpServer(worker.app(), host="127.0.0.1", port=port)
    await server.start()
    url = f"http://127.0.0.1:{port}/worker"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1.5)) as session:

        async def poll() -> tuple[int, dict[str, object]]:
            async with session.get(url, params={"after": "1", "wait": "30"}) as response:
                return response.status, await response.json()

        assert (await (await session.get(url)).json())["generation"] == 1
        polls = [asyncio.create_task(poll()) for _ in range(3)]
        done, _ = await asyncio.wait(polls, timeout=HELD_S)
        assert not done
        worker.snap = dataclasses.replace(worker.snap, state="closed", ready=False)
        await server.aclose()  # its own shutdown would cut a held request after 1 s instead
        answers = await asyncio.gather(*polls)
    assert {(status, doc["state"], doc["generation"]) for status, doc in answers} == {
        (200, "closed", 2)
    }


async def test_after_the_release_no_poll_is_held(worker: Worker) -> None:
    worker.changes.close()
    served: Client = TestClient(TestServer(worker.app()))
    await served.start_server()
    try:
        assert (await read(served, "?after=1&wait=30"))["generation"] == 1
    finally:
        await served.close()
