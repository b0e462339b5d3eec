"""What `bench.guard` measured, reduced to figures and a table: the dispatch guard on against
off, side by side, in three scenarios.

Pure: what each side's callers saw (when each room's dispatch went out, when each agent joined
and left, the jobs the agent's ledger recorded, the AgentWorker's status as sampled) and what
the LiveKit server's log says of the same rooms, turned into rooms served, the time from
dispatch to the agent joined (p50, p95, slowest; as the caller saw it and as the server logged
it), the most agents any room had at once, the calls that never got an agent, and the waits an
unserved call spent while a worker was free. It reads no clock and no file, starts nothing and
asserts nothing: a missed target is a FAIL in a column.
"""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from bench import guard_plan as plan

# -- the LiveKit server's log ------------------------------------------------------------------
CREATE_DISPATCH = "API AgentDispatchService.CreateDispatch"
PARTICIPANT_ACTIVE = "participant active"
AGENT_PREFIX = "agent-"
"""The identity the server gives an agent's participant by default: agent-<job id>."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerRoom:
    """One room as the LiveKit server logged it (Unix times)."""

    dispatched_at: float | None = None
    """Its first CreateDispatch."""
    agents: tuple[tuple[float, str], ...] = ()
    """(time, identity) of each agent the first time it was active in the room."""

    @property
    def wait_s(self) -> float | None:
        if self.dispatched_at is None or not self.agents:
            return None
        return self.agents[0][0] - self.dispatched_at


def read_server_log(lines: Iterable[str], rooms: Collection[str]) -> dict[str, ServerRoom]:
    """The rooms' dispatches and agents in livekit-server's log lines (time, level, logger,
    caller, message and a JSON object, tab-separated); other lines are skipped."""
    dispatched: dict[str, float] = {}
    agents: dict[str, dict[str, float]] = {room: {} for room in rooms}
    for line in lines:
        parts = line.split("\t")
        if len(parts) < 6 or parts[4] not in (CREATE_DISPATCH, PARTICIPANT_ACTIVE):
            continue
        try:
            fields = json.loads(parts[5])
            at = datetime.datetime.fromisoformat(parts[0]).timestamp()
        except ValueError:
            continue
        room = fields.get("room") if isinstance(fields, dict) else None
        if room not in agents:
            continue
        if parts[4] == CREATE_DISPATCH:
            dispatched.setdefault(room, at)
        elif str(fields.get("participant", "")).startswith(AGENT_PREFIX):
            agents[room].setdefault(str(fields["participant"]), at)
    return {
        room: ServerRoom(
            dispatched_at=dispatched.get(room),
            agents=tuple(sorted((t, who) for who, t in agents[room].items())),
        )
        for room in rooms
    }


# -- what was seen -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class RoomSeen:
    """One measured call, as offsets in seconds from the start of the side's calls."""

    room: str
    planned_s: float
    dispatched_s: float
    """create_dispatch had returned (its caller was in the room already)."""
    hold_s: float
    joins: tuple[tuple[float, str], ...] = ()
    """(offset, identity) of each participant that joined, as the caller saw it."""
    leaves: tuple[tuple[float, str], ...] = ()
    jobs: int = 0
    """Jobs the call agent started in the room (its ledger)."""
    gave_up_s: float | None = None
    """The caller hung up after waiting `wait_s` with no agent."""
    dropped: bool = False
    """Guard off: the server's dispatch record stayed without a job (it never retries)."""
    server_wait_s: float | None = None
    """The server's log: its first CreateDispatch for the room -> the first agent active in it."""
    server_agents: int = 0
    """The server's log: different agents that became active in the room."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusSample:
    """The AgentWorker's status as read at one moment (offset in seconds)."""

    t_s: float
    replicas: int
    available: int
    full: int
    pending: int
    """status.pendingDispatches (guard on)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SideRun:
    """One side of one scenario, from its first call to the end of its watch."""

    scenario: str
    side: str
    planned: int
    rooms: tuple[RoomSeen, ...]
    status: tuple[StatusSample, ...] = ()
    reissued: int = 0
    """Re-issues the operator logged ("held dispatches issued again", their counts added)."""
    abandoned: int = 0
    """DispatchAbandoned Events."""
    server_drops: int = 0
    """The LiveKit server's log lines dropping a room job of this side's agent."""
    fill_s: float = 0.0
    """Seconds the fillers took to fill the fleet (0: none)."""
    duration_s: float = 0.0
    """From the side's namespace made to the end of its watch."""
    timeline: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    source: str = ""
    """A digest of the operator's and the runtime's source as this side's operator started."""


def joined_after_s(room: RoomSeen) -> float | None:
    """From the dispatch to the first agent the caller saw join; None: no agent came."""
    if not room.joins:
        return None
    return min(t for t, _ in room.joins) - room.dispatched_s


def most_agents(room: RoomSeen) -> int:
    """The most agents in the room at once, as the caller saw them come and go."""
    moves = sorted([(t, 1) for t, _ in room.joins] + [(t, -1) for t, _ in room.leaves])
    present = most = 0
    for _, step in moves:  # at the same moment a leave (-1) sorts first
        present = max(0, present + step)
        most = max(most, present)
    return most


def agents_came(room: RoomSeen) -> int:
    """Different agents that joined the room over the call."""
    return len({identity for _, identity in room.joins})


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) with linear interpolation between the closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def waited_with_capacity_s(room: RoomSeen, samples: Sequence[StatusSample], end_s: float) -> float:
    """Seconds the room waited with no agent while the status showed an available worker: each
    sample holds until the next (the last until `end_s`)."""
    until = joined_after_s(room)
    stop = min(end_s, room.dispatched_s + until if until is not None else end_s)
    if room.gave_up_s is not None:
        stop = min(stop, room.gave_up_s)
    total = 0.0
    for sample, after in zip(samples, [*samples[1:], None], strict=True):
        start = max(sample.t_s, room.dispatched_s)
        finish = min(after.t_s if after is not None else end_s, stop)
        if sample.available > 0 and finish > start:
            total += finish - start
    return total


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One side of one scenario in figures."""

    scenario: str
    side: str
    planned: int
    served: int
    p50_s: float | None
    p95_s: float | None
    slowest_s: float | None
    server_p50_s: float | None
    server_p95_s: float | None
    most_agents: int
    most_jobs: int
    """The most jobs the agent's ledger shows in one room."""
    crowded: tuple[str, ...]
    """Rooms with two agents at once, two jobs, or two agents in the server's log."""
    never: tuple[str, ...]
    """Rooms no agent joined."""
    reissued: int
    abandoned: int
    server_drops: int
    workers_at_start: int | None
    most_workers: int | None
    dispatch_span_s: float
    """From the first dispatch to the last."""


def _crowded(room: RoomSeen) -> bool:
    return most_agents(room) > 1 or room.jobs > 1 or room.server_agents > 1


def summarize(side: SideRun) -> Row:
    waits = [w for w in (joined_after_s(r) for r in side.rooms) if w is not None]
    server = [r.server_wait_s for r in side.rooms if r.server_wait_s is not None]
    dispatched = [r.dispatched_s for r in side.rooms]
    replicas = [s.replicas for s in side.status]
    return Row(
        scenario=side.scenario,
        side=side.side,
        planned=side.planned,
        served=len(waits),
        p50_s=percentile(waits, 0.5),
        p95_s=percentile(waits, 0.95),
        slowest_s=max(waits, default=None),
        server_p50_s=percentile(server, 0.5),
        server_p95_s=percentile(server, 0.95),
        most_agents=max((most_agents(r) for r in side.rooms), default=0),
        most_jobs=max((r.jobs for r in side.rooms), default=0),
        crowded=tuple(r.room for r in side.rooms if _crowded(r)),
        never=tuple(r.room for r in side.rooms if not r.joins),
        reissued=side.reissued,
        abandoned=side.abandoned,
        server_drops=side.server_drops,
        workers_at_start=replicas[0] if replicas else None,
        most_workers=max(replicas, default=None),
        dispatch_span_s=max(dispatched, default=0.0) - min(dispatched, default=0.0),
    )


def verdicts(row: Row) -> str:
    """The targets: every room served with the guard, never two agents in a room (both)."""
    one = "<=1 agent " + ("FAIL" if row.crowded else "PASS")
    if row.side != plan.GUARD_ON:
        return one
    served = "PASS" if row.served == row.planned else "FAIL"
    return f"{row.planned}/{row.planned} served {served}, {one}"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} s"


def _workers(row: Row) -> str:
    if row.workers_at_start is None or row.most_workers is None:
        return "n/a"
    return f"{row.workers_at_start} -> {row.most_workers}"


COLUMNS: tuple[tuple[str, Callable[[Row], str]], ...] = (
    ("side", lambda r: r.side),
    ("**rooms served**", lambda r: f"**{r.served}/{r.planned}**"),
    ("dispatch -> agent joined, caller saw: p50", lambda r: _seconds(r.p50_s)),
    ("p95", lambda r: _seconds(r.p95_s)),
    ("slowest", lambda r: _seconds(r.slowest_s)),
    (
        "server's log p50 / p95",
        lambda r: f"{_seconds(r.server_p50_s)} / {_seconds(r.server_p95_s)}",
    ),
    ("most agents in a room", lambda r: str(r.most_agents)),
    ("never got an agent", lambda r: str(len(r.never))),
    ("server drops (its log)", lambda r: str(r.server_drops)),
    ("guard re-issues", lambda r: str(r.reissued) if r.side == plan.GUARD_ON else "-"),
    ("workers (start -> most)", _workers),
    ("targets", verdicts),
)


def render(sides: Sequence[SideRun], titles: dict[str, str]) -> str:
    """One table: a row per scenario and side, in the order the scenarios are listed."""
    header = ["scenario", *(title for title, _ in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for key, title in titles.items():
        for side in plan.SIDES:
            for run in (s for s in sides if s.scenario == key and s.side == side):
                row = summarize(run)
                lines.append("| " + " | ".join([title, *(cell(row) for _, cell in COLUMNS)]) + " |")
    return "\n".join(lines)


def findings(side: SideRun, *, wait_s: float) -> list[str]:
    """What looks wrong on a side: a room with two agents (or jobs); on the guard's side, a
    call never served, with how long it waited while the status showed a worker available."""
    found = []
    for room in side.rooms:
        if _crowded(room):
            joins = ", ".join(f"{who} at +{t:.1f} s" for t, who in room.joins)
            found.append(
                f"{side.side}: room {room.room} had {most_agents(room)} agents at once, "
                f"{room.jobs} jobs, {room.server_agents} agents in the server's log; "
                f"dispatched at +{room.dispatched_s:.1f} s; the caller saw: {joins}"
            )
    if side.side != plan.GUARD_ON:
        return found
    for room in side.rooms:
        if room.joins:
            continue
        end = room.gave_up_s if room.gave_up_s is not None else room.dispatched_s + wait_s
        free = waited_with_capacity_s(room, side.status, end)
        found.append(
            f"{side.side}: room {room.room} (dispatched at +{room.dispatched_s:.1f} s) got no "
            f"agent in {end - room.dispatched_s:.0f} s; the status showed a worker available "
            f"for {free:.0f} s of that wait"
        )
    return found


def source_changes(sides: Sequence[SideRun]) -> list[str]:
    """Scenarios whose sides ran different source (the working tree changed between them)."""
    found = []
    for key in dict.fromkeys(s.scenario for s in sides):
        digests = {s.side: s.source for s in sides if s.scenario == key}
        if len(set(digests.values())) > 1:
            ran = ", ".join(f"{side} {digest}" for side, digest in digests.items())
            found.append(f"{key}: the sides ran different operator or runtime source ({ran})")
    return found


def side_json(side: SideRun) -> dict[str, object]:
    """One side with its figures and every room, ready for json.dumps."""
    row = summarize(side)
    return {
        "scenario": side.scenario,
        "side": side.side,
        "summary": {
            "planned": row.planned,
            "served": row.served,
            "p50_s": row.p50_s,
            "p95_s": row.p95_s,
            "slowest_s": row.slowest_s,
            "server_p50_s": row.server_p50_s,
            "server_p95_s": row.server_p95_s,
            "most_agents_in_a_room": row.most_agents,
            "most_jobs_in_a_room": row.most_jobs,
            "crowded_rooms": list(row.crowded),
            "never_got_an_agent": list(row.never),
            "guard_reissues": row.reissued,
            "abandoned": row.abandoned,
            "server_drops": row.server_drops,
            "workers_at_start": row.workers_at_start,
            "most_workers": row.most_workers,
            "dispatch_span_s": row.dispatch_span_s,
            "verdicts": verdicts(row),
        },
        "source": side.source,
        "fill_s": side.fill_s,
        "duration_s": side.duration_s,
        "rooms": [
            {
                "room": r.room,
                "planned_s": r.planned_s,
                "dispatched_s": round(r.dispatched_s, 3),
                "hold_s": r.hold_s,
                "joined_after_s": joined_after_s(r),
                "joins": [[round(t, 3), who] for t, who in r.joins],
                "leaves": [[round(t, 3), who] for t, who in r.leaves],
                "jobs": r.jobs,
                "gave_up_s": r.gave_up_s,
                "dropped": r.dropped,
                "server_wait_s": r.server_wait_s,
                "server_agents": r.server_agents,
            }
            for r in side.rooms
        ],
        "status": [
            [round(s.t_s, 2), s.replicas, s.available, s.full, s.pending] for s in side.status
        ],
        "timeline": list(side.timeline),
        "problems": list(side.problems),
    }
