"""The LiveKit agent worker protocol: building WorkerMessages and reading ServerMessages.

Owns every protobuf message the worker sends and the decoding of what the server sends. Pure: no
socket, no clock (timestamps are arguments), no aiohttp, prometheus_client, psutil or
multiprocessing. The connection moves the bytes; the worker decides what to send.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from google.protobuf.message import DecodeError
from livekit.protocol import agent as agent_pb
from livekit.protocol import models as models_pb

from worker_runtime.options import WorkerPermissions, WorkerType

PROTOCOL_VERSION = 1
"""The worker protocol version livekit-server calls CurrentProtocol."""


class ProtocolError(ValueError):
    """The server sent bytes that are not a ServerMessage this worker understands."""


class UnknownMessage(ProtocolError):
    """A well-formed ServerMessage of a kind this protocol version does not have (a newer
    server's): the worker ignores it and goes on."""


class JobStatus(enum.Enum):
    """Where a job is, in the protocol's terms."""

    PENDING = agent_pb.JS_PENDING
    RUNNING = agent_pb.JS_RUNNING
    SUCCESS = agent_pb.JS_SUCCESS
    FAILED = agent_pb.JS_FAILED


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptArguments:
    """How the agent joins the room when it takes a job (JobRequest.accept's arguments)."""

    name: str = ""
    identity: str = ""
    metadata: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)


def default_identity(job_id: str) -> str:
    """The agent participant's identity when request_fnc gives none: "agent-<job id>"."""
    return f"agent-{job_id}"


def encode(msg: agent_pb.WorkerMessage) -> bytes:
    """The bytes of one binary WebSocket frame."""
    return msg.SerializeToString()


def decode(data: bytes) -> agent_pb.ServerMessage:
    """One ServerMessage; `ProtocolError` for garbage or a message with no known member."""
    msg = agent_pb.ServerMessage()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(f"not a ServerMessage ({len(data)} bytes): {exc}") from None
    if msg.WhichOneof("message") is None:
        raise UnknownMessage(f"ServerMessage with no known member ({len(data)} bytes)")
    return msg


def kind(msg: agent_pb.ServerMessage) -> str:
    """Which member the message carries: register, availability, assignment, termination, ..."""
    which = msg.WhichOneof("message")
    return which or ""


def register(
    *,
    worker_type: WorkerType,
    agent_name: str,
    version: str,
    permissions: WorkerPermissions,
    ping_interval_s: int,
) -> agent_pb.WorkerMessage:
    """The first message on a connection: who this worker is and what its agents may do."""
    perms = models_pb.ParticipantPermission(
        can_publish=permissions.can_publish,
        can_subscribe=permissions.can_subscribe,
        can_publish_data=permissions.can_publish_data,
        can_update_metadata=permissions.can_update_metadata,
        can_publish_sources=[
            models_pb.TrackSource.Name(s) for s in permissions.can_publish_sources
        ],
        hidden=permissions.hidden,
        agent=True,
    )
    req = agent_pb.RegisterWorkerRequest(
        type=worker_type.value,
        agent_name=agent_name,
        version=version,
        ping_interval=ping_interval_s,
        allowed_permissions=perms,
    )
    return agent_pb.WorkerMessage(register=req)


def availability(job_id: str, accept: AcceptArguments | None) -> agent_pb.WorkerMessage:
    """The answer to an AvailabilityRequest: `accept` None means unavailable."""
    if accept is None:
        return agent_pb.WorkerMessage(
            availability=agent_pb.AvailabilityResponse(job_id=job_id, available=False)
        )
    resp = agent_pb.AvailabilityResponse(
        job_id=job_id,
        available=True,
        participant_name=accept.name,
        participant_identity=accept.identity or default_identity(job_id),
        participant_metadata=accept.metadata,
    )
    resp.participant_attributes.update(accept.attributes)
    return agent_pb.WorkerMessage(availability=resp)


def worker_status(
    *, full: bool, load: float, job_count: int, draining: bool
) -> agent_pb.WorkerMessage:
    """UpdateWorkerStatus: a draining worker always says FULL, as livekit-agents does."""
    status = agent_pb.WS_FULL if full or draining else agent_pb.WS_AVAILABLE
    update = agent_pb.UpdateWorkerStatus(
        status=status, load=load, job_count=job_count, draining=draining
    )
    return agent_pb.WorkerMessage(update_worker=update)


def job_status(job_id: str, status: JobStatus, error: str = "") -> agent_pb.WorkerMessage:
    """UpdateJobStatus for one job."""
    update = agent_pb.UpdateJobStatus(job_id=job_id, status=status.value, error=error)
    return agent_pb.WorkerMessage(update_job=update)


def ping(timestamp_ms: int) -> agent_pb.WorkerMessage:
    """WorkerPing; the server answers with a WorkerPong carrying the same timestamp."""
    return agent_pb.WorkerMessage(ping=agent_pb.WorkerPing(timestamp=timestamp_ms))


def migrate(job_ids: Iterable[str]) -> agent_pb.WorkerMessage:
    """MigrateJobRequest: after registering again, the jobs this worker still runs."""
    return agent_pb.WorkerMessage(migrate_job=agent_pb.MigrateJobRequest(job_ids=list(job_ids)))


def job_type_name(worker_type: WorkerType) -> str:
    """The JobType's protobuf name ("JT_ROOM"), as livekit-agents' /worker reports it."""
    return agent_pb.JobType.Name(worker_type.value)
