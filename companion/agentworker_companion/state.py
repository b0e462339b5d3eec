"""What the wrapped worker is, and what it may agree to: the companion's decisions, pure.

The facts come from livekit-agents' AgentServer (`hooks.py` reads them); the words are this
project's runtime's (`worker_runtime/state.py`), so the operator reads one contract: the states
starting, available, full, retired, draining and closed; ready only while available or full;
retiring only while holding no job, nor one on its way.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentworker_companion import __version__


@dataclass(frozen=True)
class Job:
    id: str
    room: str
    identity: str
    started_at: float
    """Unix seconds; when the companion first saw it running."""


@dataclass(frozen=True)
class Facts:
    """A snapshot of the AgentServer and of the retirement the companion holds."""

    running: bool
    """run() has set the server up (its pool and connection exist)."""
    registered: bool
    """Registered with LiveKit and not reconnecting."""
    closed: bool
    drain_requested: bool
    """drain() was called: SIGTERM, or the user's code."""
    retired: bool
    load: float
    effective_load: float
    """The load plus the slots promised to jobs on their way, as livekit-agents counts it."""
    load_threshold: float
    jobs: tuple[Job, ...]
    on_the_way: int
    """Jobs accepted (or being asked about) that have no process yet."""
    idle_processes: int
    worker_id: str
    agent_name: str
    worker_type: str
    sdk_version: str
    protocol_version: int
    healthy: bool = True
    """livekit-agents' own health check: its inference process runs, its connection has not
    given up."""
    load_jobs: int = 0
    """How many jobs ran when `load` was last sampled: a load that catches up with a job that
    came or went is news (`decision_view`)."""


def worker_state(facts: Facts) -> str:
    if facts.closed and facts.running:
        return "closed"
    if facts.drain_requested:
        return "draining"
    if facts.retired:
        return "retired"
    if not facts.registered:
        return "starting"
    return "full" if facts.effective_load >= facts.load_threshold else "available"


def is_ready(facts: Facts) -> bool:
    """/readyz: registered and not draining (a full worker stays ready)."""
    return worker_state(facts) in ("available", "full")


def retire_refusal(facts: Facts) -> str:
    """Why the worker may not retire now, or "" when it may (the compare-and-set)."""
    if facts.jobs or facts.on_the_way:
        return "busy"
    if facts.closed and facts.running:
        return "closed"
    return ""


def unretire_refusal(facts: Facts) -> str:
    """Why a retirement may not be withdrawn, or "" when the worker may serve again."""
    if facts.drain_requested:
        return "draining"
    if facts.closed and facts.running:
        return "closed"
    return ""


DecisionView = tuple[str, str, bool, bool, frozenset[str], int, float, int]


def decision_view(facts: Facts) -> DecisionView:
    """What the operator decides on: /worker's generation grows exactly when this changes.

    As the runtime's (`worker_runtime.http_api.decision_view`): the worker id, state, draining,
    retired, the ids of the running jobs, the idle processes, the threshold, and how many jobs
    the load was sampled with, as the document says them; not the load itself, which
    livekit-agents samples every 0.5 s and would wake every long poll: the operator's periodic
    read covers it. The first sample that counts a job that came or went is news.
    """
    state = worker_state(facts)
    return (
        facts.worker_id if facts.registered else "",
        state,
        state in ("draining", "closed"),
        state == "retired",
        frozenset(j.id for j in facts.jobs),
        facts.idle_processes,
        facts.load_threshold,
        facts.load_jobs,
    )


def worker_document(facts: Facts) -> dict[str, object]:
    """/worker: livekit-agents' names first, then this project's (the runtime's document)."""
    threshold: float | None = facts.load_threshold
    if threshold is not None and threshold == float("inf"):
        threshold = None
    state = worker_state(facts)
    jobs: list[dict[str, object]] = [
        {"id": j.id, "room": j.room, "identity": j.identity, "started_at": j.started_at}
        for j in facts.jobs
    ]
    return {
        "agent_name": facts.agent_name,
        "worker_type": facts.worker_type,
        "active_jobs": len(facts.jobs),
        "sdk_version": facts.sdk_version,
        "worker_load": facts.load,
        "protocol_version": facts.protocol_version,
        "project_type": "python",
        "worker_id": facts.worker_id if facts.registered else "",
        "state": state,
        "draining": state in ("draining", "closed"),
        "load_threshold": threshold,
        "jobs": jobs,
        "idle_processes": facts.idle_processes,
        "retired": state == "retired",
        "companion": __version__,
    }
