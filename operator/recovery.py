"""Call recovery: which rooms lost their agent when a worker died, and what to do about each.

This module owns two pure decisions. `lost_rooms` compares two observations of a fleet: a
worker that served rooms and was not draining, and that is now gone, silent or restarted (a
new worker id), may have taken its calls with it. `verdict` looks at one such room as LiveKit
sees it: a caller and no agent means dispatch the agent again; an agent still there means wait
(a dying agent leaves a moment later, or the worker was only slow to answer); no caller means
nobody to recover. It does no I/O and imports no kopf, kubernetes, aiohttp or prometheus_client.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from agentworker_operator.observation import Worker, WorkerState

SUSPECT_FOR_S = 60.0
"""How long a room stays under watch after its worker went: past that it is left alone."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LostRoom:
    """A room whose worker ended without draining, as far as the operator can tell."""

    room: str
    pod: str
    worker_id: str
    agent_identity: str = ""
    """The dead job's agent participant: LiveKit lists it for a while after it vanished."""


def lost_rooms(previous: Sequence[Worker], current: Sequence[Worker]) -> list[LostRoom]:
    """Rooms of workers that served them last time and are gone, silent or restarted now."""
    now = {w.pod.name: w for w in current}
    lost: list[LostRoom] = []
    for before in previous:
        report = before.report
        if report is None or not report.rooms or before.state is WorkerState.DRAINING:
            continue  # nothing known, or a drain: its calls end on their own
        after = now.get(before.pod.name)
        if after is not None and after.pod.terminating:
            continue  # deleted through the API: it drains (the pod's grace period)
        if after is None or after.report is None or after.report.worker_id != report.worker_id:
            identities = dict(report.agents)
            lost += [
                LostRoom(
                    room=room,
                    pod=before.pod.name,
                    worker_id=report.worker_id,
                    agent_identity=identities.get(room, ""),
                )
                for room in report.rooms
            ]
    return lost


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
