"""The dispatch guard: dispatches of the agent that the LiveKit server gave to no worker.

A self-hosted LiveKit server that finds no worker for a dispatch, or whose assignment misses its
3 s deadline, drops the job and never tries again, not even when a worker registers later; the
AgentDispatch record stays in the room with no job (ListDispatch shows it). This module owns
what to do about those records, over values the I/O layer reads from ListRooms,
ListParticipants and ListDispatch:
- `judge`: each round, hold every dispatch of the agent that has no job as demand, re-issue it
  (delete the jobless record, create it again with the same metadata) as soon as a worker can
  take it, oldest first, and give up after `max_wait_s`. A room with an agent of ours, a room a
  worker reports, or one whose job may still be joining is never re-issued into: never two
  agents. A room that ended, or whose caller left, is left alone.
- `free_slots`: how many new jobs the fleet's available workers can take now.
The guard gets a room its first agent only: a job that ran and ended, or an agent that left or
died, is the business of the call (and of `recovery`), not the guard's.
It does no I/O, reads no clock and imports no kopf, kubernetes, aiohttp, prometheus_client or
livekit.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from agentworker_operator.observation import Worker, WorkerState
from agentworker_operator.redact import room_ref

GRACE_S = 4.0
"""Age (seconds, server clock) before a dispatch without a job counts as dropped. The server's
launch of a job ends within the 3 s deadline of its job request; one still launching when the
guard deletes its record is terminated as it lands, so a short grace costs no second agent."""
SETTLE_S = 5.0
"""Seconds after a re-issue, or after a job started, before the room is judged again: the
server's assignment and the agent's join."""


class JobStatus(enum.Enum):
    """A job's status as ListDispatch shows it (livekit.JobStatus)."""

    PENDING = 0
    RUNNING = 1
    """The status at assignment. The OSS server never updates a dispatch's job afterwards: a
    job that ended long ago still reads RUNNING."""
    SUCCESS = 2
    FAILED = 3


class RestartPolicy(enum.Enum):
    """A dispatch's restart policy (livekit.JobRestartPolicy); the re-issue keeps it."""

    ON_FAILURE = 0
    NEVER = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Job:
    """One job of a dispatch (AgentDispatch.state.jobs)."""

    id: str
    status: JobStatus = JobStatus.RUNNING
    participant_identity: str = ""
    """The agent's identity in the room, `agent-<job id>` by default."""
    started_at_s: float = 0.0
    """When the server assigned it (wall seconds; JobState.started_at is in nanoseconds)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispatch:
    """One AgentDispatch of a room, with what a re-issue must create again."""

    id: str
    agent_name: str
    metadata: str = ""
    deployment: str = ""
    """Routes the job to the workers registered with this deployment: kept by the re-issue."""
    attributes: tuple[tuple[str, str], ...] = ()
    restart_policy: RestartPolicy = RestartPolicy.ON_FAILURE
    created_at_s: float = 0.0
    """When the server created it (wall seconds; AgentDispatchState.created_at is in ns)."""
    jobs: tuple[Job, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    """An agent participant (kind AGENT) in a room."""

    identity: str
    agent_name: str = ""
    """Its `lk.agent_name` attribute, which the server puts in the agent's token; "" when it
    has none, and then it may be ours."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Room:
    """One room as the I/O layer read it this round."""

    name: str
    callers: int = 0
    """Participants that are neither agents nor egress (ListRooms' num_participants)."""
    had_caller: bool = False
    """A caller is known to have been in the room (a participant_joined or participant_left
    webhook). Without it, a room first seen empty is taken for an outbound call."""
    agents: tuple[Agent, ...] = ()
    dispatches: tuple[Dispatch, ...] = ()


class Stage(enum.Enum):
    """Where the guard stands with a room."""

    WAITING = "waiting"
    """Its dispatch waits for a worker: demand, re-issued when a slot is free."""
    SERVED = "served"
    """An agent serves it while a jobless dispatch of ours remains: left alone."""
    CALLER_LEFT = "caller-left"
    """Its caller left before an agent came: left alone (not taken for an outbound call)."""
    GAVE_UP = "gave-up"
    """It waited max_wait_s: left alone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Held:
    """The guard's memory of one room, kept from round to round while the room has a dispatch
    of ours without a job."""

    room: str
    dispatch: Dispatch
    """What a re-issue creates: the oldest jobless dispatch of ours seen in the room."""
    since_s: float
    """When that dispatch was created, on the caller's monotonic clock (its age when first seen
    subtracted): the wait counts from the call's start, not from the operator's first look."""
    attempts: int = 0
    """Re-issues so far."""
    last_issued_s: float | None = None
    """When the latest re-issue was decided (monotonic seconds)."""
    had_caller: bool = False
    stage: Stage = Stage.WAITING


@dataclass(frozen=True, slots=True, kw_only=True)
class Reissue:
    """Re-issue a room's dispatch: delete `delete_ids`, then create `dispatch` again."""

    room: str
    dispatch: Dispatch
    """Create with its agent_name, metadata, deployment, attributes and restart_policy."""
    delete_ids: tuple[str, ...]
    """The jobless dispatches of ours in the room. Deleting first is what keeps one agent: the
    server terminates the job of a launch still under way as it lands. Empty when a delete
    succeeded and the create failed in an earlier round."""
    attempt: int
    """1 for the first re-issue."""
    waited_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Release:
    """A room the guard stops waiting for: `reason` and `message` go to the Event and the log."""

    room: str
    reason: str
    message: str
    attempts: int
    waited_s: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """One round's decision."""

    reissue: tuple[Reissue, ...]
    """Oldest first, never more than the free slots not already taken by re-issues in flight."""
    give_up: tuple[Release, ...]
    """Waited more than max_wait_s (reason NoWorkerInTime)."""
    dropped: tuple[Release, ...]
    """Nobody to serve: RoomEnded, CallerLeft, or DispatchDeleted (by someone else)."""
    served: tuple[Release, ...]
    """An agent came (reason DispatchServed): `attempts` > 0 counts a recovered dispatch."""
    held: Mapping[str, Held]
    """The memory for the next round."""
    pending: int
    """Dispatches waiting for a worker, those just re-issued included: the demand the
    autoscaler covers with free slots and new workers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Round:
    agent_name: str
    served_rooms: frozenset[str]
    now_s: float
    wall_now_s: float
    grace_s: float
    settle_s: float
    max_wait_s: float


class _Kind(enum.Enum):
    GIVE_UP = "give-up"
    DROPPED = "dropped"
    SERVED = "served"


@dataclass(frozen=True, slots=True)
class _Step:
    held: Held | None
    release: tuple[_Kind, Release] | None = None
    candidate: bool = False
    delete_ids: tuple[str, ...] = ()


def _times(n: int) -> str:
    return "1 re-issue" if n == 1 else f"{n} re-issues"


def _release(held: Held, kind: _Kind, reason: str, what: str, r: _Round) -> tuple[_Kind, Release]:
    waited = r.now_s - held.since_s
    message = f"{what} (waited {waited:.0f}s, {_times(held.attempts)})"
    return kind, Release(
        room=held.room, reason=reason, message=message, attempts=held.attempts, waited_s=waited
    )


def _ours(agent: Agent, room_jobs: frozenset[str], agent_name: str) -> bool:
    return agent.agent_name in ("", agent_name) or agent.identity in room_jobs


def _busy(room: Room, ours: Sequence[Dispatch], r: _Round) -> bool:
    """An agent of ours is there or on its way: a re-issue would make it two."""
    if room.name in r.served_rooms:
        return True
    jobs = [job for d in ours for job in d.jobs]
    identities = frozenset(job.participant_identity for job in jobs if job.participant_identity)
    if any(_ours(agent, identities, r.agent_name) for agent in room.agents):
        return True
    return any(
        job.status is JobStatus.PENDING
        or (job.status is JobStatus.RUNNING and r.wall_now_s - job.started_at_s < r.settle_s)
        for job in jobs
    )


def _taken(ours: Sequence[Dispatch], held: Held) -> bool:
    """A job started on a dispatch of ours since the one held was created: a worker took it or
    a re-issue of it. Its agent may be in the room unseen: the participants are read only next
    to a dispatch without a job, and a room unread (or LiveKit unreachable) through the settle
    time, whose worker does not report, looks empty."""
    since = held.dispatch.created_at_s
    return any(job.started_at_s >= since for d in ours for job in d.jobs)


def _first_sight(dispatch: Dispatch, room: Room, r: _Round, stage: Stage) -> Held:
    age = max(0.0, r.wall_now_s - dispatch.created_at_s)
    return Held(
        room=room.name,
        dispatch=dispatch,
        since_s=r.now_s - age,
        had_caller=room.had_caller or room.callers > 0,
        stage=stage,
    )


def _step(room: Room, before: Held | None, r: _Round) -> _Step:
    """The guard's memory of a room that exists, and what to do about it."""
    ours = [d for d in room.dispatches if d.agent_name == r.agent_name]
    jobless = sorted((d for d in ours if not d.jobs), key=lambda d: (d.created_at_s, d.id))
    busy = _busy(room, ours, r)
    if before is None:
        if not jobless:
            return _Step(None)
        before = _first_sight(jobless[0], room, r, Stage.SERVED if busy else Stage.WAITING)
    if before.stage is not Stage.WAITING:
        return _Step(before if jobless else None)  # left alone while the record stays
    if busy or _taken(ours, before):
        kept = replace(before, stage=Stage.SERVED) if jobless else None
        what = f"an agent of {r.agent_name} serves {room_ref(room.name)}"
        return _Step(kept, _release(before, _Kind.SERVED, "DispatchServed", what, r))
    if not jobless and before.attempts == 0:
        what = f"the dispatch {before.dispatch.id} in {room_ref(room.name)} was deleted"
        return _Step(None, _release(before, _Kind.DROPPED, "DispatchDeleted", what, r))
    # no record left after a re-issue: the delete went through, the create did not; recreate
    held = replace(
        before,
        dispatch=jobless[0] if jobless else before.dispatch,
        had_caller=before.had_caller or room.had_caller or room.callers > 0,
    )
    if held.had_caller and room.callers == 0:
        kept = replace(held, stage=Stage.CALLER_LEFT) if jobless else None
        what = f"the caller left {room_ref(room.name)} before an agent of {r.agent_name} came"
        return _Step(kept, _release(held, _Kind.DROPPED, "CallerLeft", what, r))
    if r.now_s - held.since_s > r.max_wait_s:
        return _gave_up(held, r, keep=bool(jobless))
    young = bool(jobless) and r.wall_now_s - jobless[-1].created_at_s < r.grace_s
    # a re-issue must settle before max_wait_s: one that lands after the give-up is a call
    # served under a DispatchAbandoned Event, and no rescue counted
    in_time = r.now_s - held.since_s + r.settle_s <= r.max_wait_s
    return _Step(
        held,
        candidate=not young and not _settling(held, r) and in_time,
        delete_ids=tuple(d.id for d in jobless),
    )


def _gave_up(held: Held, r: _Round, *, keep: bool) -> _Step:
    what = (
        f"no worker took the dispatch of {r.agent_name} into {room_ref(held.room)} "
        f"within {r.max_wait_s:.0f}s; it is left alone"
    )
    kept = replace(held, stage=Stage.GAVE_UP) if keep else None
    return _Step(kept, _release(held, _Kind.GIVE_UP, "NoWorkerInTime", what, r))


def _settling(held: Held, r: _Round) -> bool:
    return held.last_issued_s is not None and r.now_s - held.last_issued_s < r.settle_s


def _unread(before: Held, r: _Round) -> _Step:
    """A room that exists but could not be read this round: only the clock moves on."""
    if before.stage is Stage.WAITING and r.now_s - before.since_s > r.max_wait_s:
        return _gave_up(before, r, keep=True)
    return _Step(before)


def _pending(held: Held, r: _Round) -> bool:
    """Waits for a worker: past the grace, or re-issued already."""
    age = r.wall_now_s - held.dispatch.created_at_s
    return held.stage is Stage.WAITING and (held.attempts > 0 or age >= r.grace_s)


def judge(
    rooms: Sequence[Room],
    held: Mapping[str, Held],
    *,
    agent_name: str,
    served_rooms: frozenset[str],
    free_slots: int,
    now_s: float,
    wall_now_s: float,
    max_wait_s: float,
    grace_s: float = GRACE_S,
    settle_s: float = SETTLE_S,
    unread: frozenset[str] = frozenset(),
) -> Plan:
    """This round's plan for the rooms listed now and the memory of the last round.

    `rooms`: every room the server lists (a held room missing from it has ended); `unread`:
    rooms listed whose participants or dispatches could not be read, whose memory carries over.
    `served_rooms`: rooms the fleet's workers report a job in. `now_s` is monotonic, `wall_now_s`
    the wall clock the server's timestamps are compared with.
    """
    r = _Round(
        agent_name=agent_name,
        served_rooms=served_rooms,
        now_s=now_s,
        wall_now_s=wall_now_s,
        grace_s=grace_s,
        settle_s=settle_s,
        max_wait_s=max_wait_s,
    )
    listed = {room.name: room for room in rooms}
    steps: dict[str, _Step] = {}
    for name in sorted(listed.keys() | held.keys()):
        before, room = held.get(name), listed.get(name)
        if name in unread and before is not None:
            steps[name] = _unread(before, r)
        elif room is not None and name not in unread:
            steps[name] = _step(room, before, r)
        elif before is not None:
            what = f"{room_ref(name)} ended before an agent of {agent_name} came"
            gone = _release(before, _Kind.DROPPED, "RoomEnded", what, r)
            steps[name] = _Step(None, gone if before.stage is Stage.WAITING else None)
    return _plan(steps, free_slots, r)


def _plan(steps: Mapping[str, _Step], free_slots: int, r: _Round) -> Plan:
    memory = {name: step.held for name, step in steps.items() if step.held is not None}
    # re-issues in flight take slots the workers may not report as taken yet
    in_flight = sum(1 for h in memory.values() if h.stage is Stage.WAITING and _settling(h, r))
    candidates = sorted(
        ((step.held, step.delete_ids) for step in steps.values() if step.candidate and step.held),
        key=lambda candidate: (candidate[0].since_s, candidate[0].room),
    )
    reissue: list[Reissue] = []
    for h, delete_ids in candidates[: max(0, free_slots - in_flight)]:
        memory[h.room] = replace(h, attempts=h.attempts + 1, last_issued_s=r.now_s)
        reissue.append(
            Reissue(
                room=h.room,
                dispatch=h.dispatch,
                delete_ids=delete_ids,
                attempt=h.attempts + 1,
                waited_s=r.now_s - h.since_s,
            )
        )
    released = [step.release for step in steps.values() if step.release is not None]
    return Plan(
        reissue=tuple(reissue),
        give_up=tuple(rel for kind, rel in released if kind is _Kind.GIVE_UP),
        dropped=tuple(rel for kind, rel in released if kind is _Kind.DROPPED),
        served=tuple(rel for kind, rel in released if kind is _Kind.SERVED),
        held=memory,
        pending=sum(1 for h in memory.values() if _pending(h, r)),
    )


def _worker_slots(worker: Worker, load_threshold: float, job_load: float | None) -> int:
    report = worker.report
    if worker.state is not WorkerState.AVAILABLE or report is None or report.draining:
        return 0
    threshold = report.load_threshold if report.load_threshold is not None else load_threshold
    per_job = report.load / report.active_jobs if report.active_jobs > 0 else 0.0
    if job_load is not None:
        per_job = max(per_job, job_load)  # the larger share is the safer one
    if per_job <= 0.0:
        return 1
    # rounded down: the load lags the jobs (a CPU average), so the last slot waits a round
    return max(1, math.floor((threshold - report.load) / per_job + 1e-9))


def free_slots(
    workers: Sequence[Worker], *, load_threshold: float, job_load: float | None = None
) -> int:
    """New jobs the fleet can take now, a conservative estimate: an available worker with jobs
    has (threshold - load) / (load per job) slots, rounded down, and at least 1; one with no
    job has 1, or (threshold - load) / `job_load` when the load of one job is known. A full,
    draining, starting or unknown worker has none. `load_threshold` applies to workers that do
    not report their own."""
    return sum(_worker_slots(w, load_threshold, job_load) for w in workers)


def slots_per_worker(workers: Sequence[Worker], *, load_threshold: float) -> int:
    """Jobs one new worker can take, for the autoscaler's count of the workers waiting
    dispatches need: the fewest any busy worker shows (its jobs times threshold over load,
    rounded down), 1 when no worker runs a job yet (the safe side: more workers)."""
    shown = []
    for worker in workers:
        report = worker.report
        if report is None or report.active_jobs == 0 or report.load <= 0.0:
            continue
        threshold = report.load_threshold if report.load_threshold is not None else load_threshold
        shown.append(math.floor(threshold * report.active_jobs / report.load + 1e-9))
    return max(1, min(shown, default=1))


def job_load(workers: Sequence[Worker]) -> float | None:
    """The load one job adds, as the busy workers show it: the largest share any of them
    reports (the safe side: fewer slots on an idle worker); None while no worker runs a job."""
    shares = [
        w.report.load / w.report.active_jobs
        for w in workers
        if w.report is not None and w.report.active_jobs > 0 and w.report.load > 0.0
    ]
    return max(shares, default=None)
