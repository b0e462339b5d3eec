"""A process of one shard handles only that shard's AgentWorkers: kopf's handlers never match the
others (so kopf writes nothing on them: no annotation, no finalizer, no status), the store is
never fed them, and the sync loop neither syncs, follows, claims nor counts them.

kopf's own matching (`registry._changing.prematch`, `_watching.iter_handlers`) is called here
with causes built by kopf's `detect_*_cause`, exactly as its reactor decides: an object no
changing handler prematches is not processed at all (kopf 1.45 `process_resource_causes`).
"""

from __future__ import annotations

import logging
from typing import Any, cast

import kopf
import pytest
from kopf._cogs.structs import bodies, patches, references
from kopf._core.intents import causes
from prometheus_client import REGISTRY

from agentworker_operator import builders, handlers, kube, metrics, sharding, store, watcher
from agentworker_operator import sync as syncs
from agentworker_operator.settings import SyncSettings
from tests.unit.operator.test_spec import MINIMAL

NAMESPACE = "fleets"
OPERATOR_ID = "ops/agentworker-operator-control-key"
SHARDS = 2


def names_of_shard(index: int, count: int = 2) -> list[str]:
    """AgentWorker names in NAMESPACE that fall in shard `index`."""
    candidates = (f"voice-{i}" for i in range(100))
    found = [n for n in candidates if sharding.shard_of(NAMESPACE, n, SHARDS) == index]
    return found[:count]


MINE, THEIRS = names_of_shard(0)[0], names_of_shard(1)[0]
SHARD_0 = sharding.Shard(index=0, count=SHARDS)
AGENTWORKERS = references.Resource(
    group=builders.GROUP, version=builders.VERSION, plural=builders.PLURAL, kind=builders.KIND
)
PODS = references.Resource(group="", version="v1", plural="pods", kind="Pod")
DEPLOYMENTS = references.Resource(group="apps", version="v1", plural="deployments")


def agentworker(name: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{builders.GROUP}/{builders.VERSION}",
        "kind": builders.KIND,
        "metadata": {
            "namespace": NAMESPACE,
            "name": name,
            "uid": f"uid-{name}",
            "generation": 1,
            "annotations": {builders.OPERATOR_ANNOTATION: OPERATOR_ID},
        },
        "spec": dict(MINIMAL),
    }


def pod(owner: str, *, crash_looping: bool = False) -> dict[str, Any]:
    waiting = {"reason": "CrashLoopBackOff", "message": "back-off restarting"}
    statuses = [{"name": "worker", "restartCount": 5, "state": {"waiting": waiting}}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "namespace": NAMESPACE,
            "name": f"{owner}-abc12",
            "labels": {**handlers.OWNED, builders.LABEL_INSTANCE: owner},
        },
        "status": {
            "podIP": "10.0.0.9",
            **({"containerStatuses": statuses} if crash_looping else {}),
        },
    }


def deployment(owner: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "namespace": NAMESPACE,
            "name": owner,
            "labels": dict(handlers.OWNED),
            "ownerReferences": [{"kind": builders.KIND, "name": owner, "controller": True}],
        },
    }


def memo_of(shard: sharding.Shard | None) -> kopf.Memo:
    return kopf.Memo(shard=shard) if shard is not None else kopf.Memo()


def changing_cause(body: dict[str, Any], memo: kopf.Memo) -> causes.ChangingCause:
    raw = cast(bodies.RawBody, body)
    return causes.detect_changing_cause(
        finalizer="kopf.zalando.org/KopfFinalizerMarker",
        raw_event={"type": "ADDED", "object": raw},
        body=bodies.Body(raw),
        logger=logging.getLogger(__name__),
        indices={},
        memo=memo,
        resource=AGENTWORKERS,
        patch=patches.Patch(),
    )


def watched_by(resource: references.Resource, body: dict[str, Any], memo: kopf.Memo) -> list[str]:
    """The names of the event handlers kopf calls for this watch event."""
    raw = cast(bodies.RawBody, body)
    cause = causes.detect_watching_cause(
        raw_event={"type": "MODIFIED", "object": raw},
        body=bodies.Body(raw),
        logger=logging.getLogger(__name__),
        indices={},
        memo=memo,
        resource=resource,
        patch=patches.Patch(),
    )
    return sorted(str(h.id) for h in handlers.registry._watching.iter_handlers(cause))


@pytest.mark.parametrize(
    ("name", "shard", "processed"),
    [
        pytest.param(MINE, SHARD_0, True, id="this-shards"),
        pytest.param(THEIRS, SHARD_0, False, id="another-shards"),
        pytest.param(THEIRS, None, True, id="installation-not-split"),
    ],
)
def test_kopf_processes_only_this_shards_agentworkers(
    name: str, shard: sharding.Shard | None, processed: bool
) -> None:
    """Not processed: no handler runs, and kopf stores no progress, no last-handled
    configuration, adds no finalizer and logs nothing for the object."""
    cause = changing_cause(agentworker(name), memo_of(shard))
    assert handlers.registry._changing.prematch(cause) is processed


@pytest.mark.parametrize(
    ("resource", "body", "expected"),
    [
        pytest.param(AGENTWORKERS, agentworker, ["remember_agentworker"], id="agentworker"),
        pytest.param(PODS, pod, ["remember_pod"], id="pod"),
        pytest.param(
            PODS,
            lambda owner: pod(owner, crash_looping=True),
            ["on_failing_pod", "remember_pod"],
            id="pod-that-cannot-start",
        ),
        pytest.param(DEPLOYMENTS, deployment, ["on_owned_deployment"], id="deployment"),
    ],
)
def test_watch_events_of_another_shard_reach_no_handler(
    resource: references.Resource, body: Any, expected: list[str]
) -> None:
    memo = memo_of(SHARD_0)
    assert watched_by(resource, body(MINE), memo) == expected
    assert watched_by(resource, body(THEIRS), memo) == [], "the store never holds them"
    assert watched_by(resource, body(THEIRS), memo_of(None)) == expected


class FakeKube:
    """The API calls a sync round of a fleet without workers makes: the control Secret."""

    def __init__(self) -> None:
        self.created: list[str] = []

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        self.created.append(manifest["metadata"]["name"])
        return manifest


class FakeWatch:
    """Records which fleets' workers the sync loop follows."""

    def __init__(self) -> None:
        self.followed: list[store.Key] = []

    def follow(self, key: store.Key, ips: Any) -> None:
        self.followed.append(key)

    def forget(self, key: store.Key) -> None:
        pass

    def heard(self, ip: str) -> watcher.Heard | None:
        return None

    async def aclose(self) -> None:
        pass


async def test_the_sync_loop_syncs_follows_and_counts_only_this_shards_fleets() -> None:
    mine, theirs = (NAMESPACE, MINE), (NAMESPACE, THEIRS)
    seen = store.Store()
    for name in (MINE, THEIRS):  # as if the store had been fed both (it is not: see above)
        seen.put_agentworker("ADDED", agentworker(name))
        seen.put_pod("ADDED", pod(name))
    reconciled: list[store.Key] = []

    async def reconcile(key: store.Key, trigger: str, full: bool) -> None:
        reconciled.append(key)

    watch = FakeWatch()
    client = FakeKube()
    syncer = syncs.Syncer(
        client=cast(kube.Kube, client),
        store=seen,
        config=SyncSettings(),
        reconcile=reconcile,
        locks={},
        control_key=b"key",
        operator_id=OPERATOR_ID,
        watch=lambda on_change: watch,
        shard=SHARD_0,
    )
    try:
        syncer.on_pods_changed(theirs)
        syncer.on_worker_change(theirs)
        syncer.on_pods_changed(mine)
        assert watch.followed == [mine]
        seen.replace_pods(mine, [])  # no worker to read: the round makes no request to one
        seen.replace_pods(theirs, [])
        await syncer.sync_all()
        await syncer.sync_all(only=[theirs])  # a round a worker's change would start
        assert reconciled == [mine]
        assert set(syncer.fleets) == {mine}
        owner = builders.Owner(name=MINE, namespace=NAMESPACE, uid=f"uid-{MINE}")
        assert client.created == [builders.control_secret_name(owner)], "its shard's Secret only"
        assert available_workers(MINE) == 0.0
        assert available_workers(THEIRS) is None, "another shard's fleet is not in the metrics"
    finally:
        await syncer.aclose()
        metrics.forget(NAMESPACE, MINE)


def available_workers(name: str) -> float | None:
    """This process's agentworker_workers{state="available"} of an AgentWorker, if exported."""
    labels = {"namespace": NAMESPACE, "name": name, "state": "available"}
    return REGISTRY.get_sample_value("agentworker_workers", labels)
