"""The pod watch against the Deployment's count: a watch that delivers events is alive, however
long the Deployment's status trails it; one that delivers nothing while they disagree for three
sync periods is listed again (`Syncer._watch_behind`, `observation.watch_stale`).

A bench's operator made 1,000 pods and listed them again 15 times: each Deployment's status
trailed the pods its watch had shown (the listing found exactly the watched pods).
"""

from __future__ import annotations

from typing import Any, cast

import pytest

from agentworker_operator import builders, kube
from agentworker_operator import sync as syncs
from agentworker_operator.settings import SyncSettings
from agentworker_operator.store import Key, Store

pytestmark = pytest.mark.timeout(2)  # the unit tier stays fast: 2 s a test at most

OWNER = builders.Owner(name="voice", namespace="calls", uid="uid-1")
KEY: Key = (OWNER.namespace, OWNER.name)
PERIOD_S = 5.0


class Listing:
    """The API server's pod listing (`Kube.list_items`), counted."""

    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods
        self.count = 0

    async def list_items(self, path: str, label_selector: str) -> list[dict[str, Any]]:
        assert path == kube.path_of("v1", "Pod", OWNER.namespace)
        assert label_selector == builders.selector_string(OWNER)
        self.count += 1
        return self.pods


def pod(name: str) -> dict[str, Any]:
    labels = {builders.LABEL_INSTANCE: OWNER.name}
    return {"metadata": {"name": name, "namespace": OWNER.namespace, "labels": labels}}


def deployment(replicas: int) -> dict[str, Any]:
    return {
        "metadata": {"name": OWNER.name, "namespace": OWNER.namespace, "generation": 2},
        "status": {"observedGeneration": 2, "replicas": replicas},
    }


async def never_reconciled(key: Key, trigger: str, full: bool) -> None:
    raise AssertionError("not reconciled here")


def syncer(listing: Listing, clock: list[float]) -> syncs.Syncer:
    made = syncs.Syncer(
        client=cast(kube.Kube, listing),
        store=Store(),
        config=SyncSettings(interval_s=PERIOD_S),
        reconcile=never_reconciled,
        locks={},
        control_key=b"key",
        clock=lambda: clock[0],
    )
    made.fleets[KEY] = syncs.Fleet()
    return made


async def rounds(made: syncs.Syncer, clock: list[float], until_s: float, **events: Any) -> None:
    """A round each second until `until_s`; a pod event at the seconds in `events["at"]`."""
    while clock[0] < until_s:
        clock[0] += 1.0
        if clock[0] in events.get("at", ()):
            made.on_pods_changed(KEY)
        await made._watch_behind(OWNER, made.fleets[KEY])


@pytest.mark.parametrize("events", [False, True], ids=["silent-watch", "watch-with-events"])
async def test_a_disagreement_lists_the_pods_again_only_while_the_watch_is_silent(
    events: bool,
) -> None:
    watched = [pod(f"p{i}") for i in range(3)]
    listing, clock = Listing(watched), [0.0]
    made = syncer(listing, clock)
    store = made._store
    for each in watched:
        store.put_pod("ADDED", each)
    store.put_deployment("MODIFIED", deployment(5))  # its status counts 5; the watch shows 3
    # rounds each second for a minute: with a pod event every 4 s the watch is alive
    at = {float(t) for t in range(4, 61, 4)} if events else set()
    await rounds(made, clock, 60.0, at=at)
    if events:
        assert listing.count == 0
    else:
        # three periods of silence each time: at 16 s, 32 s and 48 s (a listing resets it)
        assert listing.count == 3


async def test_an_agreement_ends_the_disagreement() -> None:
    listing, clock = Listing([]), [0.0]
    made = syncer(listing, clock)
    made._store.put_pod("ADDED", pod("p0"))
    made._store.put_deployment("MODIFIED", deployment(2))
    await rounds(made, clock, 10.0)
    made._store.put_deployment("MODIFIED", deployment(1))  # the status caught up
    await rounds(made, clock, 11.0)
    made._store.put_deployment("MODIFIED", deployment(2))
    await rounds(made, clock, 25.0)  # 14 s of a new disagreement: not yet
    assert listing.count == 0
    await rounds(made, clock, 27.0)
    assert listing.count == 1
