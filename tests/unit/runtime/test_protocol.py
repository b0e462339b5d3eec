"""Protocol encoding and decoding: every message the worker sends, every one it reads."""

from __future__ import annotations

import pytest
from livekit.protocol import agent as agent_pb
from livekit.protocol import models as models_pb

from worker_runtime import protocol
from worker_runtime.options import WorkerPermissions, WorkerType

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most


def roundtrip(msg: agent_pb.WorkerMessage) -> agent_pb.WorkerMessage:
    back = agent_pb.WorkerMessage()
    back.ParseFromString(protocol.encode(msg))
    return back


def test_register_carries_type_name_version_and_permissions() -> None:
    perms = WorkerPermissions(can_publish=False, hidden=True, can_publish_sources=(2,))
    msg = roundtrip(
        protocol.register(
            worker_type=WorkerType.PUBLISHER,
            agent_name="support",
            version="0.1.0",
            permissions=perms,
            ping_interval_s=10,
        )
    )
    reg = msg.register
    assert reg.type == agent_pb.JT_PUBLISHER
    assert (reg.agent_name, reg.version, reg.ping_interval) == ("support", "0.1.0", 10)
    p = reg.allowed_permissions
    assert (p.can_publish, p.can_subscribe, p.hidden, p.agent) == (False, True, True, True)
    assert list(p.can_publish_sources) == [models_pb.TrackSource.Value("MICROPHONE")]


def test_accepting_availability_defaults_identity_to_agent_job_id() -> None:
    msg = roundtrip(protocol.availability("AJ_1", protocol.AcceptArguments(name="bot")))
    a = msg.availability
    assert (a.job_id, a.available, a.participant_name) == ("AJ_1", True, "bot")
    assert a.participant_identity == "agent-AJ_1"


def test_accepting_availability_carries_identity_metadata_and_attributes() -> None:
    accept = protocol.AcceptArguments(identity="me", metadata="{}", attributes={"k": "v"})
    a = roundtrip(protocol.availability("AJ_2", accept)).availability
    assert (a.participant_identity, a.participant_metadata) == ("me", "{}")
    assert dict(a.participant_attributes) == {"k": "v"}


def test_rejecting_availability_says_unavailable() -> None:
    a = roundtrip(protocol.availability("AJ_3", None)).availability
    assert (a.job_id, a.available) == ("AJ_3", False)


@pytest.mark.parametrize(
    ("full", "draining", "status"),
    [
        (False, False, agent_pb.WS_AVAILABLE),
        (True, False, agent_pb.WS_FULL),
        (False, True, agent_pb.WS_FULL),
    ],
    ids=["available", "full", "draining-says-full"],
)
def test_worker_status(full: bool, draining: bool, status: int) -> None:
    u = roundtrip(protocol.worker_status(full=full, load=0.25, job_count=3, draining=draining))
    update = u.update_worker
    assert update.status == status
    assert update.load == pytest.approx(0.25)
    assert (update.job_count, update.draining) == (3, draining)


@pytest.mark.parametrize("status", list(protocol.JobStatus), ids=lambda s: s.name)
def test_job_status(status: protocol.JobStatus) -> None:
    u = roundtrip(protocol.job_status("AJ_4", status, "boom")).update_job
    assert (u.job_id, u.status, u.error) == ("AJ_4", status.value, "boom")


def test_ping_and_migrate() -> None:
    assert roundtrip(protocol.ping(1234)).ping.timestamp == 1234
    assert list(roundtrip(protocol.migrate(["a", "b"])).migrate_job.job_ids) == ["a", "b"]


SERVER_MESSAGES = [
    agent_pb.ServerMessage(register=agent_pb.RegisterWorkerResponse(worker_id="AW_1")),
    agent_pb.ServerMessage(availability=agent_pb.AvailabilityRequest(job=agent_pb.Job(id="AJ"))),
    agent_pb.ServerMessage(assignment=agent_pb.JobAssignment(job=agent_pb.Job(id="AJ"), token="t")),
    agent_pb.ServerMessage(termination=agent_pb.JobTermination(job_id="AJ")),
    agent_pb.ServerMessage(pong=agent_pb.WorkerPong(last_timestamp=1, timestamp=2)),
    agent_pb.ServerMessage(go_away=agent_pb.AgentHttp.GoAway()),
]


@pytest.mark.parametrize("msg", SERVER_MESSAGES, ids=lambda m: m.WhichOneof("message"))
def test_decode_every_server_message(msg: agent_pb.ServerMessage) -> None:
    decoded = protocol.decode(msg.SerializeToString())
    assert decoded == msg
    assert protocol.kind(decoded) == msg.WhichOneof("message")


def test_garbage_is_a_protocol_error() -> None:
    with pytest.raises(protocol.ProtocolError, match="not a ServerMessage"):
        protocol.decode(b"\xff\xff\xff\xff")


def test_empty_message_is_a_protocol_error() -> None:
    with pytest.raises(protocol.ProtocolError, match="no known member"):
        protocol.decode(b"")


NEWER_MEMBER = b"\x92\x03\x03new"
"""Field 50, length-delimited: a member of ServerMessage no protocol version here knows."""


def test_a_member_of_a_newer_protocol_is_an_unknown_message_not_garbage() -> None:
    with pytest.raises(protocol.UnknownMessage, match=r"no known member \(6 bytes\)"):
        protocol.decode(NEWER_MEMBER)


def test_a_known_member_with_fields_of_a_newer_protocol_decodes() -> None:
    known = agent_pb.ServerMessage(termination=agent_pb.JobTermination(job_id="AJ_1"))
    decoded = protocol.decode(known.SerializeToString() + NEWER_MEMBER)
    assert protocol.kind(decoded) == "termination"
    assert decoded.termination.job_id == "AJ_1"


def test_job_type_names_match_livekit_agents() -> None:
    assert protocol.job_type_name(WorkerType.ROOM) == "JT_ROOM"
    assert protocol.job_type_name(WorkerType.PUBLISHER) == "JT_PUBLISHER"
