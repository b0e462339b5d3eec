"""kopf handlers: reconcile each AgentWorker into its Deployment, PDB, Service and status.

This module owns when to reconcile (create, update, resume, every sync round of `sync`'s loop,
and any change of an owned Deployment, so hand edits are put back), the watch streams that keep
`store` current, and the order of one reconcile: gather (the fresh AgentWorker, its parsed spec,
the credentials Secret's key names), act (server-side apply of the built objects under one field
manager), gather again (the Deployment's rollout, the latest observation of the workers), decide
(`status`), act (patch status only when it changed, post Events for changes). Decisions live in
`spec`, `builders`, `autoscaler`, `sizing` and `status`; API calls in `kube`. A bad spec or a
missing Secret never touches the running Deployment. No handler here needs a finalizer: deleting an
AgentWorker never waits for the operator. In an installation split in shards (`sharding`),
every handler's kopf filter passes only this process's shard's AgentWorkers and their pods and
Deployments: kopf then writes nothing on the others (no progress or last-handled-configuration
annotation, no finalizer), and the store never holds them.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from agentworker_operator import (
    autoscaler,
    builders,
    kube,
    logs,
    metrics,
    reachability,
    sharding,
    sizing,
    status,
    store,
)
from agentworker_operator import settings as settings_module
from agentworker_operator import spec as specs
from agentworker_operator import sync as syncs

G, V, P = builders.GROUP, builders.VERSION, builders.PLURAL
OWNED = {builders.LABEL_MANAGED_BY: builders.FIELD_MANAGER}
Logger = logging.Logger | logging.LoggerAdapter[Any]

registry = kopf.OperatorRegistry()
"""The operator's handlers (an explicit registry: importing this module elsewhere adds none)."""


def backoff_s(retry: int) -> float:
    """Delay before retry number `retry` of a failed reconcile: doubling, capped, jittered."""
    return min(300.0, 5.0 * 2.0 ** min(retry, 8)) * random.uniform(0.8, 1.2)


WATCH_SERVER_TIMEOUT_S = 300
"""Seconds the API server keeps one watch request open before it ends it (kopf then resumes)."""
WATCH_CLIENT_TIMEOUT_S = WATCH_SERVER_TIMEOUT_S + 60
"""Seconds after which kopf drops a watch request itself: a half-open connection, which the
server can no longer end, is noticed then, and the store does not stay frozen."""


class DigestDiffBaseStorage(kopf.AnnotationsDiffBaseStorage):
    """kopf's last-handled configuration kept as a digest of it, not a copy: the reconcile is
    level-based (it reads the whole object, never kopf's diff), so knowing *that* the object
    changed is enough. A copy doubles the object's annotations, and a spec of over 256 KiB
    (a large env value; annotations a pod cannot have anyway) made every write of kopf's
    refused by the API server's annotation limit, retried forever."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        essence: dict[str, Any] = dict(super().build(body=body, extra_fields=extra_fields))
        # kopf drops its progress annotations from the essence after building it; a digest
        # must leave them out itself, or every progress write would count as a change
        annotations = (essence.get("metadata") or {}).get("annotations") or {}
        for key in [k for k in annotations if k.startswith(f"{self.prefix}/")]:
            del annotations[key]
        encoded = json.dumps(essence, sort_keys=True, separators=(",", ":"), default=str)
        digest = hashlib.sha256(encoded.encode()).hexdigest()
        return cast(kopf.BodyEssence, {"digest": digest})


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """kopf keeps its bookkeeping in annotations under our group (the last-handled configuration
    as a digest, `DigestDiffBaseStorage`), posts no Events of its own, watches only the
    Deployments and pods the operator made, and bounds every watch."""
    prefix = builders.GROUP
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    settings.persistence.diffbase_storage = DigestDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    # Events come from the operator's conditions and scale decisions (kube.post_event), never
    # from kopf's copies of handler log lines
    settings.posting.enabled = False
    settings.watching.server_timeout = WATCH_SERVER_TIMEOUT_S
    settings.watching.client_timeout = WATCH_CLIENT_TIMEOUT_S
    owned = ",".join(f"{k}={v}" for k, v in OWNED.items())
    settings.watching.label_selectors["apps", "deployments"] = owned  # filtered by the server
    settings.watching.label_selectors["", "pods"] = owned
    settings.networking.request_timeout = 30


@kopf.on.startup(registry=registry)
async def configure(settings: kopf.OperatorSettings, memo: Any, logger: Logger, **_: Any) -> None:
    """Set kopf up (`configure_kopf`), open the API client, start the sync loop."""
    configure_kopf(settings)
    if "kube" not in memo:
        memo["kube"] = kube.Kube.connect()
        memo["owns_kube"] = True
    memo.update(new_memo(memo["kube"], reachability.LiveKitProbe()))
    key_ref: settings_module.SecretRef = memo.get("control_key_secret") or (
        settings_module.SecretRef(namespace="default", name=settings_module.CONTROL_KEY_NAME)
    )
    control_key = await memo["kube"].ensure_random_key(key_ref.namespace, key_ref.name, "key")

    async def reconcile_by_key(key: store.Key, trigger: str, full: bool) -> object:
        named = logs.AgentWorkerLog(logging.getLogger(__name__), logs.about(key))
        return await reconcile(memo, key[0], key[1], trigger=trigger, logger=named, full=full)

    sync_settings = memo.get("sync_settings") or settings_module.SyncSettings()
    shard = _shard(memo)
    if shard.count > 1:
        logger.info(
            "handling one shard of the AgentWorkers",
            extra={"shard": shard.index, "shards": shard.count},
        )
    syncer = syncs.Syncer(
        client=memo["kube"],
        store=memo["store"],
        config=sync_settings,
        reconcile=reconcile_by_key,
        locks=memo["locks"],
        control_key=control_key,
        operator_id=f"{key_ref.namespace}/{key_ref.name}",
        companion_image=memo.get("companion_image") or builders.DEFAULT_COMPANION_IMAGE,
        watch=syncs.long_polls if sync_settings.watch_workers else None,
        shard=shard,
    )
    memo["syncer"] = syncer
    inbox = memo.get("webhook_inbox")
    if inbox is not None:  # LiveKit's webhooks reach the dispatch guard from now on
        inbox.attach(syncer.webhook_secret, syncer.on_webhook)
    memo["sync_task"] = asyncio.create_task(syncer.run(), name="sync")


def new_memo(client: kube.Kube, livekit: Any) -> dict[str, Any]:
    """What the handlers share in kopf's memo, less the Syncer (made on top of it): the API
    client, LiveKit's reachability probe, the per-AgentWorker locks, the reconciles waiting for
    them, and the watch streams' store."""
    return {
        "kube": client,
        "livekit": livekit,
        "locks": {},
        "pending": {},  # key -> Pending
        "store": store.Store(),
    }


def _shard(memo: Any) -> sharding.Shard:
    """This process's shard: the one `__main__` put in the memo, else every AgentWorker."""
    found = memo.get("shard")
    return found if isinstance(found, sharding.Shard) else sharding.WHOLE


def _mine(namespace: str | None, name: str | None, memo: Any, **_: Any) -> bool:
    """kopf's filter of the AgentWorker handlers: this process's shard's only. With no handler
    passing, kopf leaves the object alone: no annotation, no finalizer, no status, no log."""
    return _shard(memo).owns((namespace or "", name or ""))


def _pod_mine(labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any) -> bool:
    """kopf's filter of the pod handlers: pods of this process's shard's AgentWorkers."""
    owner = str(labels.get(builders.LABEL_INSTANCE) or "")
    return _shard(memo).owns((namespace or "", owner))


def _owner_of(body: Mapping[str, Any]) -> str | None:
    """The name of the AgentWorker that controls an owned Deployment."""
    return next(
        (
            ref.get("name")
            for ref in body.get("metadata", {}).get("ownerReferences") or []
            if ref.get("kind") == builders.KIND and ref.get("controller")
        ),
        None,
    )


def _deployment_mine(body: kopf.Body, namespace: str | None, memo: Any, **_: Any) -> bool:
    """kopf's filter of the Deployment handler: Deployments of this shard's AgentWorkers."""
    return _shard(memo).owns((namespace or "", str(_owner_of(body) or "")))


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own watch connection: the same kubeconfig or service account as `kube`."""
    return kopf.login_via_client(**kwargs)


@kopf.on.cleanup(registry=registry)
async def close(memo: Any, **_: Any) -> None:
    """Stop the sync loop; close the clients this module opened."""
    task: asyncio.Task[None] = memo["sync_task"]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await memo["syncer"].aclose()
    await memo["livekit"].aclose()
    if memo.get("owns_kube"):
        await memo["kube"].aclose()


@kopf.on.resume(G, V, P, when=_mine, registry=registry)
@kopf.on.create(G, V, P, when=_mine, registry=registry)
@kopf.on.update(G, V, P, when=_mine, registry=registry)
async def on_change(
    namespace: str | None, name: str, retry: int, logger: Logger, memo: Any, **_: Any
) -> None:
    """Reconcile now; a bad spec fails for good, a missing Secret is retried with backoff."""
    problem = await reconcile(memo, namespace or "", name, trigger="change", logger=logger)
    if problem is None:
        return
    if problem.reason == "InvalidSpec":
        raise kopf.PermanentError(problem.message)
    raise kopf.TemporaryError(problem.message, delay=backoff_s(retry))


@kopf.on.event(G, V, P, when=_mine, registry=registry)
def remember_agentworker(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Keep the store's copy current: the sync loop reads it instead of the API server."""
    memo["store"].put_agentworker(type, body)


@kopf.on.event("v1", "pods", labels=OWNED, when=_pod_mine, registry=registry)
async def remember_pod(type: str | None, body: kopf.Body, memo: Any, **_: Any) -> None:
    """Keep the store's copy of every worker pod current (observation reads pods from it),
    and have the sync loop follow a new worker as soon as it has an address."""
    key = memo["store"].put_pod(type, body)
    syncer = memo.get("syncer")
    if key is not None and syncer is not None:
        syncer.on_pods_changed(key)


@kopf.on.event("apps", "v1", "deployments", labels=OWNED, when=_deployment_mine, registry=registry)
async def on_owned_deployment(
    type: str | None,
    body: kopf.Body,
    namespace: str | None,
    logger: Logger,
    memo: Any,
    **_: Any,
) -> None:
    """A change of an owned Deployment (a hand edit, a rollout step): reconcile its owner."""
    memo["store"].put_deployment(type, body)
    owner = _owner_of(body)
    if isinstance(owner, str) and namespace:
        await reconcile(memo, namespace, owner, trigger="deployment", logger=logger)


def _pod_cannot_start(
    body: kopf.Body, labels: Mapping[str, str], namespace: str | None, memo: Any, **_: Any
) -> bool:
    """kopf's filter of `on_failing_pod`: a pod of this shard's that cannot start."""
    return _pod_mine(labels, namespace, memo) and bool(status.failures_from_pods([body]))


@kopf.on.event("v1", "pods", labels=OWNED, when=_pod_cannot_start, registry=registry)
async def on_failing_pod(
    labels: Mapping[str, str], namespace: str | None, logger: Logger, memo: Any, **_: Any
) -> None:
    """A worker pod that cannot start (crash loop, image pull): say so now, not at the resync."""
    owner = labels.get(builders.LABEL_INSTANCE)
    if owner and namespace:
        await reconcile(memo, namespace, owner, trigger="pod", logger=logger)


@dataclass(slots=True, kw_only=True)
class Pending:
    """A reconcile of one AgentWorker waiting for its turn (the lock): the triggers that come
    meanwhile join it instead of queueing more."""

    full: bool
    """Whole (apply every child) when any trigger that joined it asked for that."""
    outcome: asyncio.Future[status.Problem | None]
    """The problem it found (or None), or its exception; cancelled when it did not finish."""


async def reconcile(
    memo: Any, namespace: str, name: str, *, trigger: str, logger: Logger, full: bool = True
) -> status.Problem | None:
    """One reconcile, serialized per AgentWorker. A trigger that comes while one waits for its
    turn joins it, makes it whole if it asks for that, and gets its outcome: a change is never
    left for the resync, and a failure fails every handler that joined."""
    key = (namespace, name)
    pending: dict[store.Key, Pending] = memo["pending"]
    while (waiting := pending.get(key)) is not None:
        waiting.full = waiting.full or full
        await asyncio.wait([waiting.outcome])  # cancelling this waiter leaves the outcome be
        if not waiting.outcome.cancelled():
            return waiting.outcome.result()
        full = waiting.full  # cancelled before it finished: run it again, or join who does
    turn = pending[key] = Pending(full=full, outcome=asyncio.get_running_loop().create_future())
    try:
        await _take_turn(memo, key, turn, trigger=trigger, logger=logger)
    finally:
        if pending.get(key) is turn:  # cancelled while waiting for the lock: next trigger runs
            del pending[key]
        if not turn.outcome.done():  # cancelled: whoever joined runs it again
            turn.outcome.cancel()
    return turn.outcome.result()


async def _take_turn(
    memo: Any, key: store.Key, turn: Pending, *, trigger: str, logger: Logger
) -> None:
    """Wait for the AgentWorker's lock, run the reconcile, count it, and set its outcome."""
    namespace, name = key
    async with memo["locks"].setdefault(key, asyncio.Lock()):
        del memo["pending"][key]  # from here on `full` is read: later triggers wait for a turn
        try:
            with metrics.RECONCILE_DURATION.labels(namespace, name).time():
                problem = await _reconcile(memo, namespace, name, logger, full=turn.full)
        except Exception as error:
            reason = "ApiError" if isinstance(error, kube.KubeError) else type(error).__name__
            metrics.RECONCILE_ERRORS.labels(namespace, name, reason).inc()
            metrics.RECONCILES.labels(namespace, name, trigger, "error").inc()
            turn.outcome.set_exception(error)
            return
    if problem is not None:
        metrics.RECONCILE_ERRORS.labels(namespace, name, problem.reason).inc()
    result = "ok" if problem is None else problem.reason
    metrics.RECONCILES.labels(namespace, name, trigger, result).inc()
    turn.outcome.set_result(problem)


async def _reconcile(
    memo: Any, namespace: str, name: str, logger: Logger, *, full: bool
) -> status.Problem | None:
    """Gather, apply (when `full`: every child, under one field manager), publish the status."""
    client: kube.Kube = memo["kube"]
    syncer: syncs.Syncer = memo["syncer"]
    store_: store.Store = memo["store"]
    # a sync round reads the watch's copies; a change (or a resync) reads the API server
    body = None if full else store_.agentworker((namespace, name))
    if body is None:
        body = await client.get(kube.agentworker_path(namespace, name))
    if body is None or body["metadata"].get("deletionTimestamp"):
        memo["locks"].pop((namespace, name), None)  # gone: forget its lock (held ones finish)
        metrics.forget(namespace, name)  # and its series, should a publish have come late
        return None
    meta, previous = body["metadata"], body.get("status") or {}
    if not await _claimed(client, syncer, body, logger):
        return None  # another installation's: it writes the status
    owner = builders.Owner(name=name, namespace=namespace, uid=meta["uid"])
    fleet = syncer.fleets.get((namespace, name))
    spec, problem = _parse(syncer, body)
    # a light reconcile (a sync round) applies nothing: it must not clear a problem only a
    # whole reconcile can see go
    full = full or _degraded_reason(previous) in FULL_RECONCILE_PROBLEMS
    desired: int | None = None
    held: sizing.Hold | None = None
    if spec is not None and problem is None:
        desired, held = await _replicas(syncer, client, store_, owner, spec, previous)
        if full:
            applied = False
            try:
                token = await syncer.ensure_control_secret(owner)
            except kube.NotOurs as error:
                problem = status.Problem(reason="ControlSecretConflict", message=str(error))
            else:
                injection = syncer.injection((namespace, name), body, spec)
                problem, applied = await _apply_children(
                    client, owner, spec, desired, token, injection
                )
            if fleet is not None and applied:
                fleet.applied_as = sizing.Applied(replicas=desired, spec_replicas=spec.replicas)
            if fleet is not None and problem is None:
                fleet.last_full_reconcile = syncer.clock()
                fleet.applied = desired
    elif isinstance(previous.get("desiredReplicas"), int):
        desired = previous["desiredReplicas"]
    deployment = None if full else store_.deployment((namespace, name))
    if deployment is None:
        deployment = await client.get(kube.path_of("apps/v1", "Deployment", namespace, name))
    pods = store_.pods((namespace, name))
    decision = fleet.decision if fleet is not None else None
    autoscaling = spec is not None and spec.autoscaling.enabled
    scaling = _scaling(decision) if autoscaling and decision is not None else None
    if held is not None:  # off or paused: the condition says so, not a decision
        scaling = status.Scaling(limited=held.limited, reason=held.reason, message=held.message)
    facts = status.Facts(
        generation=int(meta.get("generation") or 0),
        selector=builders.selector_string(owner),
        desired_replicas=desired,
        autoscaling_enabled=autoscaling,
        problem=problem,
        livekit_url=spec.livekit.url if spec is not None else "",
        livekit_error=await memo["livekit"].error(spec.livekit.url) if spec is not None else None,
        deployment=status.facts_from_deployment(deployment),
        failing_pods=status.failures_from_pods(pods),
        credentials_secret=spec.livekit.credentials_secret if spec is not None else "",
        fleet=fleet.summary if fleet is not None else None,
        scaling=scaling,
        last_scale_time=fleet.last_scale_time if fleet is not None else None,
        companion=_companion_facts(syncer, body, spec, fleet),
        pending_dispatches=(
            fleet.pending_dispatches
            if fleet is not None and spec is not None and spec.dispatch_guard.enabled
            else None
        ),
        warm_headroom=(
            fleet.warm_headroom
            if fleet is not None
            and spec is not None
            and spec.autoscaling.enabled
            and spec.autoscaling.headroom.miss_rate is not None
            else None
        ),
    )
    await _publish(client, store_, body, facts, logger)
    return problem


def _companion_facts(
    syncer: syncs.Syncer,
    body: Mapping[str, Any],
    spec: specs.AgentWorkerSpec | None,
    fleet: syncs.Fleet | None,
) -> status.CompanionFacts | None:
    if spec is None:
        return None
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    live = [w for w in (fleet.workers if fleet is not None else ()) if not w.pod.terminating]
    return status.CompanionFacts(
        mode=spec.companion_mode,
        plan=syncer.injection(key, body, spec).plan,
        fallback=syncer.fallback(key, body),
        serving=sum(1 for w in live if w.report is not None and w.report.companion),
        workers=len(live),
    )


async def _claimed(
    client: kube.Kube, syncer: syncs.Syncer, body: Mapping[str, Any], logger: Logger
) -> bool:
    """Whether this installation manages the AgentWorker, claiming it when nobody does. One
    that another installation claimed is left alone, said once in a Warning Event: two would
    each write their own control token into the pod template and roll the fleet in a loop."""
    meta = body["metadata"]
    key = (meta["namespace"], meta["name"])
    match builders.claim(meta.get("annotations") or {}, syncer.operator_id):
        case builders.Claim.OURS:
            syncer.refused_claims.discard(key)
            return True
        case builders.Claim.FREE:
            claim = {builders.OPERATOR_ANNOTATION: syncer.operator_id}
            await client.annotate(kube.agentworker_path(*key), claim)
            return True
        case builders.Claim.THEIRS:
            if key not in syncer.refused_claims:
                syncer.refused_claims.add(key)
                holder = (meta.get("annotations") or {})[builders.OPERATOR_ANNOTATION]
                message = (
                    f"another operator installation ({holder}) manages this AgentWorker; this "
                    f"one ({syncer.operator_id}) leaves it alone. Uninstall one of them, or "
                    f"remove the annotation {builders.OPERATOR_ANNOTATION} to hand it over"
                )
                logger.warning("managed by another operator", extra={"detail": message})
                await client.post_event(
                    body, type="Warning", reason="AnotherOperator", message=message
                )
            return False


async def _apply_children(
    client: kube.Kube,
    owner: builders.Owner,
    spec: specs.AgentWorkerSpec,
    replicas: int,
    control_token: str,
    injection: builders.Injection,
) -> tuple[status.Problem | None, bool]:
    """Server-side apply of every child; a refusal becomes Degraded=ApplyFailed, not silence.
    Also whether the Deployment (the first) was applied, whatever came after it."""
    deployment = builders.build_deployment(
        owner, spec, replicas=replicas, control_token=control_token, injection=injection
    )
    budget = spec.disruption_budget
    manifests = [deployment, builders.build_metrics_service(owner)]
    if budget.enabled:
        manifests.insert(1, builders.build_pod_disruption_budget(owner, budget))
    for applied, manifest in enumerate(manifests):
        try:
            await client.apply(manifest)
        except kube.KubeError as error:
            transient = error.status in (409, 429) or error.status >= 500
            if transient and kube.UNTYPABLE_PATCH not in str(error):
                raise  # transient: kopf retries the handler
            problem = status.Problem(
                reason="ApplyFailed",
                message=f"the API server refused the {manifest['kind']} "
                f"{manifest['metadata']['name']}: {error}",
            )
            return problem, applied > 0
    if not budget.enabled:  # spec.disruptionBudget.enabled turned false: the one made goes
        path = kube.path_of("policy/v1", "PodDisruptionBudget", owner.namespace, owner.name)
        try:
            await client.delete_owned(path, owner.uid)
        except kube.KubeError as error:
            if error.status in (409, 429) or error.status >= 500:
                raise
            problem = status.Problem(
                reason="ApplyFailed",
                message=f"the API server refused to delete the PodDisruptionBudget "
                f"{owner.name} (spec.disruptionBudget.enabled is false): {error}",
            )
            return problem, True
    return None, True


async def _replicas(
    syncer: syncs.Syncer,
    client: kube.Kube,
    store_: store.Store,
    owner: builders.Owner,
    spec: specs.AgentWorkerSpec,
    previous: Mapping[str, Any],
) -> tuple[int, sizing.Hold | None]:
    """The replicas to apply: the autoscaler's (raised to minReplicas at once), or, off or
    paused, `sizing.hold`'s (and the hold, for the status)."""
    key = (owner.namespace, owner.name)
    fleet = syncer.fleets.get(key)
    if sizing.mode(spec.autoscaling) is not sizing.Mode.AUTOSCALED:
        applied = fleet.applied_as if fleet is not None else None
        found = None if applied is not None else await _deployment(client, store_, owner)
        held = syncer.hold(key, spec, found)
        return held.replicas, held
    if fleet is not None and fleet.desired is not None:
        return builders.desired_replicas(spec, recommended=fleet.desired), None
    # before this process's first decision: as the sync loop reads it (one rule)
    found = await _deployment(client, store_, owner)
    return builders.current_replicas(spec, deployment=found, status=previous), None


async def _deployment(
    client: kube.Kube, store_: store.Store, owner: builders.Owner
) -> dict[str, Any] | None:
    found = store_.deployment((owner.namespace, owner.name))
    if found is None:
        found = await client.get(kube.path_of("apps/v1", "Deployment", owner.namespace, owner.name))
    return found


FULL_RECONCILE_PROBLEMS = frozenset({"ApplyFailed", "ControlSecretConflict"})


def _degraded_reason(previous: Mapping[str, Any]) -> str:
    for item in previous.get("conditions") or []:
        if isinstance(item, Mapping) and item.get("type") == status.ConditionType.DEGRADED:
            return str(item.get("reason") or "") if item.get("status") == "True" else ""
    return ""


def _scaling(decision: autoscaler.ScaleDecision) -> status.Scaling:
    if decision.limit is not None:
        return status.Scaling(
            limited=True, reason=decision.limit.reason, message=decision.limit.message
        )
    return status.Scaling(limited=False, reason=decision.reason, message=decision.message)


def _parse(
    syncer: syncs.Syncer, body: Mapping[str, Any]
) -> tuple[specs.AgentWorkerSpec | None, status.Problem | None]:
    try:
        return syncer.parsed(body), None
    except specs.InvalidSpecError as error:
        return None, status.Problem(reason="InvalidSpec", message=str(error))


async def _publish(
    client: kube.Kube,
    store_: store.Store,
    body: Mapping[str, Any],
    facts: status.Facts,
    logger: Logger,
) -> None:
    """Patch the status if it changed, post Events for condition changes, update gauges (the
    conditions' too, on every reconcile, whether the status changed or not)."""
    meta, previous = body["metadata"], body.get("status") or {}
    now = datetime.datetime.now(datetime.UTC)
    desired = status.desired_status(facts, previous, now=now)
    patch = status.status_patch(previous, desired)
    if patch is not None:
        path = kube.agentworker_path(meta["namespace"], meta["name"])
        # the answer is the object as stored now: the next sync round compares with it
        store_.put_agentworker("MODIFIED", await client.patch_status(path, patch))
        logger.info("status updated", extra={"fields": sorted(patch)})
    for event in status.events_for(previous, desired):
        await client.post_event(body, type=event.type, reason=event.reason, message=event.message)
        log = logger.warning if event.type == "Warning" else logger.info
        log("condition changed", extra={"reason": event.reason, "detail": event.message})
    labels = (meta["namespace"], meta["name"])
    metrics.READY_REPLICAS.labels(*labels).set(desired["readyReplicas"])
    metrics.REPLICAS.labels(*labels).set(desired["replicas"])
    if facts.desired_replicas is not None:
        metrics.DESIRED_REPLICAS.labels(*labels).set(facts.desired_replicas)
    metrics.record_conditions(labels, desired["conditions"])
