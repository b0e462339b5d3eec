"""The operator's one periodic loop: observe every AgentWorker's workers, scale, reconcile.

This module owns the sync period's work, in the order gather, decide, act: read each worker
pod's /worker (`scraper`), count the fleet (`observation`), keep the calls' protection on the
pods (`scaledown.protection_patch`), ask the autoscaler (`autoscaler.decide`; with autoscaling
off or paused nothing decides, and the reconcile keeps the size, `sizing.hold`), and, for a
scale-down, run the victim handshake (POST /retire, then the lowest pod-deletion-cost, and only
then fewer replicas), then hand over to the reconcile, which applies the Deployment and writes
the status. It keeps what must outlive one round in memory: the autoscaler's history, the
replicas it wants, the latest observation, and the estimates a miss-rate headroom is derived
from (`estimates`: fed each round, told of each applied scale-up). One process-level loop
instead of kopf timers or daemons: those put a finalizer on every AgentWorker, and deleting one
(or its namespace) would hang while no operator runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentworker_operator import (
    autoscaler,
    builders,
    guard,
    headroom,
    kube,
    logs,
    metrics,
    observation,
    recovery,
    redact,
    rooms,
    scaledown,
    sharding,
    sizing,
    webhooks,
)
from agentworker_operator import (
    companion as companions,
)
from agentworker_operator import estimates as estimators
from agentworker_operator import scraper as scrapers
from agentworker_operator import spec as specs
from agentworker_operator import watcher as watchers
from agentworker_operator.settings import SyncSettings
from agentworker_operator.store import Key, Store

logger = logging.getLogger(__name__)

Reconcile = Callable[[Key, str, bool], Awaitable[object]]
"""reconcile(key, trigger, full): apply (when full) and publish the status of one AgentWorker."""
ParsedSpec = specs.AgentWorkerSpec | specs.InvalidSpecError
WatchFactory = Callable[[Callable[[Key], None]], watchers.Watch[Key]]
"""watch(on_change): the watch of the workers that tells the loop which fleet changed."""


def long_polls(on_change: Callable[[Key], None]) -> watchers.Watch[Key]:
    """The real watch: a long poll of each worker pod's /worker (`watcher.WorkerWatch`)."""
    return watchers.WorkerWatch[Key](port=builders.HTTP_PORT, on_change=on_change)


RoomsClient = Callable[[str, str, str], rooms.Rooms]
"""rooms_client(url, api_key, api_secret): LiveKit's room and dispatch API for call recovery
and the dispatch guard."""
GUARD_PERIOD_S = 1.0
"""The sync period of a fleet while dispatches wait for a worker (instead of the sync period):
a new worker takes its first held dispatch within a second of registering."""
WEBHOOK_GAP_S = 0.5
"""The shortest time between two rounds that webhooks start early."""
WEBHOOK_LOOKS_S = (1.0, guard.GRACE_S + 0.1)
"""After a webhook's round, the guard looks again: once a dispatch made just after the caller
joined exists (an application's CreateDispatch), and once its grace is over."""
CALLER_HINT_S = 3600.0
"""How long a webhook's word that a room had a caller is kept."""
CHANGE_GAP_S = 0.1
"""The shortest time between two rounds that workers' changes start early (a fleet whose calls
come and go fast is then synced 10 times a second at most, not once per call; the reaction
bench measured a median of 0.5 s from a worker turning full to the decision with 0.25 s, most
of it this gap after the rounds the calls before had started)."""


@dataclass(slots=True)
class Fleet:
    """What the operator remembers about one AgentWorker between sync rounds."""

    history: autoscaler.History = field(default_factory=autoscaler.History)
    desired: int | None = None
    """Replicas the autoscaler wants; None until its first decision (then status is used)."""
    decision: autoscaler.ScaleDecision | None = None
    last_scale_time: str | None = None
    workers: tuple[observation.Worker, ...] = ()
    summary: observation.FleetSummary | None = None
    applied: int | None = None
    """Replicas the last whole reconcile applied: while it differs from `desired` (a failed
    apply), every round reconciles whole."""
    applied_as: sizing.Applied | None = None
    """The replicas this process last applied to the Deployment and the spec.replicas then
    (what the Deployment records, without the watch's lag): a fleet the autoscaler does not
    size keeps them until spec.replicas changes (`sizing.hold`)."""
    template: tuple[tuple[object, ...], str] = ((None, ""), "")
    """((generation, control token), the pod template's hash) of the latest round."""
    written: dict[str, dict[str, str | None]] = field(default_factory=dict)
    """The protection annotations this process last wrote on each pod (the watch may lag)."""
    victims: frozenset[str] = frozenset()
    """Workers this round's scale-down chose (they stay retired)."""
    control_token: str = ""
    last_full_reconcile: float = 0.0
    reported: set[str] = field(default_factory=set)
    """Pods that were seen registered: when they go silent they are unknown, not starting."""
    unseen_pods: int = 0
    """Pods the Deployment made that the pod watch has not shown, as of this round."""
    disagreeing_since: float | None = None
    """Since when (the syncer's clock) the pod watch and the Deployment have disagreed on how many
    pods run; None while they agree."""
    sightings: dict[str, recovery.Sighting] = field(default_factory=dict)
    """What each worker serving rooms last said (call recovery judges deaths from it)."""
    suspects: dict[str, tuple[recovery.LostRoom, float]] = field(default_factory=dict)
    """Rooms whose worker died without draining, under watch since (monotonic s)."""
    recovered: dict[str, float] = field(default_factory=dict)
    """Rooms already dispatched again (never twice), and when."""
    livekit: rooms.Rooms | None = None
    """The LiveKit client of call recovery (made when recovery is on)."""
    recovery_refused: bool = False
    """The API server refused the credentials Secret to call recovery (said once)."""
    fallback: companions.Fallback | None = None
    """Why the companion cannot work on this fleet's image, found by this process (the status
    keeps it across restarts)."""
    held: dict[str, guard.Held] = field(default_factory=dict)
    """The dispatch guard's memory: rooms whose dispatch no worker took."""
    causes: dict[str, str] = field(default_factory=dict)
    """Why each held room's dispatch found no worker, as the fleet stood when first seen."""
    pending_dispatches: int = 0
    """Dispatches the guard holds for want of a worker (the status's pendingDispatches)."""
    guard_plan: guard.Plan | None = None
    """This round's plan of the guard, carried out after the scaling."""
    last_busy_s: float | None = None
    """When a worker last held a call or a dispatch last waited (monotonic s)."""
    estimates: estimators.Estimates = field(default_factory=estimators.Estimates)
    """The arrival rate, reaction time and call lengths a miss-rate headroom is derived from
    (kept in memory only: a new operator process starts them again)."""
    guard_looked_at: float = float("-inf")
    """When the dispatch guard last read LiveKit (monotonic s)."""
    answers: dict[str, tuple[tuple[object, str], float]] = field(default_factory=dict)
    """By pod IP: each worker's last /worker answer (document, error) and when it was read or
    heard (monotonic s); a round a worker's change started reuses them."""
    warm_headroom: headroom.WarmHeadroom | None = None
    """This round's warm headroom from the miss-rate target (the status's warmHeadroom)."""


def _now_text() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Read:
    """Every worker's answer to a plain GET /worker, read before a round (`Syncer._read_workers`):
    by pod IP, (document, error) as `Scraper.fetch` gives it."""

    at: float
    """When the reading began (the syncer's clock): a long poll's answer after it is newer."""
    answers: Mapping[str, tuple[object, str]]
    took_s: float


class Syncer:
    """Runs the sync loop; `fleets` and `locks` are shared with the reconcile."""

    def __init__(
        self,
        *,
        client: kube.Kube,
        store: Store,
        config: SyncSettings,
        reconcile: Reconcile,
        locks: dict[Key, asyncio.Lock],
        control_key: bytes,
        operator_id: str = "",
        scraper: scrapers.Scraper | None = None,
        rooms_client: RoomsClient = rooms.Rooms,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        companion_image: str = builders.DEFAULT_COMPANION_IMAGE,
        watch: WatchFactory | None = None,
        shard: sharding.Shard = sharding.WHOLE,
    ) -> None:
        """`operator_id` names this installation (builders.OPERATOR_ANNOTATION); `shard` is
        the part of its AgentWorkers this process handles (`sharding`: all by default). With a
        `watch` (`watcher.WorkerWatch`: `long_polls`), each worker's /worker is long-polled
        and a fleet whose worker changed is synced at once, from what the polls heard.
        `scraper`,
        `rooms_client`, `clock` and `wall_clock` are the workers' HTTP, LiveKit's API, the
        monotonic clock and the wall clock (LiveKit's timestamps are compared with it): the
        real ones in production, a simulated world's in the unit tier."""
        self.operator_id = operator_id
        self.shard = shard
        self.companion_image = companion_image
        self.refused_claims: set[Key] = set()
        """AgentWorkers another installation manages, already said in an Event."""
        self._kube = client
        self._control_key = control_key
        self._store = store
        self._config = config
        self._reconcile = reconcile
        self._locks = locks
        self._scraper = scraper or scrapers.Scraper(
            port=builders.HTTP_PORT,
            timeout_s=config.scrape_timeout_s,
            concurrency=config.scrape_concurrency,
        )
        self._rooms_client = rooms_client
        self.clock = clock
        self._wall_clock = wall_clock
        self.fleets: dict[Key, Fleet] = {}
        self._secrets: dict[str, str] = {}
        """API key -> secret of the credentials the guard and recovery read: webhooks signed
        with one of them are LiveKit's."""
        self._callers_seen: dict[str, float] = {}
        """Rooms a webhook said a caller joined or left (monotonic s): the guard then knows an
        empty room lost its caller, rather than waiting for an outbound call."""
        self._wake = asyncio.Event()
        self._woken = False
        self._watch = watch(self.on_worker_change) if watch is not None else None
        self._turns: dict[Key, asyncio.Lock] = {}
        """One round of a fleet at a time (`_turn`): a change's round may start while a
        periodic round reads the workers."""
        self._changed: dict[Key, float] = {}
        """Fleets a worker of which changed since their last round, and when it first did."""
        self._parsed: dict[Key, tuple[tuple[object, object], ParsedSpec]] = {}
        self._last_valid: dict[Key, specs.AgentWorkerSpec] = {}
        """The latest spec of each AgentWorker that parsed: while an edit is invalid, the
        workers it runs are still observed and their calls protected (nothing scales)."""

    async def aclose(self) -> None:
        await self._scraper.aclose()
        if self._watch is not None:
            await self._watch.aclose()
        for fleet in self.fleets.values():
            if fleet.livekit is not None:
                await fleet.livekit.aclose()

    def parsed(self, body: Mapping[str, Any]) -> specs.AgentWorkerSpec:
        """`spec.parse_spec` of an AgentWorker, once per generation: the sync loop and the
        reconcile read it every round, and a spec only changes with a new generation."""
        meta = body.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        stamp = (meta.get("uid"), meta.get("generation"))
        cached = self._parsed.get(key)
        if cached is None or cached[0] != stamp or stamp[1] is None:
            try:
                cached = (stamp, specs.parse_spec(body.get("spec")))
            except specs.InvalidSpecError as error:
                cached = (stamp, error)
            self._parsed[key] = cached
        if isinstance(cached[1], specs.InvalidSpecError):
            refused = cached[1]
            raise specs.InvalidSpecError(refused.path, refused.value, refused.expected)
        self._last_valid[key] = cached[1]
        return cached[1]

    def last_valid(self, key: Key) -> specs.AgentWorkerSpec | None:
        """The latest spec of the AgentWorker that parsed, if any did in this process."""
        return self._last_valid.get(key)

    def hold(
        self, key: Key, spec: specs.AgentWorkerSpec, deployment: Mapping[str, Any] | None
    ) -> sizing.Hold:
        """`sizing.hold`: the size of a fleet the autoscaler does not size, from what this
        process applied last or, before its first apply (a restart, a new leader), from what
        the Deployment records."""
        fleet = self.fleets.get(key)
        applied = fleet.applied_as if fleet is not None else None
        return sizing.hold(spec, applied or sizing.applied_of(deployment))

    def _valid(self, body: Mapping[str, Any]) -> bool:
        try:
            self.parsed(body)
        except specs.InvalidSpecError:
            return False
        return True

    def fallback(self, key: Key, body: Mapping[str, Any]) -> companions.Fallback | None:
        """Why the companion cannot work on the fleet's image: found by this process, or
        recorded in the status by an earlier one."""
        fleet = self.fleets.get(key)
        found = fleet.fallback if fleet is not None else None
        return found or companions.recorded_fallback(body.get("status") or {})

    def injection(
        self, key: Key, body: Mapping[str, Any], spec: specs.AgentWorkerSpec
    ) -> builders.Injection:
        """How the fleet's pods get the worker contract: the spec, the companion image, and
        the fallback. A fallback found with another image or mode than the spec's is forgotten,
        so that the companion is tried again should the spec come back to them."""
        fallback = self.fallback(key, body)
        injection = builders.injection_for(spec, image=self.companion_image, fallback=fallback)
        fleet = self.fleets.get(key)
        if fleet is not None and injection.plan is not companions.Plan.FALLBACK:
            fleet.fallback = None
        return injection

    def _template_hash(
        self,
        body: Mapping[str, Any],
        owner: builders.Owner,
        spec: specs.AgentWorkerSpec,
        token: str,
        injection: builders.Injection,
    ) -> str:
        """The pod template's version, built once per generation, control token and plan."""
        fleet = self.fleets[(owner.namespace, owner.name)]
        stamp = ((body.get("metadata") or {}).get("generation"), token, injection.plan)
        if fleet.template[0] != stamp or stamp[0] is None:
            built = builders.template_hash(owner, spec, control_token=token, injection=injection)
            fleet.template = (stamp, built)
        return fleet.template[1]

    def _companion_verdict(
        self, key: Key, spec: specs.AgentWorkerSpec, fleet: Fleet, template: str
    ) -> bool:
        """Whether this round found that the companion cannot work (a fallback) in the pods
        told to load it."""
        pods = {str(p["metadata"]["name"]): p for p in self._store.pods(key)}
        seen = [
            companions.Seen(
                pod=pods.get(w.pod.name, {}),
                answered=w.report is not None,
                companion=w.report.companion if w.report else "",
                sdk_version=w.report.sdk_version if w.report else "",
                project_type=w.report.project_type if w.report else "",
                refused=w.error if w.error.startswith("HTTP ") else "",
            )
            for w in fleet.workers
            if w.pod.template_hash == template and not w.pod.terminating
        ]
        found = companions.verdict(spec.image, spec.companion_mode, seen)
        if found is None:
            return False
        fleet.fallback = found
        logger.warning(
            "the companion cannot work on this image; the fleet falls back to running without it",
            extra={**logs.about(key), "reason": found.reason, "detail": found.message},
        )
        return True

    def lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def run(self) -> None:
        """Sync every AgentWorker each period, forever (cancel to stop). Between those rounds,
        the fleets with dispatches waiting are synced every GUARD_PERIOD_S, a webhook starts a
        round of the guarded fleets early, and a worker's change one of its fleet. A periodic
        round runs beside them: while it reads the workers (seconds, with a worker that does
        not answer) a change is still decided at once; one round of a fleet at a time."""
        # the first periodic round waits a period: kopf's watches list the AgentWorkers and pods
        # first; the rounds a change starts may come sooner (the change was seen on them)
        interval_s = self._config.interval_s
        next_full = time.monotonic() + interval_s
        periodic: asyncio.Task[None] | None = None
        try:
            while True:
                started = time.monotonic()
                # a wake from here on (a webhook or a change while the round below runs) is
                # kept for the wait after it: cleared after the round, a webhook was lost
                self._wake.clear()
                if periodic is not None and periodic.done():
                    periodic.result()  # a failure of the loop itself (each fleet's is logged)
                    periodic = None
                if periodic is None and started >= next_full:
                    # a webhook's round waits for the next turn of the loop, WEBHOOK_GAP_S on
                    periodic = asyncio.create_task(self._periodic_round(), name="sync-periodic")
                    periodic.add_done_callback(lambda _: self._wake.set())
                    next_full = started + interval_s
                else:
                    woken, self._woken = self._woken, False
                    await self.sync_all(self._urgent(woken=woken))
                now = time.monotonic()
                # the next periodic round once this one is over (then at once, if it ran long):
                # its end wakes the loop
                running = periodic is not None and not periodic.done()
                due = None if running else next_full
                if self._changed:  # a worker changed during the round: its fleet's turn is now
                    due = min(due or math.inf, started + CHANGE_GAP_S)
                elif self._woken:
                    due = min(due or math.inf, started + WEBHOOK_GAP_S)
                elif self._urgent(woken=False):
                    due = min(due or math.inf, started + GUARD_PERIOD_S)
                with contextlib.suppress(TimeoutError):
                    timeout = None if due is None else max(0.0, due - now)
                    await asyncio.wait_for(self._wake.wait(), timeout)
                    gap = WEBHOOK_GAP_S if self._woken else CHANGE_GAP_S
                    await asyncio.sleep(max(0.0, started + gap - time.monotonic()))
        finally:
            if periodic is not None:
                periodic.cancel()
                await asyncio.gather(periodic, return_exceptions=True)

    async def _periodic_round(self) -> None:
        started = time.monotonic()
        await self.sync_all()
        metrics.SYNC_DURATION.observe(time.monotonic() - started)

    def _urgent(self, *, woken: bool) -> list[Key]:
        """The fleets a round between the periodic ones is for: those with dispatches waiting,
        those a worker of which changed, and, after a webhook, every guarded one."""
        keys = []
        for key, fleet in self.fleets.items():
            spec = self._last_valid.get(key)
            guarded = spec is not None and spec.dispatch_guard.enabled
            if (guarded and (_held_waiting(fleet) or woken)) or key in self._changed:
                keys.append(key)
        return keys + [key for key in self._changed if key not in self.fleets]

    def on_pods_changed(self, key: Key) -> None:
        """The pod watch saw a pod of the fleet change: it is alive (a disagreement with the
        Deployment is a lag, not a stale watch: while a thousand pods start, the Deployment's
        status trails them), and a new worker's address is followed now (its registration is
        news), not at the next round."""
        fleet = self.fleets.get(key)
        if fleet is not None:
            fleet.disagreeing_since = None
        if self._watch is not None and self._ours(key):
            pods = self._store.pods(key)
            self._watch.follow(key, [str((p.get("status") or {}).get("podIP") or "") for p in pods])

    def on_worker_change(self, key: Key) -> None:
        """A worker of the fleet `key` said something new (`watcher`): sync it now."""
        if self._ours(key):
            self._changed.setdefault(key, self.clock())
            self._wake.set()

    def _ours(self, key: Key) -> bool:
        """Whether this process syncs the AgentWorker: its shard's, known, and claimed by this
        installation."""
        if not self.shard.owns(key):
            return False
        body = self._store.agentworker(key)
        annotations = ((body or {}).get("metadata") or {}).get("annotations") or {}
        return body is not None and (
            builders.claim(annotations, self.operator_id) is builders.Claim.OURS
        )

    def webhook_secret(self, api_key: str) -> str | None:
        """The secret of an API key the guard or recovery uses (webhooks are verified with it)."""
        return self._secrets.get(api_key)

    def on_webhook(self, event: webhooks.WebhookEvent) -> None:
        """A verified LiveKit webhook: a room started or a participant came or went. The guard
        looks now, and again at WEBHOOK_LOOKS_S, instead of at the next round."""
        now = self.clock()
        if event.participant_identity is not None and not event.participant_is_agent:
            self._callers_seen[event.room_name] = now
        if event.event is webhooks.EventType.ROOM_FINISHED:
            self._callers_seen.pop(event.room_name, None)
        if len(self._callers_seen) > 10_000:  # bounded: the oldest hints go first
            cutoff = now - CALLER_HINT_S
            self._callers_seen = {r: t for r, t in self._callers_seen.items() if t > cutoff}
        self._woken = True
        self._wake.set()
        loop = asyncio.get_running_loop()
        for delay_s in WEBHOOK_LOOKS_S:
            loop.call_later(delay_s, self._wake_again)

    def _wake_again(self) -> None:
        self._woken = True
        self._wake.set()

    async def sync_all(self, only: Sequence[Key] | None = None) -> None:
        keys = [key for key in self._store.agentworkers() if self.shard.owns(key)]
        for gone in set(self._changed) - set(keys):
            del self._changed[gone]
        for gone in set(self.fleets) - set(keys):
            self.fleets.pop(gone, None)
            if self._watch is not None:
                self._watch.forget(gone)
            self._parsed.pop(gone, None)
            self._last_valid.pop(gone, None)
            metrics.forget(*gone)
        if only is not None:
            keys = [key for key in keys if key in set(only)]
        heard = only is not None  # a periodic round reads every worker (the load moves alone)
        results = await asyncio.gather(
            *(self.sync(key, heard=heard) for key in keys), return_exceptions=True
        )
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BaseException):
                logger.error(
                    "sync failed",
                    exc_info=result,
                    extra=logs.about(key),
                )

    async def sync(self, key: Key, *, heard: bool = False) -> None:
        """One round for one AgentWorker (`_round`). A round that reads every worker reads them
        first, outside the fleet's turn: a change heard meanwhile is decided at once, not
        after the slowest worker's answer (a worker that never answers takes the whole scrape
        timeout)."""
        changed_at = self._changed.pop(key, None)
        heard = heard and changed_at is not None
        read = None if heard else await self._read_workers(key)
        async with self._turn(key):
            await self._round(key, heard=heard, read=read, changed_at=changed_at)

    def _turn(self, key: Key) -> asyncio.Lock:
        """One round of a fleet at a time: its observation, decisions and their effects."""
        return self._turns.setdefault(key, asyncio.Lock())

    async def _read_workers(self, key: Key) -> Read | None:
        """Every worker's /worker of a fleet this process syncs, read now (None: not ours)."""
        if not self._ours(key):
            return None
        pods = self._store.pods(key)
        ips = [str((pod.get("status") or {}).get("podIP") or "") for pod in pods]
        started = time.monotonic()
        at = self.clock()
        answers = await self._scraper.read([ip for ip in ips if ip])
        return Read(at=at, answers=answers, took_s=time.monotonic() - started)

    async def _round(
        self, key: Key, *, heard: bool, read: Read | None, changed_at: float | None
    ) -> None:
        """Observe, protect, scale, reconcile. `heard`: a round between the periodic ones,
        which takes what the long polls heard when a worker of the fleet changed; else `read`
        is every worker's answer, read just before (a periodic round)."""
        body = self._store.agentworker(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        annotations = (body.get("metadata") or {}).get("annotations") or {}
        if builders.claim(annotations, self.operator_id) is not builders.Claim.OURS:
            return  # another installation's, or not claimed yet (the reconcile claims it)
        fleet = self.fleets.setdefault(key, Fleet())
        try:
            spec = self.parsed(body)
        except specs.InvalidSpecError:
            last = self.last_valid(key)
            if last is None:
                return  # the reconcile reports it; nothing known to observe by
            spec = last  # the calls stay protected; nothing scales meanwhile
        owner = builders.Owner(name=key[1], namespace=key[0], uid=body["metadata"]["uid"])
        if await self._watch_behind(owner, fleet):
            return
        try:
            token = await self.ensure_control_secret(owner)
        except kube.NotOurs:
            return  # the reconcile reports it (ControlSecretConflict); no handshake without it
        observed = await self._observe(key, spec, fleet, heard=heard, read=read)
        fleet.written = {w.pod.name: fleet.written.get(w.pod.name, {}) for w in observed}
        workers = [scaledown.as_written(w, fleet.written[w.pod.name]) for w in observed]
        fleet.workers = tuple(workers)
        injection = self.injection(key, body, spec)
        template = self._template_hash(body, owner, spec, token, injection)
        fleet.summary = observation.summarize(workers, template_hash=template)
        fallen_back = injection.plan.loads_companion and self._companion_verdict(
            key, spec, fleet, template
        )
        metrics.record_fleet(key, fleet.summary)
        demand = await self._judge_dispatches(key, body, spec, fleet, heard=heard)
        demand = self._estimate(spec, fleet, workers, demand, now_s=self.clock())
        demand = dataclasses.replace(demand, unseen_pods=fleet.unseen_pods)
        changed = False
        scale_events = fleet.history.scale_events
        async with self.lock(key):
            body = self._store.agentworker(key) or body  # as of now, not of before the lock
            await self._protect(key, spec, workers)
            fleet.victims = frozenset()
            valid = self._valid(body)
            if valid and sizing.mode(spec.autoscaling) is sizing.Mode.AUTOSCALED:
                changed = await self._autoscale(key, body, spec, fleet, workers, template, demand)
            elif valid:  # off or paused: no decision; the reconcile applies `sizing.hold`
                fleet.decision = None
                fleet.desired = None
            if changed_at is not None:
                metrics.CHANGE_TO_DECISION.observe(self.clock() - changed_at)
            await self._withdraw(key, spec, fleet, workers)
        if valid and spec.recovery.redispatch:
            await self._recover(key, body, spec, fleet)
        if fleet.guard_plan is not None:  # judged by the last valid spec: carried out alike
            await self._rescue(key, body, spec, fleet, fleet.guard_plan)
        changed = changed or fallen_back
        due = self.clock() - fleet.last_full_reconcile >= self._config.resync_s
        wanted = fleet.desired
        if wanted is None and valid:
            wanted = self.hold(key, spec, self._store.deployment(key)).replicas
        unapplied = wanted is not None and wanted != fleet.applied
        try:
            await self._reconcile(key, "sync", changed or due or unapplied)
        finally:
            if fleet.desired is not None and fleet.desired != fleet.applied:
                # not applied (refused, or this process never applied): the scale is
                # abandoned, its victims serve again, and the next round decides anew
                fleet.desired = fleet.applied
                # nor does it spend the scale steps of the period (HPA counts applied scales)
                fleet.history = dataclasses.replace(fleet.history, scale_events=scale_events)
                victims = [w for w in workers if w.pod.name in fleet.victims]
                fleet.victims = frozenset()
                await self._unretire(key, victims)
        for at_s, delta in sorted(set(fleet.history.scale_events) - set(scale_events)):
            # applied (an abandoned scale is no longer in the history): its workers awaited
            names = (w.pod.name for w in workers)
            fleet.estimates = fleet.estimates.scaled_up(at_s=at_s, added=delta, pods=names)

    def _estimate(
        self,
        spec: specs.AgentWorkerSpec,
        fleet: Fleet,
        workers: Sequence[observation.Worker],
        demand: autoscaler.Demand,
        *,
        now_s: float,
    ) -> autoscaler.Demand:
        """Feed the miss-rate headroom's estimates with this round's workers; the demand with
        the warm headroom the target asks for (`estimates.Estimates.warm_headroom`)."""
        fleet.estimates = fleet.estimates.observed(workers, now_s=now_s, desired=fleet.desired)
        fleet.warm_headroom = fleet.estimates.warm_headroom(
            spec.autoscaling,
            now_s=now_s,
            busy_calls=estimators.serving_calls(workers),
            slots_per_worker=demand.slots_per_worker,
            round_s=self._config.interval_s,
        )
        return dataclasses.replace(demand, warm=fleet.warm_headroom)

    async def _judge_dispatches(
        self,
        key: Key,
        body: Mapping[str, Any],
        spec: specs.AgentWorkerSpec,
        fleet: Fleet,
        *,
        heard: bool = False,
    ) -> autoscaler.Demand:
        """The dispatch guard's look at LiveKit (`guard.judge`), and the demand the autoscaler
        sees: the dispatches waiting, the fleet's free slots, and how long it has been idle.
        `heard`: a round a worker's change started; the guard looks then only if dispatches
        wait (a slot may have freed for them) or its last look is GUARD_PERIOD_S old, so that
        calls coming and going fast do not become as many reads of LiveKit."""
        now, workers = self.clock(), fleet.workers
        fleet.guard_plan = None
        free = guard.free_slots(
            workers, load_threshold=spec.load_threshold, job_load=guard.job_load(workers)
        )
        per_worker = guard.slots_per_worker(workers, load_threshold=spec.load_threshold)
        recent = now - fleet.guard_looked_at < GUARD_PERIOD_S
        if spec.dispatch_guard.enabled:
            client = None
            if not (heard and recent and not _held_waiting(fleet)):
                client = await self._livekit(key, body, spec, fleet)
            if client is not None:
                fleet.guard_looked_at = now
                fleet.guard_plan = await self._guard_plan(key, spec, fleet, client, free)
        else:
            fleet.held.clear()
            fleet.pending_dispatches = 0
        waiting = fleet.pending_dispatches
        if free == 0 and fleet.guard_plan is not None:
            # none of them can have found a worker: demand before the grace is over (only as
            # read this round: a memory kept while LiveKit is unreadable may be of rooms gone)
            waiting = max(waiting, _held_waiting(fleet))
        busy = any(w.report is not None and w.report.active_jobs for w in workers)
        replicas = ((self._store.deployment(key) or {}).get("spec") or {}).get("replicas")
        if fleet.last_busy_s is None and replicas == 0:
            # a fleet put to sleep stays asleep when the operator restarts
            fleet.last_busy_s = now - spec.autoscaling.scale_to_zero_after_s
        if fleet.last_busy_s is None or busy or waiting:
            fleet.last_busy_s = now
        return autoscaler.Demand(
            waiting=waiting,
            free_slots=free,
            slots_per_worker=per_worker,
            idle_s=now - fleet.last_busy_s,
        )

    async def _guard_plan(
        self,
        key: Key,
        spec: specs.AgentWorkerSpec,
        fleet: Fleet,
        client: rooms.Rooms,
        free: int,
    ) -> guard.Plan | None:
        """This round's plan of the guard; None (the memory kept) when LiveKit cannot be read."""
        served = frozenset(
            room for w in fleet.workers if w.report is not None for room in w.report.rooms
        )
        try:
            listed, unread = await client.guard_rooms(spec.agent_name, skip=served)
        except rooms.RoomsError as error:
            await self._unreachable(key, fleet, "the dispatch guard", error)
            return None
        seen = self._callers_seen
        listed = [
            dataclasses.replace(room, had_caller=True) if room.name in seen else room
            for room in listed
        ]
        plan = guard.judge(
            listed,
            fleet.held,
            agent_name=spec.agent_name,
            served_rooms=served,
            free_slots=free,
            now_s=self.clock(),
            wall_now_s=self._wall_clock(),
            max_wait_s=spec.dispatch_guard.max_wait_s,
            unread=unread,
        )
        for room in plan.held.keys() - fleet.held.keys():
            fleet.causes[room] = _cause(fleet.workers)
        fleet.held = dict(plan.held)
        fleet.pending_dispatches = plan.pending
        metrics.PENDING_DISPATCHES.labels(*key).set(plan.pending)
        return plan

    async def _rescue(
        self,
        key: Key,
        body: Mapping[str, Any],
        spec: specs.AgentWorkerSpec,
        fleet: Fleet,
        plan: guard.Plan,
    ) -> None:
        """Carry out the guard's plan: the re-issues, and an Event for each batch of them, for
        each rescued dispatch and for each one given up."""
        client = fleet.livekit
        issued: list[str] = []
        for order in plan.reissue:
            if client is None:
                break
            try:
                created = await client.reissue(order)
            except rooms.RoomsError as error:
                # the next round finds the room as it is now (no record: created again)
                logger.warning(
                    "a held dispatch could not be issued again",
                    extra={**logs.about(key), "error": str(error)},
                )
                continue
            if created:
                issued.append(redact.room_ref(order.room))
        if issued:
            logger.info(
                "held dispatches issued again", extra={**logs.about(key), "count": len(issued)}
            )
            rooms_text = ", ".join(issued[:5]) + (
                f" and {len(issued) - 5} more" if len(issued) > 5 else ""
            )
            message = (
                f"dispatched {spec.agent_name or 'the agent'} again into {len(issued)} rooms "
                f"no worker had taken: {rooms_text}"
            )
            await self._kube.post_event(
                body, type="Normal", reason="DispatchesReissued", message=message
            )
        for release in plan.served:
            cause = fleet.causes.pop(release.room, "unanswered")
            if release.attempts:
                metrics.DISPATCHES_RESCUED.labels(*key, cause).inc()
        for release in plan.give_up:
            metrics.DISPATCHES_ABANDONED.labels(*key).inc()
            await self._kube.post_event(
                body, type="Warning", reason="DispatchAbandoned", message=release.message
            )
        for release in plan.dropped:
            fleet.causes.pop(release.room, None)
        for room in set(fleet.causes) - set(fleet.held):
            del fleet.causes[room]

    async def _recover(
        self, key: Key, body: Mapping[str, Any], spec: specs.AgentWorkerSpec, fleet: Fleet
    ) -> None:
        """Dispatch the agent again into rooms a dead worker took down with it."""
        now, silence_s = self.clock(), spec.recovery.silence_timeout_s
        dead = recovery.lost_rooms(fleet.sightings, fleet.workers, now=now, silence_s=silence_s)
        fleet.sightings = recovery.remember(
            fleet.sightings, fleet.workers, now=now, silence_s=silence_s
        )
        for lost in dead:
            if lost.room not in fleet.recovered and lost.room not in fleet.suspects:
                fleet.suspects[lost.room] = (lost, now)
        fleet.recovered = {r: t for r, t in fleet.recovered.items() if now - t < 3600}
        if not fleet.suspects:
            return
        client = await self._livekit(key, body, spec, fleet)
        if client is None:
            fleet.suspects.clear()  # not allowed to recover: said once, in an Event
            return
        for room, (lost, since) in list(fleet.suspects.items()):
            if now - since > recovery.SUSPECT_FOR_S:
                del fleet.suspects[room]
                continue
            try:
                dispatch = await self._recover_room(key, spec, fleet, lost, client)
            except rooms.RoomsError as error:
                await self._unreachable(key, fleet, "call recovery", error)
                return
            if dispatch is None:
                continue
            del fleet.suspects[room]
            fleet.recovered[room] = now
            metrics.REDISPATCHES.labels(*key).inc()
            message = (
                f"{redact.room_ref(room)}: worker {lost.pod} ended without draining; dispatched "
                f"{spec.agent_name or 'the agent'} again ({dispatch})"
            )
            logger.info(
                "call redispatched", extra={**logs.about(key), "room": redact.room_ref(room)}
            )
            await self._kube.post_event(
                body, type="Normal", reason="CallRedispatched", message=message
            )

    async def _recover_room(
        self,
        key: Key,
        spec: specs.AgentWorkerSpec,
        fleet: Fleet,
        lost: recovery.LostRoom,
        client: rooms.Rooms,
    ) -> str | None:
        """One lost room: the new dispatch's id, or None (wait, or given up)."""
        # only a death the pod proves lets LiveKit's lingering copy of the agent be passed over
        gone = lost.agent_identity if lost.proven else ""
        callers, agents = await client.participants(lost.room, gone=gone)
        available = sum(1 for w in fleet.workers if w.state is observation.WorkerState.AVAILABLE)
        match recovery.verdict(callers=callers, agents=agents, available_workers=available):
            case recovery.Verdict.WAIT:
                return None
            case recovery.Verdict.GIVE_UP:
                logger.info(
                    "call not recovered: no caller in the room",
                    extra={**logs.about(key), "room": redact.room_ref(lost.room)},
                )
                del fleet.suspects[lost.room]
                return None
            case recovery.Verdict.REDISPATCH:
                reported = {
                    identity
                    for w in fleet.workers
                    if w.report is not None
                    for _, identity in w.report.agents
                }
                if gone and gone not in reported:  # the caller should not see the dead agent
                    await client.remove(lost.room, gone)
                return await client.dispatch_again(lost.room, spec.agent_name)

    async def _unreachable(
        self, key: Key, fleet: Fleet, feature: str, error: rooms.RoomsError
    ) -> None:
        """LiveKit did not answer `feature`: said in a log line, and its client dropped."""
        logger.warning(
            "LiveKit did not answer",
            extra={**logs.about(key), "feature": feature, "error": str(error)},
        )
        if fleet.livekit is not None:
            await fleet.livekit.aclose()  # the credentials may have changed: read them again
        fleet.livekit = None

    async def _livekit(
        self, key: Key, body: Mapping[str, Any], spec: specs.AgentWorkerSpec, fleet: Fleet
    ) -> rooms.Rooms | None:
        """The LiveKit API client of call recovery and the dispatch guard: the one place the
        operator reads the credentials Secret's values, which the chart allows only with
        rbac.readCredentialSecrets; None (and a Warning Event, once) when it may not."""
        if fleet.livekit is None:
            secret = spec.livekit.credentials_secret
            try:
                values = await self._kube.secret_values(key[0], secret) or {}
            except kube.KubeError as error:
                if error.status != 403:
                    raise
                if not fleet.recovery_refused:
                    fleet.recovery_refused = True
                    message = (
                        f"calls cannot be recovered nor dispatches held: the operator may not "
                        f"read Secret {secret} (spec.recovery.redispatch and "
                        "spec.dispatchGuard need the LiveKit API key and secret; install the "
                        "chart with rbac.readCredentialSecrets=true)"
                    )
                    logger.warning(
                        "calls cannot be recovered: credentials Secret not readable",
                        extra={**logs.about(key), "secret": secret, "detail": message},
                    )
                    await self._kube.post_event(
                        body, type="Warning", reason="RecoveryForbidden", message=message
                    )
                return None
            api_key = values.get("LIVEKIT_API_KEY", "")
            api_secret = values.get("LIVEKIT_API_SECRET", "")
            if api_key and api_secret:
                self._secrets[api_key] = api_secret
            fleet.livekit = self._rooms_client(spec.livekit.url, api_key, api_secret)
        return fleet.livekit

    async def _watch_behind(self, owner: builders.Owner, fleet: Fleet) -> bool:
        """Whether this round must wait for the pod watch. The Deployment made pods the watch
        has not shown yet: observe next round. The watch and the Deployment's count disagree
        for periods (a half-open watch): list the pods from the API server instead."""
        key = (owner.namespace, owner.name)
        deployment = self._store.deployment(key)
        pods = self._store.pods(key)
        made = int(((deployment or {}).get("status") or {}).get("replicas") or 0)
        now = self.clock()
        if not observation.pods_disagree(pods, deployment):
            fleet.disagreeing_since = None
        elif fleet.disagreeing_since is None:
            fleet.disagreeing_since = now
        period_s = self._config.interval_s
        if observation.watch_stale(fleet.disagreeing_since, now, period_s=period_s):
            fleet.disagreeing_since = None
            path = kube.path_of("v1", "Pod", owner.namespace)
            listed = await self._kube.list_items(path, builders.selector_string(owner))
            logger.warning(
                "the pod watch disagrees with the Deployment: listed the pods again",
                extra={**logs.about(key), "watched": len(pods), "listed": len(listed)},
            )
            self._store.replace_pods(key, listed)
            fleet.unseen_pods = observation.unseen_pods(listed, deployment)
            return False
        fleet.unseen_pods = observation.unseen_pods(pods, deployment)
        return made > 0 and not pods

    async def _observe(
        self,
        key: Key,
        spec: specs.AgentWorkerSpec,
        fleet: Fleet,
        *,
        heard: bool = False,
        read: Read | None = None,
    ) -> list[observation.Worker]:
        """Every pod's Worker, from its /worker. `heard`: a round a worker's change started
        reads no worker: it takes what the long polls brought and, for the others, the last
        round's answers (the load moves no generation: the periodic rounds read it). `read`:
        the answers read before the round; a long poll's answer heard since is newer, and a pod
        that was not read yet is read now."""
        pods = self._store.pods(key)
        started = time.monotonic()
        known: dict[str, tuple[tuple[object, str], float]] = {}
        ips = [str((pod.get("status") or {}).get("podIP") or "") for pod in pods]
        if self._watch is not None:
            self._watch.follow(key, ips)
            if heard:
                known = self._known_answers(fleet, ips)
        if read is not None:
            known = {ip: (answer, read.at) for ip, answer in read.answers.items()}
            known |= self._heard_since(read.at, ips)
        workers, answers = await self._scraper.observe_answers(
            pods,
            load_threshold=spec.load_threshold,
            reported_before=fleet.reported,
            known={ip: answer for ip, (answer, _) in known.items()},
        )
        now = self.clock()
        fleet.answers = {
            ip: known.get(ip, (answer, now)) for ip, answer in answers.items()
        }  # the answers read now are timed now; the ones reused keep their own time
        fleet.reported = {
            w.pod.name
            for w in workers
            if w.pod.name in fleet.reported
            or w.state in (observation.WorkerState.AVAILABLE, observation.WorkerState.FULL)
        }
        took_s = time.monotonic() - started + (read.took_s if read is not None else 0.0)
        metrics.OBSERVATION_DURATION.labels(*key).observe(took_s)
        failed = [w for w in workers if w.error and not w.pod.terminating]
        if failed:
            metrics.OBSERVATION_FAILURES.labels(*key).inc(len(failed))
        return workers

    def _heard_since(
        self, since: float, ips: Sequence[str]
    ) -> dict[str, tuple[tuple[object, str], float]]:
        """What the long polls brought after `since` (newer than a read that began then)."""
        if self._watch is None:
            return {}
        found = {}
        for ip in ips:
            heard = self._watch.heard(ip)
            if heard is not None and heard.at > since:
                found[ip] = ((heard.document, ""), heard.at)
        return found

    def _known_answers(
        self, fleet: Fleet, ips: Sequence[str]
    ) -> dict[str, tuple[tuple[object, str], float]]:
        """For each worker, the newer of what its long poll brought and what the last round
        read, if younger than two sync periods (else it is read again)."""
        assert self._watch is not None
        known: dict[str, tuple[tuple[object, str], float]] = {}
        oldest = self.clock() - 2 * self._config.interval_s
        for ip in ips:
            candidates = [fleet.answers[ip]] if ip in fleet.answers else []
            heard = self._watch.heard(ip)
            if heard is not None:
                candidates.append(((heard.document, ""), heard.at))
            newest = max(candidates, key=lambda c: c[1], default=None)
            if newest is not None and newest[1] > oldest:
                known[ip] = newest
        return known

    async def _protect(
        self, key: Key, spec: specs.AgentWorkerSpec, workers: Sequence[observation.Worker]
    ) -> None:
        """Busy pods get do-not-disrupt and a deletion cost, idle ones lose them: on change."""
        user_keys = frozenset(spec.pod_template.annotations)
        for worker in workers:
            patch = scaledown.protection_patch(worker, user_keys=user_keys)
            if patch is not None:
                await self._annotate(key, worker, patch)

    async def _withdraw(
        self,
        key: Key,
        spec: specs.AgentWorkerSpec,
        fleet: Fleet,
        workers: Sequence[observation.Worker],
    ) -> None:
        """Put back in service the retired workers no scale-down is about to remove (an
        abandoned scale-down, an operator that died between /retire and the apply)."""
        replicas = fleet.desired
        if replicas is None:
            replicas = self.hold(key, spec, self._store.deployment(key)).replicas
        withdrawn = scaledown.retirements_to_withdraw(
            workers, replicas=replicas, keep=fleet.victims
        )
        await self._unretire(key, withdrawn)

    async def _unretire(self, key: Key, workers: Sequence[observation.Worker]) -> None:
        """DELETE /retire: each worker serves again (the ones that can be asked)."""
        retired = [w for w in workers if w.report is not None and w.report.retirable]
        if not retired:
            return
        token = await self._control_token(key)
        for worker in retired:
            serving = await self._scraper.unretire(worker.pod.ip, token)
            logger.info(
                "retirement withdrawn" if serving else "retirement could not be withdrawn",
                extra={**logs.about(key), "pod": worker.pod.name},
            )

    async def _annotate(
        self, key: Key, worker: observation.Worker, patch: Mapping[str, str | None]
    ) -> bool:
        try:
            await self._kube.patch_annotations(key[0], worker.pod.name, patch)
        except kube.KubeError as error:
            if error.status != 404:  # a pod gone meanwhile needs nothing
                raise
            return False
        self.fleets[key].written.setdefault(worker.pod.name, {}).update(patch)
        metrics.ANNOTATION_WRITES.labels(*key).inc()
        return True

    async def _autoscale(
        self,
        key: Key,
        body: Mapping[str, Any],
        spec: specs.AgentWorkerSpec,
        fleet: Fleet,
        workers: Sequence[observation.Worker],
        template: str,
        demand: autoscaler.Demand,
    ) -> bool:
        """Decide and act; True when the replicas changed."""
        now = self.clock()
        keep = autoscaler.history_span_s(spec.autoscaling)
        if fleet.desired is None:
            # a fresh operator, or autoscaling resumed (turned on, unpaused): start from the size
            # last applied, by this process or (before its first apply) as the cluster says
            applied = fleet.applied_as
            fleet.desired = (
                builders.desired_replicas(spec, recommended=applied.replicas)
                if applied is not None
                else builders.current_replicas(
                    spec, deployment=self._store.deployment(key), status=body.get("status")
                )
            )
            # as if the current size had just been recommended: no scale-down before a window,
            # and none of the recommendations from before a pause
            history = autoscaler.History(scale_events=fleet.history.scale_events)
            fleet.history = history.recommended(now, fleet.desired, keep_s=keep)
            fleet.last_scale_time = (body.get("status") or {}).get("lastScaleTime")
        current = fleet.desired
        decision = autoscaler.decide(
            spec.autoscaling,
            workers,
            current=current,
            history=fleet.history,
            now=now,
            demand=demand,
        )
        fleet.history = fleet.history.recommended(now, decision.recommendation, keep_s=keep)
        target = decision.replicas
        if target < current:
            removed, decision = await self._scale_down(
                key, spec, workers, current, decision, template
            )
            target = current - removed
        fleet.decision = decision
        if target == current:
            return False
        fleet.history = fleet.history.scaled(now, target - current, keep_s=keep)
        fleet.desired = target
        fleet.last_scale_time = _now_text()
        direction = "up" if target > current else "down"
        metrics.SCALE_EVENTS.labels(*key, direction).inc()
        reason = "ScaledUp" if target > current else "ScaledDown"
        logger.info(
            "scaling",
            extra={
                **logs.about(key),
                "from": current,
                "to": target,
                "reason": decision.reason,
                "detail": decision.message,
            },
        )
        await self._kube.post_event(body, type="Normal", reason=reason, message=decision.message)
        return True

    async def _scale_down(
        self,
        key: Key,
        spec: specs.AgentWorkerSpec,
        workers: Sequence[observation.Worker],
        current: int,
        decision: autoscaler.ScaleDecision,
        template: str,
    ) -> tuple[int, autoscaler.ScaleDecision]:
        """Carry out `scaledown.plan_scale_down`: ask its candidates until enough agreed, mark
        them, and say how many replicas may go (the decision, corrected)."""
        drain_busy = spec.autoscaling.scale_down.busy_workers is specs.BusyWorkers.DRAIN
        rolling_out = any(w.pod.template_hash != template for w in workers if not w.pod.terminating)
        plan = scaledown.plan_scale_down(
            workers,
            current=current,
            target=decision.replicas,
            drain_busy=drain_busy,
            rolling_out=rolling_out,
            unseen=self.fleets[key].unseen_pods,
        )
        if plan.blocked is not None:
            reason, message = plan.blocked
            limit = autoscaler.Limit(reason=reason, message=message)
            held = current - plan.unmade
            return plan.unmade, dataclasses.replace(decision, replicas=held, limit=limit)
        token = await self._control_token(key) if plan.wanted else ""
        victims: list[observation.Worker] = []
        refused = 0
        for worker in plan.candidates:
            if len(victims) == plan.wanted:
                break
            if await self._agrees(worker, token, drain_busy=drain_busy):
                victims.append(worker)
            else:
                refused += 1
        try:
            await self._mark(key, spec, workers, victims)
        except BaseException:  # abandoned midway: the victims serve again, then it is raised
            await asyncio.shield(self._unretire(key, victims))
            raise
        removed = plan.unmade + len(victims)
        if len(victims) < plan.wanted:
            limit = autoscaler.Limit(
                reason="BusyWorkers",
                message=f"{plan.wanted} workers should go but only {len(victims)} agreed to "
                f"retire ({refused} turned busy or did not answer): {current} -> "
                f"{current - removed} workers",
            )
            decision = dataclasses.replace(decision, replicas=current - removed, limit=limit)
        return removed, decision

    async def _mark(
        self,
        key: Key,
        spec: specs.AgentWorkerSpec,
        workers: Sequence[observation.Worker],
        victims: Sequence[observation.Worker],
    ) -> None:
        """The victims get the lowest deletion cost; the rest exact costs, so that any
        surprise still spares calls."""
        for worker in victims:
            patch = scaledown.victim_patch(worker)
            if patch is not None:
                await self._annotate(key, worker, patch)
        chosen = frozenset(v.pod.name for v in victims)
        self.fleets[key].victims = chosen
        user_keys = frozenset(spec.pod_template.annotations)
        for worker in workers:
            if worker.pod.name not in chosen:
                patch = scaledown.protection_patch(worker, exact_cost=True, user_keys=user_keys)
                if patch is not None:
                    await self._annotate(key, worker, patch)
        if chosen:
            logger.info("scale-down victims", extra={**logs.about(key), "pods": sorted(chosen)})

    async def _agrees(self, worker: observation.Worker, token: str, *, drain_busy: bool) -> bool:
        """The victim handshake: this runtime is asked; the rest by `scaledown.handshake`."""
        match scaledown.handshake(worker, drain_busy=drain_busy):
            case scaledown.Handshake.ASK:
                answer = await self._scraper.retire(worker.pod.ip, token)
                return answer is scrapers.RetireAnswer.ACCEPTED
            case scaledown.Handshake.AGREED:
                return True
            case scaledown.Handshake.REFUSED:
                return False

    async def _control_token(self, key: Key) -> str:
        fleet = self.fleets.setdefault(key, Fleet())
        body = self._store.agentworker(key)
        if not fleet.control_token and body is not None:
            owner = builders.Owner(name=key[1], namespace=key[0], uid=body["metadata"]["uid"])
            return await self.ensure_control_secret(owner)
        return fleet.control_token

    async def ensure_control_secret(self, owner: builders.Owner) -> str:
        """The AgentWorker's control token, derived from the control key, and its Secret written
        once per operator process: created, or patched over an older one of this AgentWorker's (a
        token of a previous release, or of a control key made again). A Secret of that name that
        is not this AgentWorker's is left as it is: NotOurs. The operator never reads it back."""
        fleet = self.fleets.setdefault((owner.namespace, owner.name), Fleet())
        token = builders.control_token(self._control_key, owner)
        if fleet.control_token == token:
            return token
        manifest = builders.build_control_secret(owner, token)
        try:
            await self._kube.create(manifest)
        except kube.Conflict:
            if not await self._kube.patch_owned_secret(manifest, owner.uid):
                raise kube.NotOurs(
                    f"Secret {builders.control_secret_name(owner)} exists and is not this "
                    "AgentWorker's: rename it, or the AgentWorker"
                ) from None
        fleet.control_token = token
        return token


def _cause(workers: Sequence[observation.Worker]) -> str:
    """Why a dispatch found no worker, from the fleet as it stood: none registered, every one
    full (or draining), or one was available and the assignment still failed."""
    states = {w.state for w in workers if not w.pod.terminating}
    if observation.WorkerState.AVAILABLE in states:
        return "unanswered"
    if states & {observation.WorkerState.FULL, observation.WorkerState.DRAINING}:
        return "full"
    return "no_worker"


def _held_waiting(fleet: Fleet) -> int:
    """Dispatches the guard holds that no worker took yet, those still in their grace too."""
    return sum(1 for held in fleet.held.values() if held.stage is guard.Stage.WAITING)
