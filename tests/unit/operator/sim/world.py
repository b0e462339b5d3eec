"""The simulated world: a cluster, its worker processes and a LiveKit server, on simulated time.

What is modelled, and how faithfully:
- The Deployment controller keeps `replicas` pods of the current pod template, rolling with
  maxUnavailable 0 and a 25 % surge; a scale-down during a rollout is split across the
  ReplicaSets in proportion to their sizes, as the real controller does.
- A ReplicaSet removes not-ready pods first, then the lowest pod-deletion-cost, then the newest
  (the real ranking's steps that matter here). Quota refuses pods past a count.
- Watch events reach the operator's store after a delay, in order; a stale watch drops them.
- A worker process starts, registers, reports /worker in this runtime's format (with the
  generation of its change stream: `World.worker_document`), takes calls up to its load
  threshold, answers the retire handshake (POST and DELETE /retire), drains on SIGTERM and is
  killed at the end of its grace period. Its load is its calls' share of its slots, so it moves
  only with its jobs (a real worker's CPU load also moves alone, which no generation counts).
  Faults: a stall (no answer, calls go on), a reconnect (a new worker id, calls go on), an
  unreadable /worker, a job crash, a worker crash.
- LiveKit, as its server's code behaves: a dispatch (a room created with the agent, or
  CreateDispatch) is an AgentDispatch record of the room, offered to the least loaded available
  worker; with none (none registered, every one full, starting or gone) the server drops it and
  never tries again: the record stays with no job. A job is added to the record only when the
  worker answered (after a short latency; a worker that does not answer within 3 s drops it too);
  DeleteDispatch removes the record and terminates its jobs, a launch still under way included;
  CreateDispatch starts another agent whatever the room holds. A room closes 20 s after its
  last caller left; it lists a dead agent for a while after its process died. The API can fail
  for a while (every request, or a share of them). Callers whom no agent serves wait (with the
  dispatch guard on) until they hang up; some leave early; the app may end a room. Webhooks say
  when a caller or agent joined or left and a room ended. What the guard must find at each of
  its reads is worked out from the same facts (`waiting_rooms`, `Read`).
Every violation of a promise is recorded with the time it happened; `run` checks them.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentworker_operator import builders, guard, kube, rooms, scaledown, webhooks
from agentworker_operator import scraper as scrapers
from agentworker_operator.store import Store

NAMESPACE = "sim"
NAME = "agents"
UID = "uid-agents"
SLOTS = 4
"""Calls a worker holds at load 1.0 (its load is calls / SLOTS)."""
LOAD_THRESHOLD = 0.7
"""The workers' load threshold (the spec's loadThreshold): past it a worker is full."""
RETIRE_TIMEOUT_S = 60.0
GHOST_S = 15.0
"""How long LiveKit lists an agent whose process died."""
DEAD = "dead"
STEP_S = 0.5
"""The world moves in steps of this many seconds."""
AGENT_NAME = "sim"
"""The agent name of the guarded schedules' AgentWorker (spec.agentName)."""
ROOM_CLOSE_S = 20.0
"""How long a room stays after its last caller left (LiveKit's departure timeout)."""
ANSWER_DEADLINE_S = 3.0
"""How long the server waits for a worker's answer to an offer before it drops the dispatch."""
LATENCIES_S = (0.0, 0.0, 0.0, 0.5, 1.0)
"""How long a worker takes to answer an offer (drawn evenly from these)."""
EPOCH_S = 1_800_000_000.0
"""The wall clock at simulated time 0: LiveKit's timestamps are wall seconds."""


@dataclass(slots=True)
class Call:
    room: str
    started: float
    ends_at: float
    """When the caller hangs up (served or not)."""
    pod: str = ""
    job_id: str = ""
    ended: str = ""
    """"" while running; else how it ended: completed, crash, cut:<why>, missed (no worker, the
    caller hung up at once), unserved (hung up still waiting), left (hung up early, waiting),
    room ended."""
    served_at: float | None = None
    """When its first agent came."""
    patience_s: float = math.inf
    """How long its caller waits for an agent before hanging up."""
    at_zero: bool = False
    """It arrived while the fleet had no worker pod."""
    chances_s: float = 0.0
    """Seconds of its wait in which the fleet had room for it (a free slot beyond what the calls
    waiting longer need, or room to grow) and the guard could act."""
    hindered: bool = False
    """Some step of its wait the guard could not act or the fleet could not grow."""
    judged: bool = False
    """Its wait was checked at maxWait."""


@dataclass(slots=True)
class Agent:
    identity: str
    pod: str
    job_id: str
    alive: bool = True
    died_at: float = 0.0


@dataclass(slots=True)
class Job:
    """A job on a dispatch record: added when a worker accepted, RUNNING forever after."""

    id: str
    identity: str
    started: float


@dataclass(slots=True)
class Record:
    """An AgentDispatch of a room, as ListDispatch shows it."""

    id: str
    created: float
    metadata: str
    issuer: int = 0
    """The operator process whose dispatch guard created it; 0 when not the guard."""
    jobs: list[Job] = field(default_factory=list)


@dataclass(slots=True)
class Offer:
    """A dispatch offered to a worker, whose answer lands at `at`."""

    room: str
    record: str
    pod: str
    job_id: str
    at: float
    answered: bool
    """False: the worker does not answer; the server drops the dispatch at its deadline."""


@dataclass(slots=True)
class Room:
    name: str
    caller: bool = True
    agents: list[Agent] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    created: float = 0.0
    left_at: float | None = None
    """When its caller left."""
    served: bool = False
    """An agent came at least once."""
    known: set[int] = field(default_factory=set)
    """Operator processes that learnt a caller was in it (a webhook, or a read with a caller)."""
    reissued_by: set[int] = field(default_factory=set)
    """Operator processes whose guard re-issued its dispatch."""
    murky: bool = False
    """A jobless record of ours stood beside an agent: the guard may hold it as served; its
    waiting is not counted exactly (`waiting_rooms`)."""


@dataclass(slots=True)
class Process:
    """One pod's worker process."""

    worker_id: str
    registers_at: float
    jobs: dict[str, str] = field(default_factory=dict)
    """job id -> room."""
    retired_until: float | None = None
    retired_round: int = -1
    draining: bool = False
    stalled_until: float = 0.0
    unreadable: bool = False
    instance: str = ""
    """Names this process in its /worker document (a restarted container is another)."""
    generation: int = 0
    """How often its decision view changed, as its /worker document says (`http_api.Changes`)."""
    view: tuple[object, ...] | None = None
    """Its decision view when its document was last made (`http_api.decision_view`)."""

    def registered(self, now: float) -> bool:
        return now >= self.registers_at

    def retired(self, now: float) -> bool:
        return self.retired_until is not None and now < self.retired_until

    def serving(self, now: float) -> bool:
        """Takes new calls: registered, neither retired nor draining, and answering."""
        return (
            self.registered(now)
            and not self.retired(now)
            and not self.draining
            and now >= self.stalled_until
        )


@dataclass(slots=True)
class Pod:
    name: str
    template: str
    created: float
    ip: str
    annotations: dict[str, str]
    starts_at: float
    deleted_at: float | None = None
    grace_s: float = 0.0
    restarts: int = 0
    process: Process | None = None
    gone: bool = False

    def ready(self, now: float) -> bool:
        p = self.process
        return (
            p is not None
            and self.deleted_at is None
            and p.registered(now)
            and not p.retired(now)
            and not p.draining
        )

    def manifest(self, now: float) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "name": self.name,
            "namespace": NAMESPACE,
            "labels": {
                builders.LABEL_NAME: builders.APP_NAME,
                builders.LABEL_INSTANCE: NAME,
                builders.LABEL_MANAGED_BY: builders.FIELD_MANAGER,
            },
            "annotations": {
                **self.annotations,
                builders.TEMPLATE_HASH_ANNOTATION: self.template,
            },
        }
        if self.deleted_at is not None:
            meta["deletionTimestamp"] = "2026-12-07T00:00:00Z"
        return {
            "metadata": meta,
            "status": {
                "podIP": self.ip,
                "conditions": [{"type": "Ready", "status": str(self.ready(now))}],
                "containerStatuses": [{"name": "agent-worker", "restartCount": self.restarts}],
            },
        }


@dataclass(frozen=True, slots=True)
class Read:
    """One read of the dispatch guard, and what the world says it must find."""

    round: int
    reader: int
    unread: frozenset[str]
    waiting: int
    """Dispatches waiting for a worker, as the guard must count them (pendingDispatches)."""
    uncertain: int
    """Rooms the guard may or may not count (its memory decides): see `World.waiting_rooms`."""
    rescued: int
    """Re-issues of this reader that a worker took, in rooms listed at this read or an earlier
    one of the reader: the rescues it must have counted by the end of the round
    (agentworker_dispatches_rescued_total)."""


def decision_view(document: Mapping[str, Any]) -> tuple[object, ...]:
    """What the operator decides on, of a /worker document: its generation counts the changes
    of this (`http_api.decision_view`: the worker id, state, draining, retired, the jobs' ids,
    the idle processes and the threshold; not the load)."""
    return (
        document["worker_id"],
        document["state"],
        document["draining"],
        document["retired"],
        frozenset(job["id"] for job in document["jobs"]),
        document.get("idle_processes"),
        document["load_threshold"],
    )


class Violation(AssertionError):
    """A promise the operator broke; the message says which, when and to whom."""


@dataclass(slots=True)
class Faults:
    """Switches a schedule flips while it runs."""

    apply_error: int = 0
    """Status the API server answers a Deployment apply with (0: none)."""
    watch_delay_s: float = 0.0
    watch_stale: bool = False
    """Pod events are not delivered (a half-open watch)."""
    quota: int | None = None
    unreadable: bool = False
    """Every worker's /worker answers 404 (a wrong command or port)."""
    status_error: int = 0
    """Status the API server answers a status patch with (0: none)."""
    victim_mark_error: bool = False
    """A victim's lowest deletion cost is refused (500)."""
    busy_race: bool = False
    """The next worker asked to retire gets a call just before (once)."""
    livekit_down: bool = False
    """LiveKit's room API does not answer (call recovery and the guard cannot ask it)."""
    livekit_flaky: float = 0.0
    """The share of LiveKit API requests that fail (a ListDispatch, a DeleteDispatch, ...)."""
    unanswered: int = 0
    """The next this many offers go to an available worker that does not answer in time."""
    credentials_forbidden: bool = False
    """The operator may not read the credentials Secret (403)."""
    kill_after_retire: float = 0.0
    """The operator dies between its next accepted /retire and its apply, down this long."""


class World:
    """The cluster, the workers and LiveKit for one AgentWorker."""

    def __init__(
        self,
        rng: random.Random,
        *,
        min_replicas: int,
        max_replicas: int,
        livekit_rng: random.Random | None = None,
        guarded: bool = False,
        impatient: float = 0.0,
    ) -> None:
        """`livekit_rng` draws LiveKit's latencies and the callers' patience (apart from `rng`,
        so that schedules without the guard draw their arrivals and pods as before);
        `guarded`: callers whom no worker took wait, a share `impatient` of them briefly."""
        self.rng = rng
        self.livekit_rng = livekit_rng or random.Random(0)
        self.guarded, self.impatient = guarded, impatient
        self.offers: list[Offer] = []
        self.webhooks: list[webhooks.WebhookEvent] = []
        """Webhooks LiveKit sent since the simulation last delivered them."""
        self.operator_generation = 0
        """Which operator process runs now (each start counts one more)."""
        self.rescues: list[tuple[str, int]] = []
        """(room, issuer) of each re-issued dispatch a worker took while its caller was there,
        until the issuer's guard reads it (see `Read.rescued`)."""
        self.rescues_read: dict[int, int] = {}
        """Operator process -> the rescues of its re-issues its guard read."""
        self.rescues_doubtful: dict[int, int] = {}
        """Operator process -> its re-issues a worker took after their caller left."""
        self.last_busy = 0.0
        """When a worker last held a job or a dispatch last waited (the world's view)."""
        self._records = 0
        self.reads: list[Read] = []
        """Each read of the dispatch guard that succeeded."""
        self.max_wait_s = math.inf
        """spec.dispatchGuard.maxWait."""
        self.operator_started = 0.0
        """When the running operator process started."""
        self.now = 0.0
        self.min_replicas, self.max_replicas = min_replicas, max_replicas
        self.faults = Faults()
        self.pods: dict[str, Pod] = {}
        self.replicas = 0
        self.template = ""
        self.generation = 0
        self.deployment_manifest: dict[str, Any] | None = None
        self.agentworker: dict[str, Any] = {}
        self.rooms: dict[str, Room] = {}
        self.calls: dict[str, Call] = {}
        self.missed = 0
        self.violations: list[str] = []
        self.round = 0
        self.token = ""
        self.secrets: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str]] = []
        self.stores: list[Store] = []
        self._watch: list[tuple[float, str, dict[str, Any]]] = []
        self._counter = 0
        self.blind_since_replicas: int | None = None
        self.jobless_while_blind: set[str] = set()
        """Rooms seen with a dispatch without a job since the fleet went blind (guarded)."""
        self.kill_pending = False
        self.operator_killed = False
        self.killed_for_s = 0.0
        self.seen: dict[str, int] = {}
        """How often each interesting thing happened (the generator's coverage)."""
        self.retired_this_round = 0
        self.refused_this_round = False
        self.events_seen = 0
        self.template_generation = 0
        self.accepting_since: int | None = 0
        self.status_wrong_since: int | None = None
        self.full_at: list[float] = []
        """When a worker became full (its calls past its load threshold)."""
        self.grown_at: list[float] = []
        """When the Deployment's replicas rose."""
        self.spec_replicas_applied: int | None = None
        """The AgentWorker's spec.replicas at the latest apply of the Deployment (the world's
        own record: a fleet the autoscaler does not size changes size only when it changed)."""

    # -- bookkeeping -------------------------------------------------------------------------

    def violate(self, what: str) -> None:
        self.violations.append(f"t={self.now:.1f}s round {self.round}: {what}")

    def saw(self, what: str) -> None:
        self.seen[what] = self.seen.get(what, 0) + 1

    def _next(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}{self._counter}"

    def pod_by_ip(self, ip: str) -> Pod | None:
        return next((p for p in self.pods.values() if p.ip == ip and not p.gone), None)

    def live_pods(self) -> list[Pod]:
        return [p for p in self.pods.values() if not p.gone]

    # -- watches -----------------------------------------------------------------------------

    def emit_pod(self, pod: Pod, kind: str = "MODIFIED") -> None:
        if self.faults.watch_stale:
            return
        self._watch.append((self.now + self.faults.watch_delay_s, kind, pod.manifest(self.now)))

    def deliver(self) -> None:
        due = [w for w in self._watch if w[0] <= self.now]
        self._watch = [w for w in self._watch if w[0] > self.now]
        for _, kind, body in due:
            for store in self.stores:
                store.put_pod(kind, body)
        for store in self.stores:
            if self.deployment_manifest is not None:
                store.put_deployment("MODIFIED", self.deployment())

    def resync_pods(self, store: Store) -> None:
        """A new watch's initial list: every pod as it is now."""
        for pod in self.live_pods():
            store.put_pod("ADDED", pod.manifest(self.now))

    # -- the Deployment and its ReplicaSets ----------------------------------------------------

    def deployment(self) -> dict[str, Any]:
        members = [p for p in self.live_pods() if p.deleted_at is None]
        current = [p for p in members if p.template == self.template]
        applied = (self.deployment_manifest or {}).get("metadata") or {}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": NAME,
                "namespace": NAMESPACE,
                "generation": self.generation,
                "labels": {builders.LABEL_MANAGED_BY: builders.FIELD_MANAGER},
                "annotations": dict(applied.get("annotations") or {}),
                "ownerReferences": [{"kind": builders.KIND, "name": NAME, "controller": True}],
            },
            "spec": {"replicas": self.replicas},
            "status": {
                "observedGeneration": self.generation,
                "replicas": len(members),
                "readyReplicas": sum(1 for p in members if p.ready(self.now)),
                "updatedReplicas": len(current),
                "availableReplicas": sum(1 for p in members if p.ready(self.now)),
            },
        }

    def apply_deployment(self, manifest: Mapping[str, Any]) -> None:
        replicas = int(manifest["spec"]["replicas"])
        template = manifest["spec"]["template"]["metadata"]["annotations"]
        digest = str(template[builders.TEMPLATE_HASH_ANNOTATION])
        if replicas != self.replicas or digest != self.template:
            self.generation += 1
        if self.template and digest != self.template:
            self.saw("rollout")
            generation = self.agentworker["metadata"]["generation"]
            if generation == self.template_generation:
                self.violate(
                    "the pod template changed with no change of the spec: a roll for nothing"
                )
            self.template_generation = generation
        elif not self.template:
            self.template_generation = self.agentworker["metadata"]["generation"]
        if replicas > self.replicas:
            self.grown_at.append(self.now)
        if replicas < self.replicas:
            self.saw("replicas lowered")
            if any(p.template != digest for p in self.live_pods() if p.deleted_at is None):
                self.saw("replicas lowered during a rollout")
        spec = self.agentworker["spec"]
        autoscaling = spec["autoscaling"]
        held = not autoscaling["enabled"] or autoscaling.get("paused", False)
        resized = spec.get("replicas", 1) != self.spec_replicas_applied
        if self.replicas and replicas != self.replicas and held and not resized:
            self.violate(
                f"replicas {self.replicas} -> {replicas} while autoscaling is off or paused "
                f"and spec.replicas ({spec.get('replicas', 1)}) did not change"
            )
        elif self.replicas and replicas != self.replicas and not held:
            said = [
                r for r, _ in self.events[self.events_seen :] if r in ("ScaledUp", "ScaledDown")
            ]
            if not said:
                self.violate(f"replicas {self.replicas} -> {replicas} with no scale decision")
        if self.replicas and held and resized and replicas not in (self.replicas, spec["replicas"]):
            self.violate(f"spec.replicas {spec['replicas']} resized the fleet to {replicas}")
        if held and resized and replicas != self.replicas:
            self.saw("resized by spec.replicas")
        self.spec_replicas_applied = spec.get("replicas", 1)
        if replicas != self.replicas:
            self.events_seen = len(self.events)
        if not self.min_replicas <= replicas <= self.max_replicas:
            self.violate(f"replicas {replicas} outside [{self.min_replicas}, {self.max_replicas}]")
        # blind, the fleet grows by at most one worker for each dispatch seen without a job
        allowed = len(self.jobless_while_blind)
        if self.blind_since_replicas is not None and replicas > self.blind_since_replicas + allowed:
            self.violate(
                f"the fleet grew to {replicas} while no worker could be read "
                f"(it had {self.blind_since_replicas}; {allowed} dispatches had no job)"
            )
        self.replicas, self.template = replicas, digest
        self.deployment_manifest = dict(manifest)
        self.control()

    def control(self) -> None:
        """The Deployment and ReplicaSet controllers, one pass."""
        if self.deployment_manifest is None:
            return
        members = [p for p in self.live_pods() if p.deleted_at is None]
        new = [p for p in members if p.template == self.template]
        old = [p for p in members if p.template != self.template]
        surge = math.ceil(self.replicas * 0.25) if old else 0
        ceiling = self.replicas + surge
        if len(members) > ceiling:
            self._scale_down_proportionally(new, old, len(members) - ceiling)
        elif old:
            ready_new = sum(1 for p in new if p.ready(self.now))
            keep_old = max(0, self.replicas - ready_new)
            if len(old) > keep_old:
                self._remove(old, len(old) - keep_old, scale_down=False)
        members = [p for p in self.live_pods() if p.deleted_at is None]
        new_count = sum(1 for p in members if p.template == self.template)
        room = min(self.replicas - new_count, ceiling - len(members))
        for _ in range(max(0, room)):
            if not self._create():
                break

    def _scale_down_proportionally(self, new: list[Pod], old: list[Pod], excess: int) -> None:
        total = len(new) + len(old)
        from_old = min(len(old), round(excess * len(old) / total)) if old else 0
        from_new = excess - from_old
        if from_new > len(new):
            from_old += from_new - len(new)
            from_new = len(new)
        if old:
            self._remove(old, from_old, scale_down=True)
        self._remove(new, from_new, scale_down=True)

    def _rank(self, pod: Pod) -> tuple[int, int, float]:
        """The ReplicaSet's deletion order: not ready first, lowest cost, newest."""
        cost = int(pod.annotations.get(scaledown.DELETION_COST, "0"))
        return (1 if pod.ready(self.now) else 0, cost, -pod.created)

    def _remove(self, pods: list[Pod], count: int, *, scale_down: bool) -> None:
        for victim in sorted(pods, key=self._rank)[:count]:
            self.saw("scale-down removal" if scale_down else "rollout removal")
            if scale_down and self._busy(victim):
                self.saw("busy pod removed")
            if scale_down and self._busy(victim):
                idle = [
                    p.name
                    for p in self.live_pods()
                    if p.deleted_at is None and p is not victim and not self._busy(p)
                ]
                if idle and not self.drain_busy:
                    self.violate(
                        f"busy {victim.name} ({len(victim.process.jobs) if victim.process else 0}"
                        f" calls) removed while {idle[0]} was idle"
                    )
            self.delete_pod(victim.name)

    drain_busy = False
    """scaleDown.busyWorkers is Drain: a busy victim is allowed."""

    @staticmethod
    def _busy(pod: Pod) -> bool:
        return pod.process is not None and bool(pod.process.jobs)

    def _create(self) -> bool:
        if self.faults.quota is not None and len(self.live_pods()) >= self.faults.quota:
            return False
        name = self._next(f"{NAME}-{self.template[:5]}-")
        pod = Pod(
            name=name,
            template=self.template,
            created=self.now,
            ip=f"sim-{name}",
            annotations={},
            starts_at=self.now + self.rng.uniform(0.3, 2.0),
        )
        self.pods[name] = pod
        self.emit_pod(pod, "ADDED")
        return True

    def delete_pod(self, name: str, *, grace_s: float = 1890.0) -> None:
        pod = self.pods.get(name)
        if pod is None or pod.gone or pod.deleted_at is not None:
            return
        pod.deleted_at, pod.grace_s = self.now, grace_s
        if pod.process is not None:
            pod.process.draining = True  # the kubelet's SIGTERM
        self.emit_pod(pod)

    # -- worker processes --------------------------------------------------------------------

    def start_process(self, pod: Pod) -> None:
        pod.process = Process(
            worker_id=self._next("AW_"),
            registers_at=self.now + self.rng.uniform(0.2, 1.0),
            unreadable=self.faults.unreadable,
            instance=f"{pod.name}#{pod.restarts}",
        )
        self.emit_pod(pod)

    def tick_pods(self) -> None:
        for pod in self.live_pods():
            was_ready = pod.ready(self.now - 0.5)
            if pod.process is None and pod.deleted_at is None and self.now >= pod.starts_at:
                self.start_process(pod)
            p = pod.process
            if p is not None and p.retired_until is not None and self.now >= p.retired_until:
                p.retired_until = None  # the runtime's own expiry: it serves again
            if pod.deleted_at is not None:
                if p is None or not p.jobs:
                    self._gone(pod)
                    continue
                if self.now - pod.deleted_at > pod.grace_s:
                    self.end_jobs(pod, "cut:killed at the end of its grace period")
                    self._gone(pod)
                    continue
            if pod.ready(self.now) != was_ready:
                self.emit_pod(pod)

    def _gone(self, pod: Pod) -> None:
        pod.gone = True
        self.emit_pod(pod, "DELETED")

    def end_jobs(self, pod: Pod, how: str) -> None:
        p = pod.process
        if p is None:
            return
        for job_id, room in list(p.jobs.items()):
            self.end_job(pod, job_id, room, how)

    def end_job(self, pod: Pod, job_id: str, room: str, how: str) -> None:
        p = pod.process
        if p is not None:
            p.jobs.pop(job_id, None)
        call = self.calls.get(room)
        if call is not None and call.job_id == job_id and not call.ended:
            call.ended = how
            if how.startswith("cut:"):
                self.violate(f"call in {room} on {pod.name} {how}")
        for agent in self.rooms.get(room, Room(room)).agents:
            if agent.job_id == job_id and agent.alive:
                agent.alive, agent.died_at = False, self.now

    def crash_worker(self, pod: Pod) -> None:
        """The container dies and restarts: its jobs die with it (their own process crashed)."""
        if pod.process is None or pod.deleted_at is not None:
            return
        if pod.process.jobs:
            self.saw("worker crashed with calls")
        self.end_jobs(pod, "crash")
        pod.restarts += 1
        pod.process = None
        pod.starts_at = self.now + 1.0
        self.emit_pod(pod)

    # -- LiveKit -----------------------------------------------------------------------------

    def place_call(self, duration_s: float) -> None:
        """A caller joins a new room created with the agent's dispatch."""
        room = self._next("room-")
        self.rooms[room] = Room(room, created=self.now)
        call = Call(room=room, started=self.now, ends_at=self.now + duration_s)
        self.calls[room] = call
        if self.guarded and self.livekit_rng.random() < self.impatient:
            call.patience_s = self.livekit_rng.uniform(1.0, 12.0)
        if self.replicas == 0:
            call.at_zero = True
            self.saw("a call arrived at zero")
        self._webhook(webhooks.EventType.PARTICIPANT_JOINED, room, f"caller-{room}")
        self.create_dispatch(self.rooms[room], first=True)

    def place_call_on(self, pod: Pod, duration_s: float) -> None:
        """A call LiveKit gave this very worker."""
        assert pod.process is not None
        room = self._next("room-")
        self.rooms[room] = Room(room, created=self.now, served=True)
        self.calls[room] = Call(room=room, started=self.now, ends_at=self.now + duration_s)
        job_id = self._next("AJ_")
        self._take(pod.process, job_id, room)
        identity = f"agent-{job_id}"
        record = self._record(self.rooms[room])
        record.jobs.append(Job(id=job_id, identity=identity, started=self.now))
        self.rooms[room].agents.append(Agent(identity=identity, pod=pod.name, job_id=job_id))
        call = self.calls[room]
        call.pod, call.job_id, call.served_at = pod.name, job_id, self.now

    def _take(self, process: Process, job_id: str, room: str) -> None:
        """A worker's job starts."""
        was_full = len(process.jobs) / SLOTS > LOAD_THRESHOLD
        process.jobs[job_id] = room
        if not was_full and len(process.jobs) / SLOTS > LOAD_THRESHOLD:
            self.full_at.append(self.now)

    def _record(self, room: Room, *, issuer: int = 0, metadata: str = "") -> Record:
        self._records += 1
        record = Record(
            id=f"AD_{self._records}",
            created=self.now,
            metadata=metadata or json.dumps({"call": room.name}),
            issuer=issuer,
        )
        room.records.append(record)
        return record

    def create_dispatch(
        self, room: Room, *, first: bool = False, issuer: int = 0, metadata: str = ""
    ) -> Record:
        """CreateDispatch (or a room created with the agent): a record, offered to the least
        loaded serving worker below its threshold; none, and the server drops it for good."""
        record = self._record(room, issuer=issuer, metadata=metadata)
        candidates = [
            p
            for p in self.live_pods()
            if p.process is not None
            and p.deleted_at is None
            and p.process.serving(self.now)
            and self.taken(p) / SLOTS <= LOAD_THRESHOLD
        ]
        if not candidates:
            self.saw("dispatch dropped: no worker" if not self.ready_pods() else "dispatch dropped")
            self._dropped(room, first=first)
            return record
        pod = min(candidates, key=lambda p: (self.taken(p), p.name))
        answered = self.faults.unanswered <= 0
        if not answered:
            self.faults.unanswered -= 1
        latency = self.livekit_rng.choice(LATENCIES_S) if answered else ANSWER_DEADLINE_S
        offer = Offer(
            room=room.name,
            record=record.id,
            pod=pod.name,
            job_id=self._next("AJ_"),
            at=self.now + latency,
            answered=answered,
        )
        self.offers.append(offer)
        if latency == 0.0:
            self._land(offer, first=first)
        return record

    def ready_pods(self) -> list[Pod]:
        return [p for p in self.live_pods() if p.deleted_at is None and p.ready(self.now)]

    def taken(self, pod: Pod) -> int:
        """A worker's jobs and the offers it has answered but not yet started."""
        jobs = len(pod.process.jobs) if pod.process is not None else 0
        return jobs + sum(1 for o in self.offers if o.pod == pod.name and o.answered)

    def _land(self, offer: Offer, *, first: bool = False) -> None:
        """An offer's answer arrives: the job starts and the agent joins, unless the record was
        deleted meanwhile (the server terminates the launch) or the worker no longer serves."""
        self.offers.remove(offer)
        room = self.rooms.get(offer.room)
        record = next((r for r in room.records if r.id == offer.record), None) if room else None
        if room is None or record is None:
            self.saw("a launch under way was terminated")
            return
        pod = self.pods.get(offer.pod)
        p = pod.process if pod is not None and pod.deleted_at is None else None
        if not offer.answered or p is None or not p.serving(self.now):
            self.saw("dispatch unanswered" if not offer.answered else "dispatch refused late")
            self._dropped(room, first=first)
            return
        assert pod is not None
        identity = f"agent-{offer.job_id}"
        self._take(p, offer.job_id, room.name)
        record.jobs.append(Job(id=offer.job_id, identity=identity, started=self.now))
        alive = [a.identity for a in room.agents if a.alive]
        room.agents.append(Agent(identity=identity, pod=pod.name, job_id=offer.job_id))
        if alive:
            self.violate(f"{room.name} got a second agent {identity} while {alive[0]} was there")
        room.served = True
        self._webhook(webhooks.EventType.PARTICIPANT_JOINED, room.name, identity, agent=True)
        if record.issuer and room.caller:
            self.rescues.append((room.name, record.issuer))
            self.saw("rescued")
        elif record.issuer:  # the guard may have seen the caller leave before this
            self.rescues_doubtful[record.issuer] = self.rescues_doubtful.get(record.issuer, 0) + 1
        call = self.calls.get(room.name)
        if call is not None and room.caller:
            call.pod, call.job_id, call.ended = pod.name, offer.job_id, ""
            if call.served_at is None:
                call.served_at = self.now
                if call.at_zero:
                    self.saw("a call that arrived at zero was served")

    def _dropped(self, room: Room, *, first: bool) -> None:
        """The server gave the dispatch to no worker. Without the guard, the caller of a new
        room hangs up at once (missed at the door)."""
        if not first:
            return
        self.missed += 1
        call = self.calls[room.name]
        if not self.guarded and call.served_at is None:
            call.ended = "missed"
            self.caller_leaves(room)

    def delete_dispatch(self, room: Room, record_id: str) -> None:
        """DeleteDispatch: the record goes, its jobs are terminated, a launch still under way
        with it."""
        record = next((r for r in room.records if r.id == record_id), None)
        if record is None:
            return
        room.records.remove(record)
        for job in record.jobs:
            for agent in room.agents:
                if agent.job_id == job.id and agent.alive:
                    self.violate(
                        f"the dispatch of the live agent {agent.identity} in {room.name} "
                        "was deleted"
                    )
                    self.end_job(self.pods[agent.pod], job.id, room.name, "cut:dispatch deleted")

    def caller_leaves(self, room: Room) -> None:
        if room.caller:
            room.caller, room.left_at = False, self.now
            self._webhook(webhooks.EventType.PARTICIPANT_LEFT, room.name, f"caller-{room.name}")

    def end_room(self, room: Room) -> None:
        """The room closes (its last caller left long enough ago, or the app deleted it): its
        agents are disconnected, its records and offers go."""
        for agent in room.agents:
            pod = self.pods.get(agent.pod)
            if agent.alive and pod is not None:
                self.end_job(pod, agent.job_id, room.name, "room ended")
        call = self.calls.get(room.name)
        if call is not None and not call.ended:
            call.ended = "room ended"
        self.offers = [o for o in self.offers if o.room != room.name]
        del self.rooms[room.name]
        self.saw("room ended")
        self._webhook(webhooks.EventType.ROOM_FINISHED, room.name)

    def end_a_room(self) -> None:
        """The app deletes a room whose caller still waits for an agent (or any room)."""
        waiting = [r for r in self.rooms.values() if r.caller and not r.served]
        chosen = waiting or list(self.rooms.values())
        if chosen:
            self.end_room(self.livekit_rng.choice(sorted(chosen, key=lambda r: r.name)))

    def _webhook(
        self, event: webhooks.EventType, room: str, identity: str | None = None, agent: bool = False
    ) -> None:
        participant = identity is not None
        self.webhooks.append(
            webhooks.WebhookEvent(
                event=event,
                api_key="key",
                room_name=room,
                room_sid=f"RM_{room}",
                participant_identity=identity,
                participant_is_agent=agent if participant else None,
                created_at_s=int(self.now),
            )
        )

    def tick_calls(self) -> None:
        """Offers' answers land, callers hang up, rooms close."""
        for offer in [o for o in self.offers if o.at <= self.now]:
            if offer in self.offers:
                self._land(offer)
        for call in list(self.calls.values()):
            room = self.rooms.get(call.room)
            if call.ended or room is None:
                continue
            if self.now >= call.ends_at:
                pod = self.pods.get(call.pod)
                if pod is not None and pod.process is not None and call.job_id in pod.process.jobs:
                    self.end_job(pod, call.job_id, call.room, "completed")
                else:
                    call.ended = "completed" if call.served_at is not None else "unserved"
                self.caller_leaves(room)
            elif call.served_at is None and self.now - call.started >= call.patience_s:
                call.ended = "left"
                self.saw("a caller left before an agent came")
                self.caller_leaves(room)
        for room in list(self.rooms.values()):
            room.agents = [a for a in room.agents if a.alive or self.now - a.died_at < GHOST_S]
            closing = room.left_at is not None and not room.caller
            if closing and self.now - (room.left_at or 0.0) >= ROOM_CLOSE_S:
                self.end_room(room)

    def crash_job(self) -> None:
        running = [c for c in self.calls.values() if not c.ended and c.job_id]
        if running:
            call = self.rng.choice(running)
            pod = self.pods[call.pod]
            self.end_job(pod, call.job_id, call.room, "crash")

    def waiting_rooms(
        self, reader: int, served: frozenset[str], unread: frozenset[str]
    ) -> tuple[int, int]:
        """The dispatches waiting for a worker now, as operator process `reader`'s guard must
        count them: (certain, uncertain). A room waits when it has a jobless record of ours (or
        the reader re-issued into it and its record is gone: a create that failed), no agent
        (a dead one LiveKit still lists counts) and no job younger than the guard's settle time,
        a caller (or one the reader never learnt of), and waited at least the guard's grace (or
        was re-issued) and less than maxWait. Uncertain: rooms the reader could not read, rooms
        an agent served before, rooms whose jobless record stood beside an agent, and rooms
        another operator process re-issued into (the guard's memory of them differs)."""
        certain = uncertain = 0
        for room in self.rooms.values():
            if room.name in unread:  # the guard's memory of it stands
                uncertain += 1
                continue
            jobless = any(not r.jobs for r in room.records)
            gone = not room.records and reader in room.reissued_by and not room.served
            if not jobless and not gone:
                continue
            recent = any(
                self.now - job.started < guard.SETTLE_S for r in room.records for job in r.jobs
            )
            if room.name in served or room.agents or recent:
                room.murky = room.murky or jobless
                continue
            if not room.caller and reader in room.known:
                continue
            call = self.calls.get(room.name)
            age = self.now - (call.started if call is not None else room.created)
            reissued = reader in room.reissued_by
            counted = age <= self.max_wait_s and (age >= guard.GRACE_S or reissued)
            doubt = room.served or room.murky
            if doubt or room.reissued_by - {reader}:
                uncertain += 1
            elif counted:
                certain += 1
        return certain, uncertain

    # -- the workers' /worker ------------------------------------------------------------------

    def worker_document(self, p: Process) -> dict[str, Any]:
        """The /worker document a (readable) worker process answers now, in this runtime's
        format: its generation moves on when its decision view changed since its last document
        (`http_api.Changes.observe`), not with its load."""
        registered = p.registered(self.now)
        load = len(p.jobs) / SLOTS
        state = (
            "draining"
            if p.draining
            else "retired"
            if p.retired(self.now)
            else "starting"
            if not registered
            else "full"
            if load > LOAD_THRESHOLD
            else "available"
        )
        document: dict[str, Any] = {
            "agent_name": "sim",
            "worker_type": "JT_ROOM",
            "active_jobs": len(p.jobs),
            "worker_load": load,
            "worker_id": p.worker_id,
            "state": state,
            "draining": p.draining,
            "load_threshold": LOAD_THRESHOLD,
            "jobs": [{"id": job, "room": room} for job, room in p.jobs.items()],
            "retired": p.retired(self.now),
        }
        view = decision_view(document)
        if view != p.view:
            p.view, p.generation = view, p.generation + 1
        return document | {"generation": p.generation, "instance": p.instance}

    # -- the blindness promise ---------------------------------------------------------------

    def note_blindness(self) -> None:
        """Blind: every ready worker's /worker is unreadable: the size holds, but for a worker
        for each dispatch seen without a job (with the guard)."""
        ready = [p for p in self.live_pods() if p.deleted_at is None and p.ready(self.now)]
        blind = bool(ready) and all(
            p.process is not None and (p.process.unreadable or p.process.stalled_until > self.now)
            for p in ready
        )
        if not blind:
            self.blind_since_replicas = None
            self.jobless_while_blind.clear()
            return
        if self.blind_since_replicas is None:
            self.saw("blind")
            self.blind_since_replicas = self.replicas
        if self.guarded:
            self.jobless_while_blind |= {
                r.name for r in self.rooms.values() if any(not d.jobs for d in r.records)
            }


# -- the operator's view of the world: its API server, workers and LiveKit --------------------


class SimKube(kube.Kube):
    """The API server, as the operator's `kube.Kube` sees it. A killed operator's process
    sends nothing more: every call after the kill fails."""

    def __init__(self, world: World) -> None:  # no connection: nothing leaves the process
        self._world = world

    def _alive(self) -> None:
        if self._world.operator_killed:
            raise kube.KubeError(503, "Killed", "the operator process is dead")

    async def aclose(self) -> None:
        return None

    async def get(self, path: str) -> dict[str, Any] | None:
        self._alive()
        w = self._world
        if path == kube.agentworker_path(NAMESPACE, NAME):
            return json.loads(json.dumps(w.agentworker))  # type: ignore[no-any-return]
        if path == kube.path_of("apps/v1", "Deployment", NAMESPACE, NAME):
            return w.deployment() if w.deployment_manifest is not None else None
        if path.startswith(kube.path_of("v1", "Secret", NAMESPACE, "")):
            if w.faults.credentials_forbidden:
                raise kube.KubeError(403, "Forbidden", "secrets is forbidden")
            return w.secrets.get(path.rsplit("/", 1)[1])
        raise AssertionError(f"the simulation has no GET {path}")

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        w = self._world
        if manifest["kind"] == "Deployment":
            if w.kill_pending:  # once: the restarted operator lives on
                w.kill_pending, w.operator_killed = False, True
                w.killed_for_s, w.faults.kill_after_retire = w.faults.kill_after_retire, 0.0
                raise kube.KubeError(503, "ServiceUnavailable", "the operator died here")
            if w.faults.apply_error:
                w.refused_this_round = True
                w.saw("apply refused")
                raise kube.KubeError(w.faults.apply_error, "Sim", "apply refused")
            w.apply_deployment(manifest)
        return dict(manifest)

    async def patch_status(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        self._alive()
        if self._world.faults.status_error:
            raise kube.KubeError(self._world.faults.status_error, "Sim", "status refused")
        status = self._world.agentworker.setdefault("status", {})
        _merge(status, json.loads(json.dumps(patch)))
        return json.loads(json.dumps(self._world.agentworker))  # type: ignore[no-any-return]

    async def annotate(self, path: str, annotations: Mapping[str, str | None]) -> None:
        self._alive()
        assert path == kube.agentworker_path(NAMESPACE, NAME), path
        meta = self._world.agentworker["metadata"]
        _merge(meta.setdefault("annotations", {}), annotations)
        for store in self._world.stores:
            store.put_agentworker("MODIFIED", self._world.agentworker)

    async def list_items(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        assert path == kube.path_of("v1", "Pod", NAMESPACE), path
        self._world.saw("pods listed")
        return [pod.manifest(self._world.now) for pod in self._world.live_pods()]

    async def patch_annotations(
        self, namespace: str, pod: str, annotations: Mapping[str, str | None]
    ) -> None:
        self._alive()
        w = self._world
        marks_victim = annotations.get(scaledown.DELETION_COST) == scaledown.VICTIM_COST
        if w.faults.victim_mark_error and marks_victim:
            w.refused_this_round = True
            w.saw("a victim's mark refused")
            raise kube.KubeError(500, "Sim", "annotation refused")
        found = self._world.pods.get(pod)
        if found is None or found.gone:
            raise kube.KubeError(404, "NotFound", f"pods {pod} not found")
        for key, value in annotations.items():
            if value is None:
                found.annotations.pop(key, None)
            else:
                found.annotations[key] = value
        self._world.emit_pod(found)

    async def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        self._alive()
        name = manifest["metadata"]["name"]
        if name in self._world.secrets:
            raise kube.Conflict(409, "AlreadyExists", f"secrets {name} already exists")
        self._world.secrets[name] = json.loads(json.dumps(manifest))
        return dict(manifest)

    async def patch_owned_secret(self, manifest: Mapping[str, Any], owner_uid: str) -> bool:
        self._alive()
        stored = self._world.secrets[manifest["metadata"]["name"]]
        owners = stored.get("metadata", {}).get("ownerReferences") or [{}]
        if owners[0].get("uid") != owner_uid:
            return False
        self._world.secrets[manifest["metadata"]["name"]] = json.loads(json.dumps(manifest))
        return True

    async def post_event(
        self, involved: Mapping[str, Any], *, type: str, reason: str, message: str
    ) -> None:
        self._alive()
        self._world.events.append((reason, message))


def _merge(target: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """RFC 7386 JSON merge patch, in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


class SimScraper(scrapers.Scraper):
    """The workers' HTTP endpoints: /worker, POST and DELETE /retire."""

    def __init__(self, world: World) -> None:
        super().__init__(port=builders.HTTP_PORT)
        self._world = world

    async def aclose(self) -> None:
        return None

    async def fetch(self, ip: str) -> tuple[object, str]:
        w = self._world
        pod = w.pod_by_ip(ip)
        if pod is None or pod.process is None:
            return None, "ClientConnectorError"
        p = pod.process
        if p.stalled_until > w.now:
            return None, "no answer within 2s"
        if p.unreadable:
            return None, "HTTP 404"
        return w.worker_document(p), ""

    async def retire(self, ip: str, token: str) -> scrapers.RetireAnswer:
        w = self._world
        if w.operator_killed:
            return scrapers.RetireAnswer.FAILED
        pod = w.pod_by_ip(ip)
        if pod is None or pod.process is None or token != w.token:
            return scrapers.RetireAnswer.FAILED
        p = pod.process
        if p.stalled_until > w.now:
            return scrapers.RetireAnswer.FAILED
        if w.faults.busy_race and p.serving(w.now):  # a call landed as the operator asked
            w.faults.busy_race = False
            w.saw("a call landed as the worker was asked to retire")
            w.place_call_on(pod, 30.0)
        if p.jobs:
            w.saw("retire refused: busy")
            return scrapers.RetireAnswer.BUSY
        if not p.draining:
            if not p.retired(w.now):
                p.retired_round = w.round
                w.retired_this_round += 1
                w.saw("retired")
            p.retired_until = w.now + RETIRE_TIMEOUT_S
            w.emit_pod(pod)
        if w.faults.kill_after_retire:
            w.kill_pending = True
        return scrapers.RetireAnswer.ACCEPTED

    async def unretire(self, ip: str, token: str) -> bool:
        w = self._world
        if w.operator_killed:
            return False  # a dead process sends nothing
        pod = w.pod_by_ip(ip)
        if pod is None or pod.process is None or token != w.token:
            return False
        p = pod.process
        if p.stalled_until > w.now or p.draining:
            return False
        if p.retired(w.now):
            w.saw("retirement withdrawn")
        p.retired_until = None
        w.emit_pod(pod)
        return True


class SimRooms(rooms.Rooms):
    """LiveKit's room and dispatch API, as call recovery and the dispatch guard use it, for
    operator process `issuer`."""

    def __init__(self, world: World, *, issuer: int = 1) -> None:
        self._world = world
        self._issuer = issuer

    async def aclose(self) -> None:
        return None

    def _fails(self, what: str) -> None:
        w = self._world
        if w.faults.livekit_down or (
            w.faults.livekit_flaky and w.livekit_rng.random() < w.faults.livekit_flaky
        ):
            w.saw("a LiveKit request failed")
            raise rooms.RoomsError(f"{what}: ClientConnectorError")

    async def participants(self, room: str, *, gone: str = "") -> tuple[int, int]:
        if self._world.faults.livekit_down:
            raise rooms.RoomsError(f"ListParticipants {room}: ClientConnectorError")
        found = self._world.rooms.get(room)
        if found is None:
            return 0, 0
        agents = sum(1 for a in found.agents if a.identity != gone)
        return int(found.caller), agents

    async def remove(self, room: str, identity: str) -> None:
        w = self._world
        for agent in w.rooms.get(room, Room(room)).agents:
            if agent.identity == identity and agent.alive:
                w.violate(f"the live agent {identity} was removed from {room}")
                pod = w.pods[agent.pod]
                w.end_job(pod, agent.job_id, room, "cut:its agent was removed")
        found = w.rooms.get(room)
        if found is not None:
            found.agents = [a for a in found.agents if a.identity != identity]

    async def dispatch_again(self, room: str, agent_name: str) -> str:
        w = self._world
        found = w.rooms.get(room)
        if found is None:
            raise rooms.RoomsError(f"dispatch into {room}: not_found")
        alive = [a.identity for a in found.agents if a.alive]
        if alive:
            w.violate(f"{room} got a second agent while {alive[0]} was alive")
        w.saw("redispatched")
        metadata = found.records[0].metadata if found.records else ""
        return w.create_dispatch(found, metadata=metadata).id

    async def guard_rooms(
        self, agent_name: str, *, skip: Collection[str] = ()
    ) -> tuple[list[guard.Room], frozenset[str]]:
        """ListRooms, then each room's ListDispatch, and its ListParticipants where a dispatch
        has no job; a room whose reads failed is unread."""
        w = self._world
        self._fails("ListRooms")
        listed: list[guard.Room] = []
        unread: set[str] = set()
        for room in w.rooms.values():
            if room.name in skip:
                listed.append(guard.Room(name=room.name, callers=int(room.caller)))
                continue
            try:
                self._fails(f"ListDispatch {room.name}")
                ours = tuple(self._dispatch(record, agent_name) for record in room.records)
                if all(d.jobs for d in ours):
                    listed.append(
                        guard.Room(name=room.name, callers=int(room.caller), dispatches=ours)
                    )
                    continue
                self._fails(f"ListParticipants {room.name}")
            except rooms.RoomsError:
                unread.add(room.name)
                continue
            if room.caller:
                room.known.add(self._issuer)
            agents = tuple(
                guard.Agent(identity=a.identity, agent_name=AGENT_NAME) for a in room.agents
            )
            listed.append(
                guard.Room(name=room.name, callers=int(room.caller), agents=agents, dispatches=ours)
            )
        w.saw("the guard read LiveKit")
        certain, uncertain = w.waiting_rooms(self._issuer, frozenset(skip), frozenset(unread))
        read = [
            (room, by)
            for room, by in w.rescues
            if by == self._issuer and room in w.rooms and room not in unread
        ]
        w.rescues = [r for r in w.rescues if r not in read]
        due = w.rescues_read[self._issuer] = w.rescues_read.get(self._issuer, 0) + len(read)
        w.reads.append(
            Read(
                round=w.round,
                reader=self._issuer,
                unread=frozenset(unread),
                waiting=certain,
                uncertain=uncertain,
                rescued=due,
            )
        )
        return listed, frozenset(unread)

    def _dispatch(self, record: Record, agent_name: str) -> guard.Dispatch:
        return guard.Dispatch(
            id=record.id,
            agent_name=AGENT_NAME,
            metadata=record.metadata,
            created_at_s=self._wall(record.created),
            jobs=tuple(
                guard.Job(
                    id=job.id,
                    participant_identity=job.identity,
                    started_at_s=self._wall(job.started),
                )
                for job in record.jobs
            ),
        )

    @staticmethod
    def _wall(at: float) -> float:
        """A simulated instant as the server's wall clock stamps it."""
        return EPOCH_S + at

    async def reissue(self, order: guard.Reissue) -> str:
        """DeleteDispatch each jobless record, then, if the room is still listed, CreateDispatch
        with the same metadata."""
        w = self._world
        room = w.rooms.get(order.room)
        if room is not None:
            room.reissued_by.add(self._issuer)
        for record_id in order.delete_ids:
            self._fails(f"DeleteDispatch {order.room}")
            if room is not None:
                record = next((r for r in room.records if r.id == record_id), None)
                if record is not None and record.jobs:
                    w.violate(f"the guard deleted {record_id} in {order.room}, which had a job")
                w.delete_dispatch(room, record_id)
        self._fails("ListRooms")
        if room is None:
            w.saw("a re-issue found its room ended")
            return ""
        self._fails(f"CreateDispatch {order.room}")
        if order.dispatch.metadata != json.dumps({"call": room.name}):
            w.violate(
                f"the re-issue into {room.name} lost its metadata: {order.dispatch.metadata!r}"
            )
        if not room.caller and self._issuer in room.known:
            w.violate(f"the guard dispatched into {room.name}, whose caller had left")
        w.saw("re-issued")
        return w.create_dispatch(room, issuer=self._issuer, metadata=order.dispatch.metadata).id


class SimProbe:
    """The LiveKit reachability probe: the simulated server always answers."""

    async def error(self, url: str) -> str | None:
        return None

    async def aclose(self) -> None:
        return None
