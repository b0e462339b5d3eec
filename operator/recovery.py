"""Call recovery: which rooms lost their agent because a worker died, and what to do about each.

This module owns three pure decisions over a worker's history:
- `remember`: what the operator last heard of each worker that served rooms (a `Sighting`).
- `lost_rooms`: a worker is dead only when that is proven: its pod is gone without having been
  seen to drain, its container restarted, or it has not answered for `silence_timeout_s`. A
  missed scrape, a stall or a reconnection to LiveKit (a new worker id, the jobs running on) is
  no death. A room any worker still reports is never lost.
- `verdict`: for one lost room as LiveKit shows it, dispatch the agent again, wait or give up.
Only a death proven by the pod (gone, restarted) lets the caller pass over the dead agent's
identity, which LiveKit lists for a while; after a mere silence an agent still listed means
wait, since it may be alive. It does no I/O and imports no kopf, kubernetes, aiohttp or
prometheus_client.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentworker_operator.observation import Worker

SUSPECT_FOR_S = 60.0
"""How long a room stays under watch after its worker was found dead: past that it is left alone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Sighting:
    """The last time the operator heard a worker serve rooms."""

    pod: str
    worker_id: str
    agents: tuple[tuple[str, str], ...]
    """(room, the agent participant's identity) of each job it reported."""
    heard_at: float
    """When it last answered (monotonic seconds)."""
    restarts: int
    """Its pod's container restarts then."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LostRoom:
    """A room whose worker died without draining."""

    room: str
    pod: str
    worker_id: str
    agent_identity: str = ""
    """The dead job's agent participant: LiveKit lists it for a while after it vanished."""
    proven: bool = False
    """The pod says the worker died (gone, restarted), not just its silence: its agent cannot
    be alive, so it may be passed over and removed."""


def _death(sighting: Sighting, now_seen: Worker | None, *, now: float, silence_s: float) -> str:
    """ "proven", "silent" or "" (alive, or draining) for a worker last seen as `sighting`."""
    if now_seen is None:
        return "proven"  # its pod is gone and was never seen drain
    if now_seen.pod.terminating:
        return ""  # deleted through the API: it drains (the pod's grace period)
    if now_seen.pod.restarts > sighting.restarts:
        return "proven"
    if now_seen.report is None and now - sighting.heard_at >= silence_s:
        return "silent"
    return ""


def lost_rooms(
    sightings: Mapping[str, Sighting],
    workers: Sequence[Worker],
    *,
    now: float,
    silence_s: float,
) -> list[LostRoom]:
    """Rooms of workers found dead in this observation (judged before `remember`)."""
    current = {w.pod.name: w for w in workers}
    still_served = {room for w in workers if w.report is not None for room in w.report.rooms}
    lost: list[LostRoom] = []
    for sighting in sightings.values():
        death = _death(sighting, current.get(sighting.pod), now=now, silence_s=silence_s)
        if not death:
            continue
        lost += [
            LostRoom(
                room=room,
                pod=sighting.pod,
                worker_id=sighting.worker_id,
                agent_identity=identity,
                proven=death == "proven",
            )
            for room, identity in sighting.agents
            if room not in still_served
        ]
    return lost


def remember(
    sightings: Mapping[str, Sighting],
    workers: Sequence[Worker],
    *,
    now: float,
    silence_s: float,
) -> dict[str, Sighting]:
    """The sightings after this observation: a worker serving rooms is heard now; a silent one
    keeps its last sighting until it is judged dead; a draining one, one with no room, and a
    dead one (already judged) have none."""
    kept: dict[str, Sighting] = {}
    for worker in workers:
        report, name = worker.report, worker.pod.name
        if worker.pod.terminating:
            continue
        if report is None:
            before = sightings.get(name)
            if before is not None and not _death(before, worker, now=now, silence_s=silence_s):
                kept[name] = before
            continue
        if report.draining or not report.agents:
            continue
        kept[name] = Sighting(
            pod=name,
            worker_id=report.worker_id,
            agents=report.agents,
            heard_at=now,
            restarts=worker.pod.restarts,
        )
    return kept  # a pod gone was judged in this round's lost_rooms


class Verdict(enum.Enum):
    """What to do for one lost room now."""

    REDISPATCH = "redispatch"
    WAIT = "wait"
    """An agent is still listed, or no worker can take the call yet: look again next round."""
    GIVE_UP = "give-up"
    """No caller left (or the room is gone): nobody to recover."""


def verdict(*, callers: int, agents: int, available_workers: int) -> Verdict:
    """For one lost room: its participants by kind, and the fleet's available workers."""
    if callers == 0:
        return Verdict.GIVE_UP
    if agents > 0 or available_workers == 0:
        return Verdict.WAIT
    return Verdict.REDISPATCH
