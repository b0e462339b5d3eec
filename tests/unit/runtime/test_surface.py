"""Pure pieces of the I/O modules: URLs, backoff, /worker, logs, JobRequest, public API."""

from __future__ import annotations

import json
import logging

import pytest
from livekit.protocol import agent as agent_pb
from livekit.protocol import models as models_pb

from worker_runtime import logs
from worker_runtime.connection import agent_url, retry_delay_s
from worker_runtime.http_api import JobSummary, WorkerSnapshot, worker_document
from worker_runtime.request import JobRequest

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://127.0.0.1:7880", "ws://127.0.0.1:7880/agent"),
        ("http://127.0.0.1:7880/", "ws://127.0.0.1:7880/agent"),
        ("https://lk.example/base", "wss://lk.example/base/agent"),
        ("wss://lk.example", "wss://lk.example/agent"),
    ],
)
def test_agent_url(url: str, expected: str) -> None:
    assert agent_url(url) == expected


def test_retry_delay_grows_by_two_seconds_up_to_ten() -> None:
    assert [retry_delay_s(n) for n in range(8)] == [0, 2, 4, 6, 8, 10, 10, 10]


def snapshot(**changes: object) -> WorkerSnapshot:
    base: dict[str, object] = {
        "worker_id": "AW_1",
        "state": "available",
        "ready": True,
        "draining": False,
        "agent_name": "a",
        "worker_type": "JT_ROOM",
        "load": 0.25,
        "load_threshold": 0.7,
        "jobs": (JobSummary(id="AJ_1", room="r", started_at=1.5),),
        "idle_processes": 2,
        "retired": False,
        "sdk_version": "0.1.0",
        "protocol_version": 1,
    }
    base.update(changes)
    return WorkerSnapshot(**base)  # type: ignore[arg-type]  # test table


def test_worker_document_has_livekit_agents_names_and_ours() -> None:
    doc = worker_document(snapshot())
    livekit_agents = {"worker_type", "agent_name", "active_jobs", "sdk_version", "worker_load"}
    ours = {"worker_id", "state", "draining", "load_threshold", "jobs", "idle_processes"}
    assert livekit_agents | ours | {"protocol_version"} <= doc.keys()
    assert doc["active_jobs"] == 1
    assert doc["jobs"] == [{"id": "AJ_1", "room": "r", "started_at": 1.5}]
    json.dumps(doc)


def test_infinite_threshold_is_null_in_json() -> None:
    assert worker_document(snapshot(load_threshold=float("inf")))["load_threshold"] is None


def test_json_log_line_has_message_and_extras() -> None:
    record = logging.makeLogRecord({"msg": "job started", "levelname": "INFO", "job_id": "AJ_1"})
    line = json.loads(logs.JsonFormatter().format(record))
    assert (line["message"], line["severity"], line["job_id"]) == ("job started", "INFO", "AJ_1")


def test_dev_log_line_is_readable() -> None:
    record = logging.makeLogRecord({"msg": "job started", "levelname": "INFO", "job_id": "AJ_1"})
    assert "job started job_id=AJ_1" in logs.DevFormatter().format(record)


def job(participant: bool = False) -> agent_pb.Job:
    j = agent_pb.Job(id="AJ_9", room=models_pb.Room(name="room-9"), agent_name="a")
    if participant:
        j.participant.identity = "cam-1"
    return j


async def test_job_request_accept_keeps_the_arguments() -> None:
    req = JobRequest(job())
    await req.accept(name="n", identity="i", attributes={"k": "v"})
    assert req.answer is not None
    assert (req.answer.name, req.answer.identity, dict(req.answer.attributes)) == (
        "n",
        "i",
        {"k": "v"},
    )
    assert (req.id, req.room.name, req.agent_name, req.publisher) == ("AJ_9", "room-9", "a", None)


async def test_job_request_reject_and_double_answer() -> None:
    req = JobRequest(job(participant=True))
    assert req.publisher is not None
    assert req.publisher.identity == "cam-1"
    await req.reject()
    assert req.answered
    assert req.answer is None
    with pytest.raises(RuntimeError, match="already answered"):
        await req.accept()


def test_public_api_mirrors_livekit_agents() -> None:
    import worker_runtime

    seeds = ("WorkerOptions", "JobContext", "JobRequest", "JobProcess", "WorkerType")
    today = ("AgentServer", "ServerType", "AgentServerPermissions", "AutoSubscribe")
    for name in (*seeds, *today):
        assert hasattr(worker_runtime, name)
        assert name in worker_runtime.__all__
    from worker_runtime import WorkerPermissions, cli

    assert callable(cli.run_app)
    assert WorkerPermissions().can_publish
