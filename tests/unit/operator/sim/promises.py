"""The dispatch guard's promises, checked on the simulated world after every step and round.

With spec.dispatchGuard on (`Schedule.guard`):
- never two agents in a room: checked where an agent joins (`World._land`);
- a room whose caller left (as the operator learnt) or that ended gets no dispatch from the
  guard: checked where the guard creates one (`SimRooms.reissue`);
- a call whose caller stays is served within maxWait, unless the fleet had no room for it (at
  maxReplicas, every readable worker's slots taken by it or by calls waiting longer) or the
  guard could not act (operator down, LiveKit unreachable, offers unanswered) for all but a
  short while: half of maxWait, and at least the guard's grace, a sync period, a re-issue's
  settle time and a round (a slot a new call takes first is lost to it); a call that arrived
  at zero workers is served within maxWait unless something stopped the guard or the
  autoscaler during its wait;
- a call the guard gave up on waited maxWait, is given up with exactly one DispatchAbandoned
  Event per operator process, and is given up at the first round that reads it past maxWait;
- with minReplicas 0, the fleet reaches 0 only after scaleToZeroAfter in which no round saw a
  call or a waiting dispatch, and leaves 0 only for a dispatch that waits;
- status.pendingDispatches is, after each round, the number of dispatches waiting at that
  round's read of LiveKit (`World.waiting_rooms`);
- agentworker_dispatches_rescued_total rises, by the end of each round, by the re-issued
  dispatches a worker took before that round's read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentworker_operator import guard, metrics
from agentworker_operator import spec as specs
from agentworker_operator.redact import room_ref
from agentworker_operator.sync import GUARD_PERIOD_S
from tests.unit.operator.sim import world as worlds

if TYPE_CHECKING:
    from tests.unit.operator.sim.run import Schedule

SLOTS_PER_WORKER = 3
"""Calls a simulated worker takes before it is full (3 / SLOTS > its 0.7 threshold)."""
ABANDONED = re.compile(r"into (room:[0-9a-f]+) within")
"""The room reference (`redact.room_ref`) a DispatchAbandoned Event names."""
RESCUED = "agentworker_dispatches_rescued_total"


def rescued_total() -> float:
    """agentworker_dispatches_rescued_total of the simulated AgentWorker, every reason."""
    labels = {"namespace": worlds.NAMESPACE, "name": worlds.NAME}
    return sum(
        sample.value
        for metric in metrics.DISPATCHES_RESCUED.collect()
        for sample in metric.samples
        if sample.name == RESCUED and labels.items() <= sample.labels.items()
    )


@dataclass(slots=True)
class Promises:
    """What the checks remember between steps, for one schedule with the guard on."""

    world: worlds.World
    schedule: Schedule
    rescued_base: dict[int, float] = field(default_factory=dict)
    """The rescue counter's value when each operator process started."""
    abandoned: dict[tuple[str, int], int] = field(default_factory=dict)
    """(room, operator process) -> DispatchAbandoned Events."""
    events_seen: int = 0
    last_up: float = -1e9
    """When the Deployment last grew."""
    replicas: int = 0

    def operator_started(self, generation: int) -> None:
        self.rescued_base[generation] = rescued_total()

    def before_round(self) -> None:
        """The world as the round's observation sees it: a readable worker holding a job."""
        w = self.world
        if any(_readable(w, p) and p.process and p.process.jobs for p in w.live_pods()):
            w.last_busy = w.now

    def after_round(self, generation: int, replicas_before: int) -> None:
        w = self.world
        self._abandonments(generation)
        read = w.reads[-1] if w.reads else None
        if read is not None and read.round == w.round and read.reader == generation:
            if read.waiting:
                w.last_busy = w.now
            self._pending(read)
            self._rescues(read, generation)
            self._given_up(read, generation)
        if replicas_before == 0 and w.replicas > 0 and self.schedule.min_replicas == 0:
            w.saw("woken from zero")
            if not any(
                not r.agents and any(not d.jobs for d in r.records) for r in w.rooms.values()
            ):
                w.violate(f"the fleet woke from zero to {w.replicas} with no dispatch waiting")
        if replicas_before > 0 and w.replicas == 0:
            w.saw("scaled to zero")
            idle = w.now - w.last_busy
            if idle < self.schedule.scale_to_zero_after_s - 1e-6:
                w.violate(
                    f"the fleet went to zero {idle:.1f}s after a round last saw a call or a "
                    f"waiting dispatch (scaleToZeroAfter {self.schedule.scale_to_zero_after_s:g}s)"
                )

    def _pending(self, read: worlds.Read) -> None:
        w = self.world
        if w.faults.status_error or w.faults.apply_error or _invalid(w):
            return  # no status written this round (the reconcile applies first)
        said = (w.agentworker.get("status") or {}).get("pendingDispatches")
        if said is None or not read.waiting <= said <= read.waiting + read.uncertain:
            extra = f" (or up to {read.uncertain} more)" if read.uncertain else ""
            w.violate(f"status pendingDispatches {said}, but {read.waiting} dispatches wait{extra}")

    def _rescues(self, read: worlds.Read, generation: int) -> None:
        w = self.world
        counted = rescued_total() - self.rescued_base.get(generation, 0.0)
        doubtful = w.rescues_doubtful.get(generation, 0)
        if not read.rescued <= counted <= read.rescued + doubtful:
            extra = f" (and {doubtful} after their caller left)" if doubtful else ""
            w.violate(
                f"{RESCUED} rose by {counted:g} in this operator process, but workers took "
                f"{read.rescued} of its re-issued dispatches{extra}"
            )

    def _abandonments(self, generation: int) -> None:
        """Each DispatchAbandoned Event: its call waited maxWait; one per operator process."""
        w = self.world
        for reason, message in w.events[self.events_seen :]:
            if reason != "DispatchAbandoned":
                continue
            named = ABANDONED.search(message)
            by_ref = {room_ref(name): name for name in w.calls.keys() | w.rooms.keys()}
            room = by_ref.get(named.group(1), "?") if named else "?"
            call, found = w.calls.get(room), w.rooms.get(room)
            w.saw("dispatch abandoned")
            if call is None or (found is not None and any(a.alive for a in found.agents)):
                w.violate(f"DispatchAbandoned for {room}, which an agent serves or is no call")
            elif call.served_at is None and w.now - call.started <= self.schedule.max_wait_s:
                w.violate(f"{room} given up after {w.now - call.started:.1f}s: {message}")
            key = (room, generation)
            self.abandoned[key] = self.abandoned.get(key, 0) + 1
            if self.abandoned[key] > 1:
                w.violate(f"{room} given up {self.abandoned[key]} times: {message}")
        self.events_seen = len(w.events)

    def _given_up(self, read: worlds.Read, generation: int) -> None:
        """A call still waiting past maxWait, read this round, is given up by its end."""
        w = self.world
        for call in _waiting(w):
            room = w.rooms[call.room]
            certain = not (room.served or room.murky or room.reissued_by - {generation})
            late = w.now - call.started > self.schedule.max_wait_s
            said = self.abandoned.get((call.room, generation))
            if late and certain and call.room not in read.unread and not said:
                w.violate(f"{call.room} waited past maxWait and was not given up")

    def after_step(self, *, operator_up: bool) -> None:
        """Count each waiting call's chances, and judge the calls whose maxWait just ended."""
        w, schedule = self.world, self.schedule
        if w.replicas > self.replicas:
            self.last_up = w.now
        self.replicas = w.replicas
        can_act = operator_up and not (
            w.faults.livekit_down
            or w.faults.livekit_flaky
            or w.faults.credentials_forbidden
            or w.faults.unanswered  # the workers do not answer the guard's re-issues either
        )
        blocked = self._blocked()
        period_over = w.now - self.last_up >= specs.DEFAULT_SCALE_UP.longest_period_s
        growable = can_act and not blocked and period_over and w.replicas < schedule.max_replicas
        spare = sum(_spare(w, p) for p in w.live_pods())
        older = 0
        for call in _waiting(w):
            age = w.now - call.started
            if age > schedule.max_wait_s:
                if not call.judged:
                    call.judged = True
                    self._judge(call)
                continue
            if can_act and (spare > older or growable):
                call.chances_s += worlds.STEP_S
            if not can_act or blocked:
                call.hindered = True
            older += 1

    def _blocked(self) -> bool:
        """Something keeps the autoscaler from adding a worker: autoscaling off or paused,
        refused applies, quota, unreadable workers, a frozen pod watch."""
        w = self.world
        quota = w.faults.quota is not None and len(w.live_pods()) >= w.faults.quota
        autoscaling = w.agentworker["spec"]["autoscaling"]
        return bool(
            not autoscaling["enabled"]
            or autoscaling.get("paused", False)
            or _invalid(w)  # nothing scales while an edit is invalid
            or w.faults.apply_error
            or quota
            or w.blind_since_replicas is not None
            or w.faults.unreadable
            or w.faults.watch_stale
        )

    def _judge(self, call: worlds.Call) -> None:
        """A call unserved at maxWait: it may have had room for a while, but not for longer
        than half its wait, nor than the guard's grace, a sync period (without a webhook the
        guard looks again then), a re-issue's settle time (one dropped again) and a round."""
        w, wait = self.world, self.schedule.max_wait_s
        w.saw("a call waited maxWait")
        reaction = guard.GRACE_S + self.schedule.interval_s + guard.SETTLE_S + GUARD_PERIOD_S
        if call.chances_s > max(wait / 2, reaction):
            w.violate(
                f"the call in {call.room} waited {wait:g}s for an agent, though for "
                f"{call.chances_s:g}s the fleet had room for it and the guard could act"
            )
        if call.at_zero and not call.hindered:
            w.violate(f"the call in {call.room} arrived at zero and was not served in {wait:g}s")


def _waiting(w: worlds.World) -> list[worlds.Call]:
    """Calls whose caller waits for their first agent, oldest first."""
    return [
        c
        for c in w.calls.values()
        if not c.ended and c.served_at is None and c.room in w.rooms and w.rooms[c.room].caller
    ]


def _readable(w: worlds.World, pod: worlds.Pod) -> bool:
    p = pod.process
    return p is not None and not p.unreadable and p.stalled_until <= w.now


def _spare(w: worlds.World, pod: worlds.Pod) -> int:
    """Calls a worker the operator can read could still take."""
    p = pod.process
    if p is None or pod.deleted_at is not None or not _readable(w, pod) or not p.serving(w.now):
        return 0
    return max(0, SLOTS_PER_WORKER - w.taken(pod))


def _invalid(w: worlds.World) -> bool:
    return bool(w.agentworker["spec"].get("loadThreshold") == "high")
