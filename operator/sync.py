"""The operator's one periodic loop: observe every AgentWorker's workers, scale, reconcile.

This module owns the sync period's work, in the order gather, decide, act: read each worker
pod's /worker (`scraper`), count the fleet (`observation`), keep the calls' protection on the
pods (`scaledown.protection_patch`), ask the autoscaler (`autoscaler.decide`), and, for a
scale-down, run the victim handshake (POST /retire, then the lowest pod-deletion-cost, and only
then fewer replicas), then hand over to the reconcile, which applies the Deployment and writes
the status. It keeps what must outlive one round in memory: the autoscaler's history, the
replicas it wants, the latest observation. One process-level loop instead of kopf timers or
daemons: those put a finalizer on every AgentWorker, and deleting one (or its namespace) would
hang while no operator runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentworker_operator import (
    autoscaler,
    builders,
    kube,
    logs,
    metrics,
    observation,
    recovery,
    rooms,
    scaledown,
)
from agentworker_operator import scraper as scrapers
from agentworker_operator import spec as specs
from agentworker_operator.settings import SyncSettings
from agentworker_operator.store import Key, Store

logger = logging.getLogger(__name__)

Reconcile = Callable[[Key, str, bool], Awaitable[object]]
"""reconcile(key, trigger, full): apply (when full) and publish the status of one AgentWorker."""


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
    control_token: str = ""
    last_full_reconcile: float = 0.0
    reported: set[str] = field(default_factory=set)
    """Pods that were seen registered: when they go silent they are unknown, not starting."""
    retired: set[str] = field(default_factory=set)
    """Pods seen retired (draining, not being deleted) in the previous round."""
    suspects: dict[str, tuple[recovery.LostRoom, float]] = field(default_factory=dict)
    """Rooms whose worker went without draining, under watch since (monotonic s)."""
    recovered: dict[str, float] = field(default_factory=dict)
    """Rooms already dispatched again (never twice), and when."""
    livekit: rooms.Rooms | None = None
    """The LiveKit client of call recovery (made when recovery is on)."""
    recovery_refused: bool = False
    """The API server refused the credentials Secret to call recovery (said once)."""


def _now_text() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
    ) -> None:
        self._kube = client
        self._control_key = control_key
        self._store = store
        self._config = config
        self._reconcile = reconcile
        self._locks = locks
        self._scraper = scrapers.Scraper(
            port=builders.HTTP_PORT,
            timeout_s=config.scrape_timeout_s,
            concurrency=config.scrape_concurrency,
        )
        self.fleets: dict[Key, Fleet] = {}

    async def aclose(self) -> None:
        await self._scraper.aclose()
        for fleet in self.fleets.values():
            if fleet.livekit is not None:
                await fleet.livekit.aclose()

    def lock(self, key: Key) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def run(self) -> None:
        """Sync every AgentWorker each period, forever (cancel to stop)."""
        # the first round waits a period: kopf's watches list the AgentWorkers and pods first
        await asyncio.sleep(self._config.interval_s)
        while True:
            started = time.monotonic()
            await self.sync_all()
            elapsed = time.monotonic() - started
            metrics.SYNC_DURATION.observe(elapsed)
            await asyncio.sleep(max(0.1, self._config.interval_s - elapsed))

    async def sync_all(self) -> None:
        keys = self._store.agentworkers()
        for gone in set(self.fleets) - set(keys):
            self.fleets.pop(gone, None)
            metrics.forget(*gone)
        results = await asyncio.gather(*(self.sync(key) for key in keys), return_exceptions=True)
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, BaseException):
                logger.error(
                    "sync failed",
                    exc_info=result,
                    extra=logs.about(key),
                )

    async def sync(self, key: Key) -> None:
        """One round for one AgentWorker: observe, protect, scale, reconcile."""
        body = self._store.agentworker(key)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return
        try:
            spec = specs.parse_spec(body.get("spec"))
        except specs.InvalidSpecError:
            return  # the reconcile reports it; nothing to observe or scale
        if self._watch_behind(key):
            return
        fleet = self.fleets.setdefault(key, Fleet())
        owner = builders.Owner(name=key[1], namespace=key[0], uid=body["metadata"]["uid"])
        workers = await self._observe(key, spec, fleet)
        previous, fleet.workers = fleet.workers, tuple(workers)
        token = await self.ensure_control_secret(owner)
        fleet.summary = observation.summarize(
            workers, template_hash=builders.template_hash(owner, spec, control_token=token)
        )
        metrics.record_fleet(key, fleet.summary)
        changed = False
        async with self.lock(key):
            await self._protect(key, spec, workers)
            if spec.autoscaling.enabled:
                changed = await self._autoscale(key, body, spec, fleet, workers)
            else:
                fleet.decision = None
                fleet.desired = None
            if not changed:
                await self._recycle(key, fleet, workers)
            fleet.retired = {
                w.pod.name
                for w in workers
                if w.state is observation.WorkerState.DRAINING and not w.pod.terminating
            }
        if spec.recovery.redispatch:
            await self._recover(key, body, spec, fleet, previous)
        due = time.monotonic() - fleet.last_full_reconcile >= self._config.resync_s
        await self._reconcile(key, "sync", changed or due)

    async def _recover(
        self,
        key: Key,
        body: Mapping[str, Any],
        spec: specs.AgentWorkerSpec,
        fleet: Fleet,
        previous: Sequence[observation.Worker],
    ) -> None:
        """Dispatch the agent again into rooms a worker took down with it (recovery.redispatch)."""
        now = time.monotonic()
        for lost in recovery.lost_rooms(previous, fleet.workers):
            if lost.room not in fleet.recovered and lost.room not in fleet.suspects:
                fleet.suspects[lost.room] = (lost, now)
        fleet.recovered = {r: t for r, t in fleet.recovered.items() if now - t < 3600}
        if not fleet.suspects:
            return
        available = sum(1 for w in fleet.workers if w.state is observation.WorkerState.AVAILABLE)
        client = await self._livekit(key, body, spec, fleet)
        if client is None:
            fleet.suspects.clear()  # not allowed to recover: said once, in an Event
            return
        for room, (lost, since) in list(fleet.suspects.items()):
            if now - since > recovery.SUSPECT_FOR_S:
                del fleet.suspects[room]
                continue
            try:
                callers, agents = await client.participants(room, gone=lost.agent_identity)
                match recovery.verdict(callers=callers, agents=agents, available_workers=available):
                    case recovery.Verdict.WAIT:
                        continue
                    case recovery.Verdict.GIVE_UP:
                        logger.info(
                            "call not recovered: no caller in the room",
                            extra={**logs.about(key), "room": room},
                        )
                        del fleet.suspects[room]
                        continue
                    case recovery.Verdict.REDISPATCH:
                        if lost.agent_identity:  # the caller should not see the dead agent
                            await client.remove(room, lost.agent_identity)
                        dispatch = await client.dispatch_again(room, spec.agent_name)
            except rooms.RoomsError as error:
                logger.warning(
                    "call recovery could not reach LiveKit",
                    extra={**logs.about(key), "error": str(error)},
                )
                await client.aclose()  # the credentials may have changed: read them again
                fleet.livekit = None
                return
            del fleet.suspects[room]
            fleet.recovered[room] = now
            metrics.REDISPATCHES.labels(*key).inc()
            message = (
                f"room {room}: worker {lost.pod} ended without draining; dispatched "
                f"{spec.agent_name or 'the agent'} again ({dispatch})"
            )
            logger.info(
                "call redispatched",
                extra={**logs.about(key), "room": room},
            )
            await self._kube.post_event(
                body, type="Normal", reason="CallRedispatched", message=message
            )

    async def _livekit(
        self, key: Key, body: Mapping[str, Any], spec: specs.AgentWorkerSpec, fleet: Fleet
    ) -> rooms.Rooms | None:
        """The LiveKit API client of call recovery: the one place the operator reads the
        credentials Secret's values, which the chart allows only with
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
                        f"calls cannot be recovered: the operator may not read Secret {secret} "
                        "(spec.recovery.redispatch needs the LiveKit API key and secret; install "
                        "the chart with rbac.readCredentialSecrets=true)"
                    )
                    logger.warning(
                        "calls cannot be recovered: credentials Secret not readable",
                        extra={**logs.about(key), "secret": secret, "detail": message},
                    )
                    await self._kube.post_event(
                        body, type="Warning", reason="RecoveryForbidden", message=message
                    )
                return None
            fleet.livekit = rooms.Rooms(
                spec.livekit.url,
                values.get("LIVEKIT_API_KEY", ""),
                values.get("LIVEKIT_API_SECRET", ""),
            )
        return fleet.livekit

    def _watch_behind(self, key: Key) -> bool:
        """The Deployment has pods the pod watch has not shown yet: observe next round."""
        deployment = self._store.deployment(key) or {}
        made = int((deployment.get("status") or {}).get("replicas") or 0)
        return made > 0 and not self._store.pods(key)

    async def _observe(
        self, key: Key, spec: specs.AgentWorkerSpec, fleet: Fleet
    ) -> list[observation.Worker]:
        pods = self._store.pods(key)
        started = time.monotonic()
        workers = await self._scraper.observe(
            pods, load_threshold=spec.load_threshold, reported_before=fleet.reported
        )
        fleet.reported = {
            w.pod.name
            for w in workers
            if w.pod.name in fleet.reported
            or w.state in (observation.WorkerState.AVAILABLE, observation.WorkerState.FULL)
        }
        metrics.OBSERVATION_DURATION.labels(*key).observe(time.monotonic() - started)
        failed = [w for w in workers if w.error and not w.pod.terminating]
        if failed:
            metrics.OBSERVATION_FAILURES.labels(*key).inc(len(failed))
        return workers

    async def _protect(
        self, key: Key, spec: specs.AgentWorkerSpec, workers: Sequence[observation.Worker]
    ) -> None:
        """Busy pods get do-not-disrupt and a deletion cost, idle ones lose them: on change."""
        user_keys = frozenset(spec.pod_template.annotations)
        for worker in workers:
            patch = scaledown.protection_patch(worker, user_keys=user_keys)
            if patch is not None:
                await self._annotate(key, worker, patch)

    async def _recycle(self, key: Key, fleet: Fleet, workers: Sequence[observation.Worker]) -> None:
        """Delete retired workers an interrupted scale-down left behind (they serve nobody)."""
        for worker in scaledown.stale_retirees(workers, fleet.retired):
            logger.info(
                "deleting a retired worker left over from an earlier scale-down",
                extra={**logs.about(key), "pod": worker.pod.name},
            )
            await self._kube.delete_pod(key[0], worker.pod.name)

    async def _annotate(
        self, key: Key, worker: observation.Worker, patch: Mapping[str, str | None]
    ) -> bool:
        try:
            await self._kube.patch_annotations(key[0], worker.pod.name, patch)
        except kube.KubeError as error:
            if error.status != 404:  # a pod gone meanwhile needs nothing
                raise
            return False
        metrics.ANNOTATION_WRITES.labels(*key).inc()
        return True

    async def _autoscale(
        self,
        key: Key,
        body: Mapping[str, Any],
        spec: specs.AgentWorkerSpec,
        fleet: Fleet,
        workers: Sequence[observation.Worker],
    ) -> bool:
        """Decide and act; True when the replicas changed."""
        now = time.monotonic()
        keep = autoscaler.history_span_s(spec.autoscaling)
        if fleet.desired is None:  # a fresh operator: start from what the status says
            previous = (body.get("status") or {}).get("desiredReplicas")
            fleet.desired = builders.desired_replicas(
                spec, recommended=previous if isinstance(previous, int) else None
            )
            # as if the current size had just been recommended: no scale-down before a window
            fleet.history = fleet.history.recommended(now, fleet.desired, keep_s=keep)
            fleet.last_scale_time = (body.get("status") or {}).get("lastScaleTime")
        current = fleet.desired
        decision = autoscaler.decide(
            spec.autoscaling, workers, current=current, history=fleet.history, now=now
        )
        fleet.history = fleet.history.recommended(now, decision.recommendation, keep_s=keep)
        target = decision.replicas
        if target < current:
            removed, decision = await self._scale_down(key, spec, workers, current, decision)
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
    ) -> tuple[int, autoscaler.ScaleDecision]:
        """Retire victims, mark them, and say how many may go (the decision, corrected)."""
        wanted = current - decision.replicas
        drain_busy = spec.autoscaling.scale_down.busy_workers is specs.BusyWorkers.DRAIN
        candidates = scaledown.victim_order(workers, drain_busy=drain_busy)
        token = await self._control_token(key)
        victims: list[observation.Worker] = []
        refused = 0
        for worker in candidates:
            if len(victims) == wanted:
                break
            if await self._agrees(worker, token, drain_busy=drain_busy):
                victims.append(worker)
            else:
                refused += 1
        blocking = scaledown.blocking_pods(workers, victims)
        if blocking:
            limit = autoscaler.Limit(
                reason="WorkersNotReady",
                message=f"scale-down waits: {', '.join(blocking[:3])} not ready, and the "
                "ReplicaSet removes a not-ready pod before any other",
            )
            return 0, dataclasses.replace(decision, replicas=current, limit=limit)
        for worker in victims:
            patch = scaledown.victim_patch(worker)
            if patch is not None:
                await self._annotate(key, worker, patch)
        chosen = {v.pod.name for v in victims}
        user_keys = frozenset(spec.pod_template.annotations)
        for worker in workers:  # the rest: exact costs, so any surprise still spares calls
            if worker.pod.name not in chosen:
                patch = scaledown.protection_patch(worker, exact_cost=True, user_keys=user_keys)
                if patch is not None:
                    await self._annotate(key, worker, patch)
        if len(victims) < wanted:
            limit = autoscaler.Limit(
                reason="BusyWorkers",
                message=f"{wanted} workers should go but only {len(victims)} agreed to retire "
                f"({refused} turned busy or did not answer): {current} -> "
                f"{current - len(victims)} workers",
            )
            decision = dataclasses.replace(decision, replicas=current - len(victims), limit=limit)
        if victims:
            logger.info(
                "scale-down victims",
                extra={
                    **logs.about(key),
                    "pods": sorted(chosen),
                },
            )
        return len(victims), decision

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
        once per operator process (created, or put over an older one: a token of a previous
        release, or of a control key made again). The operator never reads it back."""
        fleet = self.fleets.setdefault((owner.namespace, owner.name), Fleet())
        token = builders.control_token(self._control_key, owner)
        if fleet.control_token == token:
            return token
        manifest = builders.build_control_secret(owner, token)
        try:
            await self._kube.create(manifest)
        except kube.Conflict:
            await self._kube.replace(manifest)
        fleet.control_token = token
        return token
