"""Drive the real sync loop and reconcile through a schedule, checking invariants every step.

A `Schedule` is plain data (the spec's knobs, a seed for arrivals and start-up times, and a list
of timed faults); `simulate(schedule)` runs it on simulated time: every half second the world
moves (calls arrive and end, pods start, controllers act, watch events arrive), and every sync
period the operator's real `Syncer.sync_all` runs, with `handlers.reconcile` as its reconcile.
Rounds also come between them as `Syncer.run` starts them: with the change stream on
(`Schedule.watch`: the workers' long polls, `polls.SimWatch`), when a worker's change was heard;
with the dispatch guard on, while dispatches wait and after LiveKit's webhooks (which reach
`Syncer.on_webhook`), and the guard's promises (`promises`) are checked too. The invariants
are checked after every step; the first broken one fails with the schedule's JSON, which
`replay` runs again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentworker_operator import builders, guard, handlers, kube, scaledown, settings, store
from agentworker_operator import spec as specs
from agentworker_operator import sync as syncs
from tests.unit.operator.sim import polls
from tests.unit.operator.sim import world as worlds
from tests.unit.operator.sim.promises import Promises
from tests.unit.operator.sim.world import NAME, NAMESPACE, UID, World

STEP_S = worlds.STEP_S
CONTROL_KEY = b"k" * 32
logger = logging.getLogger("sim")


@dataclass(frozen=True, slots=True)
class Fault:
    at_s: float
    kind: str
    """stall, reconnect, unreadable, readable, crash_job, crash_worker, apply_error, apply_ok,
    watch_delay, watch_stale, watch_fresh, quota, rollout, restart, kill_after_retire, ...;
    a person's edits: autoscaling_off, autoscaling_on, pause, unpause, resize (value: the new
    spec.replicas, kept within the bounds), invalid_spec, valid_spec; and
    LiveKit's: livekit_down, livekit_flaky (value: the share of requests that fail), livekit_up,
    unanswered (value: how many offers to available workers go unanswered), end_room (the app
    deletes a room whose caller waits), callers_leave (every caller still waiting hangs up)."""
    value: float = 0.0
    target: int = 0
    """Which worker (an index into the live pods, modulo their count)."""


@dataclass(frozen=True, slots=True)
class Schedule:
    seed: int = 0
    duration_s: float = 120.0
    interval_s: float = 1.0
    min_replicas: int = 1
    max_replicas: int = 6
    min_available: int = 1
    drain_busy: bool = False
    recovery: bool = False
    arrivals_per_s: tuple[tuple[float, float], ...] = ((0.0, 0.2),)
    """(from time, calls per second) segments."""
    call_s: tuple[float, float] = (10.0, 60.0)
    faults: tuple[Fault, ...] = ()
    second_operator_at_s: float = 0.0
    """When a second operator installation (its own control key) starts; 0: never."""
    guard: bool = False
    """spec.dispatchGuard.enabled: callers whom no worker took wait for the guard."""
    max_wait_s: float = 30.0
    """spec.dispatchGuard.maxWait."""
    scale_to_zero_after_s: float = 30.0
    """spec.autoscaling.scaleToZeroAfter (it matters with min_replicas 0)."""
    webhooks: bool = True
    """LiveKit's webhooks reach the operator (with the guard)."""
    impatient: float = 0.0
    """The share of callers who hang up after 1 to 12 s without an agent."""
    miss_rate: float | None = None
    """spec.autoscaling.headroom.missRate: the warm headroom from a miss-rate target."""
    watch: bool = False
    """The operator long-polls the workers (`Syncer(watch=...)`, `polls.SimWatch`): a worker's
    change starts a round of its fleet."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @staticmethod
    def from_json(text: str) -> Schedule:
        raw = json.loads(text)
        raw["arrivals_per_s"] = tuple(tuple(a) for a in raw["arrivals_per_s"])
        raw["call_s"] = tuple(raw["call_s"])
        raw["faults"] = tuple(Fault(**f) for f in raw["faults"])
        return Schedule(**raw)


@dataclass(slots=True)
class Outcome:
    violations: list[str]
    calls: int
    completed: int
    missed: int
    crashed: int
    rounds: int
    max_replicas_seen: int
    events: list[tuple[str, str]] = field(default_factory=list)
    seen: dict[str, int] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    """The AgentWorker's status at the end."""
    full_at: list[float] = field(default_factory=list)
    """When a worker became full."""
    grown_at: list[float] = field(default_factory=list)
    """When the Deployment's replicas rose."""
    replicas: int = 0
    """The Deployment's replicas at the end."""

    def summary(self) -> str:
        return (
            f"{self.calls} calls ({self.completed} completed, {self.missed} missed at the door, "
            f"{self.crashed} crashed), {self.rounds} rounds, up to {self.max_replicas_seen} "
            f"replicas; violations: {self.violations[:3]}"
        )


def agentworker(schedule: Schedule, image: str = "ghcr.io/acme/agent:1") -> dict[str, Any]:
    body = _agentworker(schedule, image)
    if schedule.guard:
        spec = body["spec"]
        spec["agentName"] = worlds.AGENT_NAME
        spec["dispatchGuard"] = {"enabled": True, "maxWait": f"{schedule.max_wait_s:g}s"}
        spec["autoscaling"]["scaleToZeroAfter"] = f"{schedule.scale_to_zero_after_s:g}s"
    if schedule.miss_rate is not None:
        body["spec"]["autoscaling"]["headroom"] = {"missRate": schedule.miss_rate}
    return body


def _agentworker(schedule: Schedule, image: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{builders.GROUP}/{builders.VERSION}",
        "kind": builders.KIND,
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1},
        "spec": {
            "image": image,
            "entrypoint": "agent:entrypoint",
            "livekit": {"url": "ws://livekit.sim:7880", "credentialsSecret": {"name": "lk"}},
            "loadThreshold": 0.7,
            "recovery": {"redispatch": schedule.recovery},
            "autoscaling": {
                "enabled": True,
                "minReplicas": schedule.min_replicas,
                "maxReplicas": schedule.max_replicas,
                "targetLoad": 0.5,
                "minAvailableWorkers": schedule.min_available,
                "scaleDown": {
                    "stabilizationWindow": "10s",
                    "period": "5s",
                    "stepPods": 2,
                    "busyWorkers": "Drain" if schedule.drain_busy else "WaitForIdle",
                },
            },
        },
    }


class _PodEvents(store.Store):
    """The operator's store; a pod event also tells its sync loop, as kopf's `remember_pod`
    handler does (`Syncer.on_pods_changed`)."""

    syncer: syncs.Syncer | None = None

    def put_pod(self, event_type: str | None, body: Mapping[str, Any]) -> store.Key | None:
        key = super().put_pod(event_type, body)
        if key is not None and self.syncer is not None:
            self.syncer.on_pods_changed(key)
        return key


class Operator:
    """One operator process: its store, its memo and its Syncer, as `handlers.configure` wires
    them (the sync loop's body is driven by the simulation rather than by its sleep)."""

    def __init__(
        self,
        world: World,
        schedule: Schedule,
        *,
        operator_id: str = "sim/agentworker-operator-control-key",
        control_key: bytes = CONTROL_KEY,
        main: bool = True,
    ) -> None:
        """`main`: this installation's operator (a new process of it); else another
        installation's."""
        self.store = _PodEvents()
        self._world = world
        self.generation = 1000 + len(world.stores)
        if main:
            world.operator_generation += 1
            world.operator_started = world.now
            self.generation = world.operator_generation
        issuer = self.generation
        world.stores.append(self.store)
        world.resync_pods(self.store)
        self.store.put_agentworker("ADDED", world.agentworker)
        if world.deployment_manifest is not None:
            self.store.put_deployment("ADDED", world.deployment())
        kube = worlds.SimKube(world)
        self.memo: dict[str, Any] = handlers.new_memo(kube, worlds.SimProbe())
        self.memo["store"] = self.store

        async def reconcile_by_key(key: store.Key, trigger: str, full: bool) -> object:
            return await handlers.reconcile(
                self.memo, key[0], key[1], trigger=trigger, logger=logger, full=full
            )

        self.watch: polls.SimWatch | None = None

        def long_polls(on_change: Callable[[store.Key], None]) -> polls.SimWatch:
            self.watch = polls.SimWatch(world, on_change)
            return self.watch

        self.syncer = syncs.Syncer(
            client=kube,
            store=self.store,
            config=settings.SyncSettings(interval_s=schedule.interval_s),
            reconcile=reconcile_by_key,
            locks=self.memo["locks"],
            control_key=control_key,
            operator_id=operator_id,
            scraper=worlds.SimScraper(world),
            rooms_client=lambda url, key, secret: worlds.SimRooms(world, issuer=issuer),
            clock=lambda: world.now,
            wall_clock=lambda: worlds.EPOCH_S + world.now,
            watch=long_polls if schedule.watch and main else None,
        )
        self.memo["syncer"] = self.syncer
        self.store.syncer = self.syncer
        self.retry = False
        self.interval_s = schedule.interval_s
        world.token = builders.control_token(
            CONTROL_KEY, builders.Owner(name=NAME, namespace=NAMESPACE, uid=UID)
        )

    async def close(self) -> None:
        """The process is gone: its watches deliver nothing more."""
        self._world.stores.remove(self.store)
        await self.syncer.aclose()

    async def resume(self) -> None:
        """kopf's resume, create or update handler: a whole reconcile, retried (by the next
        step, as kopf's backoff would) while the API server refuses it."""
        try:
            await handlers.reconcile(self.memo, NAMESPACE, NAME, trigger="change", logger=logger)
        except kube.KubeError:
            self.retry = True
        else:
            self.retry = False


async def _simulate(schedule: Schedule) -> Outcome:
    world = _world(schedule)
    promises = Promises(world, schedule) if schedule.guard else None
    operator: Operator | None = await _start(world, schedule, promises, late=False)
    faults = sorted(schedule.faults, key=lambda f: f.at_s)
    pace = _Pace(next_full=schedule.interval_s)
    down_until, seen, late_resume = 0.0, 0, False
    second: Operator | None = None
    while world.now < schedule.duration_s:
        world.now = round(world.now + STEP_S, 3)
        for fault in [f for f in faults if f.at_s <= world.now]:
            faults.remove(fault)
            down_until = max(down_until, await _inject(world, fault, operator, schedule))
            if fault.kind == "restart":
                operator, late_resume = None, fault.target % 2 == 1
        _move(world, schedule)
        if world.operator_killed and operator is not None:  # died between /retire and apply
            await operator.close()
            world.operator_killed, operator = False, None
            down_until = world.now + world.killed_for_s
        second_due = schedule.second_operator_at_s and world.now >= schedule.second_operator_at_s
        if second_due and second is None:  # another installation on the same cluster
            second = Operator(
                world, schedule, operator_id="other/key", control_key=b"j" * 32, main=False
            )
            await second.resume()
        if operator is None and world.now >= down_until:
            operator = await _start(world, schedule, promises, late=late_resume)
        if operator is not None and operator.watch is not None:
            operator.watch.step()
        _webhooks(world, schedule, operator, pace)
        if operator is not None:
            await _rounds(world, schedule, operator, second, pace, promises)
        if promises is not None:
            promises.after_step(operator_up=operator is not None)
        seen = max(seen, world.replicas)
        if world.violations:
            break
    for running in (operator, second):
        if running is not None:
            await running.close()
    ended = [c.ended for c in world.calls.values()]
    return Outcome(
        violations=world.violations,
        calls=len(ended),
        completed=ended.count("completed"),
        missed=world.missed,
        crashed=ended.count("crash"),
        rounds=world.round,
        max_replicas_seen=seen,
        events=world.events,
        seen=world.seen,
        status=world.agentworker.get("status") or {},
        full_at=world.full_at,
        grown_at=world.grown_at,
        replicas=world.replicas,
    )


def _move(world: World, schedule: Schedule) -> None:
    """One step of the world: calls arrive and end, pods start, controllers act, watches
    deliver."""
    _arrivals(world, schedule)
    world.tick_calls()
    world.tick_pods()
    world.control()
    world.deliver()
    world.note_blindness()


async def _start(
    world: World, schedule: Schedule, promises: Promises | None, *, late: bool
) -> Operator:
    """A new operator process; `late`: the sync loop's first round wins the race with kopf's
    resume."""
    operator = Operator(world, schedule)
    if promises is not None:
        promises.operator_started(operator.generation)
    if late:
        await _round(world, operator, promises=promises)
    await operator.resume()
    return operator


async def _rounds(
    world: World,
    schedule: Schedule,
    operator: Operator,
    second: Operator | None,
    pace: _Pace,
    promises: Promises | None,
) -> None:
    """kopf's retried resume, then the round `Syncer.run` would start now, if any."""
    if operator.retry:
        await operator.resume()
    if world.now >= pace.next_full:
        pace.next_full = world.now + schedule.interval_s
        pace.started(world.now)
        await _round(world, operator, promises=promises)
        if second is not None:
            await second.syncer.sync_all()
    elif only := pace.urgent(world.now, operator):
        pace.started(world.now)
        await _round(world, operator, only=only, promises=promises)


def _world(schedule: Schedule) -> World:
    world = World(
        random.Random(schedule.seed),
        min_replicas=schedule.min_replicas,
        max_replicas=schedule.max_replicas,
        livekit_rng=random.Random(f"livekit-{schedule.seed}"),
        guarded=schedule.guard,
        impatient=schedule.impatient,
    )
    world.drain_busy = schedule.drain_busy
    world.agentworker = agentworker(schedule)
    world.secrets["lk"] = {"data": {"LIVEKIT_API_KEY": "a2V5", "LIVEKIT_API_SECRET": "c2VjcmV0"}}
    if schedule.guard:
        world.max_wait_s = schedule.max_wait_s
    return world


@dataclass(slots=True)
class _Pace:
    """When `Syncer.run` starts its rounds (it runs on real time; this is its schedule on
    simulated time): every sync period, and between them: CHANGE_GAP_S after the last round
    started once a worker's change was heard (`Syncer.on_worker_change`), every GUARD_PERIOD_S
    while the guard holds dispatches no worker took, and WEBHOOK_GAP_S after the last round
    when a webhook woke it (which wakes it again once a new dispatch's grace is over); each
    for the fleets `Syncer._urgent` names."""

    next_full: float
    last_started: float = -1e9
    wakes: list[float] = field(default_factory=list)

    def urgent(self, now: float, operator: Operator) -> list[store.Key]:
        """The fleets of the round `Syncer.run` starts now between the periodic ones (none:
        no such round now)."""
        syncer = operator.syncer
        woken = any(t <= now for t in self.wakes)
        fleet = syncer.fleets.get((NAMESPACE, NAME))
        held = fleet.held.values() if fleet is not None else ()
        if woken:
            gap = syncs.WEBHOOK_GAP_S
        elif syncer._changed:
            gap = syncs.CHANGE_GAP_S
        elif any(h.stage is guard.Stage.WAITING for h in held):  # in their grace too
            gap = syncs.GUARD_PERIOD_S
        else:
            return []
        if now < self.last_started + gap:
            return []
        return syncer._urgent(woken=woken)

    def started(self, now: float) -> None:
        """A round starts now: the webhooks' wakes until now are spent (`Syncer._woken`)."""
        self.last_started = now
        self.wakes = [t for t in self.wakes if t > now]


def _webhooks(world: World, schedule: Schedule, operator: Operator | None, pace: _Pace) -> None:
    """LiveKit's webhooks of this step reach the operator (when it runs and has them)."""
    events, world.webhooks = world.webhooks, []
    if operator is None or not (schedule.guard and schedule.webhooks):
        return
    for event in events:
        operator.syncer.on_webhook(event)
        room = world.rooms.get(event.room_name)
        if room is not None and event.participant_identity and not event.participant_is_agent:
            room.known.add(operator.generation)
        pace.wakes += [world.now, world.now + guard.GRACE_S + 0.1]


def _arrivals(world: World, schedule: Schedule) -> None:
    rate = 0.0
    for start, per_s in schedule.arrivals_per_s:
        if world.now >= start:
            rate = per_s
    expected = rate * STEP_S
    arrivals = int(expected) + (1 if world.rng.random() < expected - int(expected) else 0)
    for _ in range(arrivals):
        world.place_call(world.rng.uniform(*schedule.call_s))


async def _round(
    world: World,
    operator: Operator,
    *,
    only: list[store.Key] | None = None,
    promises: Promises | None = None,
) -> None:
    """One sync round of the operator, and the promises checked after it."""
    world.round += 1
    if promises is not None:
        promises.before_round()
    world.retired_this_round, world.refused_this_round = 0, False
    before = world.replicas
    # what the operator can know of: pods its watch has shown it; in a round a worker's change
    # started (which reads no worker), those whose long poll holds their news
    known = {str(pod["metadata"]["name"]) for pod in operator.store.pods((NAMESPACE, NAME))}
    watch = operator.watch
    if watch is not None and (NAMESPACE, NAME) in operator.syncer._changed:
        known = {name for name in known if watch.current(world.pods[name].ip)}
    busy = {
        p.name
        for p in world.live_pods()
        if _calls(p) > 0 and _readable(world, p) and p.name in known
    }
    await operator.syncer.sync_all(only)
    if promises is not None:
        promises.after_round(operator.generation, before)
    try:  # an operator that started on an invalid spec knows no spec to protect calls by
        operator.syncer.parsed(world.agentworker)
        readable_spec = True
    except specs.InvalidSpecError:
        readable_spec = operator.syncer.last_valid((NAMESPACE, NAME)) is not None
    if readable_spec:
        _check_protection(world, busy)
    lowered = before - world.replicas
    excused = world.refused_this_round or world.operator_killed
    if world.retired_this_round > max(0, lowered) and not excused:
        world.violate(
            f"{world.retired_this_round} workers retired but replicas lowered by {lowered}: "
            "a scale-down that does not happen takes no worker out of service"
        )
    kept = [
        p.name
        for p in world.live_pods()
        if p.process is not None
        and p.process.retired_round == world.round
        and p.deleted_at is None
        and p.process.retired(world.now)
    ]
    if kept and not excused and not world.faults.watch_stale:
        world.violate(f"{kept[0]} retired in this round and not removed by its end")
    _check_retirements(world)
    _check_status(world)
    _check_warm_headroom(world, operator)


def _readable(world: World, pod: worlds.Pod) -> bool:
    p = pod.process
    return p is not None and not p.unreadable and p.stalled_until <= world.now


def _check_protection(world: World, busy_before: set[str]) -> None:
    """A worker busy through a whole round carries its calls' protection after it: node
    autoscalers' do-not-disrupt, and (WaitForIdle) a deletion cost above a victim's. Not while
    the pod watch is frozen: the operator learns of new pods only when it lists them again.
    A round a worker's change started reads no worker: it answers only for the workers whose
    long poll is held (their news is heard); one whose poll failed (it was unreadable, or had
    no process) may be known only by an earlier answer, and is protected by the next round
    that reads it, as without the change stream."""
    if world.faults.watch_stale:
        return
    for pod in world.live_pods():
        if pod.name not in busy_before or _calls(pod) <= 0 or not _readable(world, pod):
            continue
        # with busyWorkers Drain a busy worker may be the chosen victim: the lowest cost
        victim = pod.annotations.get(scaledown.DELETION_COST) == scaledown.VICTIM_COST
        if pod.annotations.get(scaledown.DO_NOT_DISRUPT) != "true" or (
            victim and not world.drain_busy
        ):
            world.violate(f"busy {pod.name} unprotected: {pod.annotations}")


def _check_status(world: World) -> None:
    """The status's desiredReplicas is what the Deployment has, within two rounds of the API
    server accepting applies again."""
    if world.faults.apply_error or world.faults.status_error:
        world.accepting_since = None
        return
    if world.accepting_since is None:
        world.accepting_since = world.round
    said = (world.agentworker.get("status") or {}).get("desiredReplicas")
    if said != world.replicas and world.round - world.accepting_since >= 2:
        if world.status_wrong_since is None:
            world.status_wrong_since = world.round
        elif world.round - world.status_wrong_since >= 2:
            world.violate(f"status says {said} replicas, the Deployment has {world.replicas}")
    else:
        world.status_wrong_since = None


def _check_warm_headroom(world: World, operator: Operator) -> None:
    """status.warmHeadroom is there only with a miss-rate target and autoscaling on, and then
    says the target, at most maxReplicas warm workers and a reaction of at least a round."""
    spec = world.agentworker["spec"]
    if world.faults.apply_error or world.faults.status_error or spec["loadThreshold"] == "high":
        return  # no status written this round (the reconcile applies first)
    said = (world.agentworker.get("status") or {}).get("warmHeadroom")
    autoscaling = spec["autoscaling"]
    target = (autoscaling.get("headroom") or {}).get("missRate")
    if said is None:
        return  # before the operator's first round saw the workers
    if target is None or not autoscaling["enabled"]:
        world.violate(f"status.warmHeadroom {said} without a miss-rate target to derive it")
    elif said["missRate"] != target or not 0 <= said["workers"] <= autoscaling["maxReplicas"]:
        world.violate(f"status.warmHeadroom {said} for missRate {target}")
    elif said["reactionSeconds"] < operator.interval_s or said["freeSlots"] < 0:
        world.violate(f"status.warmHeadroom {said}: a reaction shorter than a round")


def _check_retirements(world: World) -> None:
    """A retired worker is removed, or serving again, within one round of the decision."""
    for pod in world.live_pods():
        p = pod.process
        if p is None or pod.deleted_at is not None or not p.retired(world.now):
            continue
        if not _readable(world, pod):
            continue  # the operator cannot see it retired; its own expiry serves it again
        if p.retired_round < world.round - 1:
            world.violate(f"{pod.name} retired in round {p.retired_round} and still idle, kept")


def _calls(pod: worlds.Pod) -> int:
    return len(pod.process.jobs) if pod.process is not None and pod.deleted_at is None else -1


def _target(world: World, index: int) -> worlds.Pod | None:
    """Worker `index` by name; 0 is the busiest, whose trouble matters most."""
    pods = sorted(
        (p for p in world.live_pods() if p.deleted_at is None and p.process is not None),
        key=lambda p: p.name,
    )
    if not pods:
        return None
    if index == 0:
        return max(pods, key=lambda p: (_calls(p), p.name))
    return pods[index % len(pods)]


async def _inject(
    world: World, fault: Fault, operator: Operator | None, schedule: Schedule
) -> float:
    """Apply one fault; returns until when the operator stays down (0: it does not go down)."""
    pod = _target(world, fault.target)
    world.saw(f"fault {fault.kind}")
    match fault.kind:
        case "stall" if pod is not None and pod.process is not None:
            pod.process.stalled_until = world.now + fault.value
        case "reconnect" if pod is not None and pod.process is not None:
            pod.process.worker_id = world._next("AW_")
            pod.process.registers_at = world.now + fault.value
            world.emit_pod(pod)
        case "unreadable":
            world.faults.unreadable = True
            for each in world.live_pods():
                if each.process is not None:
                    each.process.unreadable = True
        case "readable":
            world.faults.unreadable = False
            for each in world.live_pods():
                if each.process is not None:
                    each.process.unreadable = False
        case "crash_job":
            world.crash_job()
        case "crash_worker" if pod is not None:
            world.crash_worker(pod)
        case "apply_error":
            world.faults.apply_error = int(fault.value)
        case "apply_ok":
            world.faults.apply_error = 0
        case "watch_delay":
            world.faults.watch_delay_s = fault.value
        case "watch_stale":
            world.faults.watch_stale = True
        case "watch_fresh":
            world.faults.watch_stale = False
            for store_ in world.stores:
                world.resync_pods(store_)
        case "quota":
            world.faults.quota = int(fault.value)
        case "rollout":
            image = f"ghcr.io/acme/agent:{int(fault.value) + 2}"
            world.agentworker["spec"]["image"] = image
            world.agentworker["metadata"]["generation"] += 1
            for store_ in world.stores:
                store_.put_agentworker("MODIFIED", world.agentworker)
            if operator is not None:
                await operator.resume()
        case "restart":
            if operator is not None:
                await operator.close()
            return world.now + fault.value
        case "kill_after_retire":
            world.faults.kill_after_retire = fault.value
        case "victim_mark_error" | "victim_mark_ok":
            world.faults.victim_mark_error = fault.kind == "victim_mark_error"
        case "busy_race":
            world.faults.busy_race = True
        case (
            "livekit_down"
            | "livekit_up"
            | "livekit_flaky"
            | "unanswered"
            | "end_room"
            | "callers_leave"
        ):
            _livekit_fault(world, fault)
        case "credentials_forbidden":
            world.faults.credentials_forbidden = True
        case (
            "autoscaling_off"
            | "autoscaling_on"
            | "pause"
            | "unpause"
            | "resize"
            | "invalid_spec"
            | "valid_spec"
        ):
            await _change_spec(world, operator, fault)
        case "status_error":
            world.faults.status_error = int(fault.value)
        case "status_ok":
            world.faults.status_error = 0
    return 0.0


def _livekit_fault(world: World, fault: Fault) -> None:
    match fault.kind:
        case "livekit_down" | "livekit_up":
            world.faults.livekit_down = fault.kind == "livekit_down"
            world.faults.livekit_flaky = 0.0
        case "livekit_flaky":
            world.faults.livekit_flaky = fault.value
        case "unanswered":
            world.faults.unanswered = int(fault.value)
        case "end_room":
            world.end_a_room()
        case "callers_leave":
            for call in list(world.calls.values()):
                room = world.rooms.get(call.room)
                if room is not None and not call.ended and call.served_at is None:
                    call.ended = "left"
                    world.caller_leaves(room)


async def _change_spec(world: World, operator: Operator | None, fault: Fault) -> None:
    """A person edits the AgentWorker: kopf's update handler reconciles it. Turning autoscaling
    off or pausing it leaves spec.replicas as it was (the fleet keeps its size regardless);
    `kubectl scale aw` resizes."""
    spec = world.agentworker["spec"]
    match fault.kind:
        case "autoscaling_off" | "autoscaling_on":
            spec["autoscaling"]["enabled"] = fault.kind == "autoscaling_on"
        case "pause" | "unpause":
            spec["autoscaling"]["paused"] = fault.kind == "pause"
        case "resize":
            spec["replicas"] = min(max(int(fault.value), world.min_replicas), world.max_replicas)
        case "invalid_spec":
            spec["loadThreshold"] = "high"
        case "valid_spec":
            spec["loadThreshold"] = 0.7
    world.agentworker["metadata"]["generation"] += 1
    for store_ in world.stores:
        store_.put_agentworker("MODIFIED", world.agentworker)
    if operator is not None:
        await operator.resume()


def simulate(schedule: Schedule) -> Outcome:
    return asyncio.run(_simulate(schedule))


def replay(text: str) -> Outcome:
    """Run a schedule again from the JSON a failure printed."""
    return simulate(Schedule.from_json(text))
